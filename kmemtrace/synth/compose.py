"""The one recipe all workloads share: plan -> population sized to --events -> events."""

import numpy as np

from kmemtrace.errors import UsageError
from kmemtrace.synth.base import Synthesis
from kmemtrace.synth.events import assemble
from kmemtrace.synth.population import Lifetimes, MemcgPlan, draw_population, fit_population


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

    def draw(n: int):
        return draw_population(rng, plan, n, cache_p, life, params["ncpus"],
                               params["remote_free"])

    pop = fit_population(target, float(duration), draw)
    return assemble(rng, plan, pop, duration_ns=duration, ncpus=params["ncpus"],
                    pressure_rate=params["pressure_rate"],
                    preexisting_frees=params["preexisting_frees"])
