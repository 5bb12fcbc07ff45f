"""The interface every synthetic workload implements, and the parameters they share.

A workload is a name, a one-line summary, its :class:`~kmemtrace.params.ParamSpec` tuple
and a ``generate(rng, n_events, params)`` function returning a :class:`Synthesis`, whose
events stream in batches so that a 100 M-event trace never sits in memory. The
shared machinery (memcg plans, object populations, event assembly) lives in
:mod:`kmemtrace.synth.population` and :mod:`kmemtrace.synth.events`, so a workload module
only says what is particular about it.
"""

from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np

from kmemtrace.errors import UsageError
from kmemtrace.params import ParamSpec
from kmemtrace.trace.schema import empty_columns

NS_PER_S = 1_000_000_000


@dataclass
class Synthesis:
    """A generated trace: its events as a stream of sorted batches, plus what meta.json
    needs. The stream is drawn afresh on every pass, the same every time."""

    # Every schema column, seq = row index; ``stream(objects_per_window=n)`` draws n
    # objects at a time (another window size draws another trace of the same workload).
    stream: Callable[..., Iterator[dict[str, np.ndarray]]]
    memcgs: list[dict]  # meta["memcgs"]: {id, parent, path, level}
    start_ns: int
    end_ns: int  # the trace's nominal end; a last event after it moves it (write_synthesis)
    ncpus: int
    approx_events: int  # what the population was sized to give

    @property
    def columns(self) -> dict[str, np.ndarray]:
        """The whole trace in memory (small traces and tests): the batches concatenated."""
        batches = list(self.stream())
        if not batches:
            return empty_columns(0)
        return {name: np.concatenate([b[name] for b in batches]) for name in batches[0]}


@dataclass(frozen=True)
class Workload:
    """A registered workload; ``generate`` must be vectorised and deterministic per rng."""

    name: str
    summary: str
    params: tuple[ParamSpec, ...]
    generate: Callable[[np.random.Generator, int, dict], Synthesis]


# Parameters every workload accepts (a workload's own ones come first in its tuple).
COMMON_PARAMS: tuple[ParamSpec, ...] = (
    ParamSpec("duration", "duration", 60 * NS_PER_S, "trace length"),
    ParamSpec("ncpus", "int", 4, "CPUs events are spread over"),
    ParamSpec("remote_free", "float", 0.3,
              "fraction of frees on another CPU than the alloc (RCU, softirq)"),
    ParamSpec("young_lifetime", "duration", 2_000_000,
              "mean lifetime of short-lived objects (exponential)"),
    ParamSpec("pressure_rate", "float", 0.05, "PRESSURE events per second (Poisson)"),
    ParamSpec("preexisting_frees", "int", 8,
              "FREEs of objects allocated before the trace began"),
)


def check_range(params: dict, name: str, low: float, high: float | None = None) -> None:
    """Reject a parameter outside [low, high] with a UsageError naming it."""
    value = params[name]
    if value < low or (high is not None and value > high):
        bound = f"between {low} and {high}" if high is not None else f"at least {low}"
        raise UsageError(f"--param {name}={value}: must be {bound}")


def check_common(params: dict) -> None:
    """Validate :data:`COMMON_PARAMS` once for every workload."""
    check_range(params, "duration", 1_000_000)
    check_range(params, "ncpus", 1, 4096)
    check_range(params, "remote_free", 0.0, 1.0)
    check_range(params, "young_lifetime", 1)
    check_range(params, "pressure_rate", 0.0)
    check_range(params, "preexisting_frees", 0)
