"""The one recipe all workloads share: plan -> population sized to --events -> events."""

import numpy as np

from kmemtrace.errors import UsageError
from kmemtrace.synth.base import Synthesis
from kmemtrace.synth.events import OBJECTS_PER_WINDOW, TRACE_BASE_NS, stream_events
from kmemtrace.synth.population import (
    Lifetimes,
    MemcgPlan,
    draw_population,
    draw_window,
)

PILOT_OBJECTS = 1 << 16  # estimates events per object to well under 1 %


def compose(
    rng: np.random.Generator,
    n_events: int,
    params: dict,
    plan: MemcgPlan,
    cache_p: np.ndarray,
    life: Lifetimes,
) -> Synthesis:
    """Size the object population so that the whole trace has about ``n_events`` events.

    Memcg, pressure and pre-existing-free events are counted first; objects fill the rest
    (releases are estimated as half the offlines, which keeps the total within a few %).
    A pilot draw tells how many events an object gives (its ALLOC, and its FREE if that
    falls inside the trace); the events themselves are drawn window by window when the
    stream is read, from the generator's state here, so every read is the same trace.
    """
    duration = params["duration"]
    n_offline = int(np.sum(plan.offline_t < duration))
    overhead = (plan.n + n_offline + n_offline // 2 + params["preexisting_frees"]
                + round(params["pressure_rate"] * duration / 1e9))
    target = n_events - overhead
    if target < max(1, n_events // 2):
        raise UsageError(
            f"--events {n_events} is too few for {plan.n} memcgs: their own events need "
            f"about {overhead}; raise --events or lower n_memcgs"
        )
    ncpus, remote = params["ncpus"], params["remote_free"]
    pilot = draw_population(rng, plan, min(PILOT_OBJECTS, target), cache_p, life, ncpus,
                            remote)
    per_object = float(np.mean(1 + (pilot.free_t < duration)))
    n_objects = max(1, round(target / per_object))
    state = rng.bit_generator.state

    def stream(objects_per_window: int = OBJECTS_PER_WINDOW):
        bits = type(rng.bit_generator)()
        bits.state = state
        g = np.random.Generator(bits)
        return stream_events(
            g, plan, n_objects,
            lambda n, mass, t0, t1: draw_window(g, plan, n, mass, t0, t1, cache_p, life,
                                                ncpus, remote),
            duration_ns=duration, ncpus=ncpus, pressure_rate=params["pressure_rate"],
            preexisting_frees=params["preexisting_frees"],
            objects_per_window=objects_per_window)

    return Synthesis(stream=stream, memcgs=plan.to_meta(), start_ns=TRACE_BASE_NS,
                     end_ns=TRACE_BASE_NS + duration, ncpus=ncpus,
                     approx_events=n_events)
