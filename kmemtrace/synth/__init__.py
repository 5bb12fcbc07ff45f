"""Synthetic workloads: deterministic, vectorised generators of kmemtrace traces.

``WORKLOADS`` is the registry (name -> :class:`~kmemtrace.synth.base.Workload`);
:func:`synthesize` sizes one (its events stream, batch by batch, when read) and
:func:`write_synthesis` stores it as a trace, a batch at a time: memory holds one batch
and the objects alive across it, not the trace.
"""

from collections.abc import Callable
from pathlib import Path

import numpy as np

from kmemtrace.errors import UsageError
from kmemtrace.params import resolve_params
from kmemtrace.synth import container_churn, long_tail, steady
from kmemtrace.synth.base import Synthesis, Workload
from kmemtrace.synth.geometry import CACHES
from kmemtrace.trace.meta import new_meta
from kmemtrace.trace.writer import TraceWriter

WORKLOADS: dict[str, Workload] = {
    w.name: w for w in (container_churn.WORKLOAD, long_tail.WORKLOAD, steady.WORKLOAD)
}


def get_workload(name: str) -> Workload:
    """The registered workload, or a UsageError listing the valid names."""
    try:
        return WORKLOADS[name]
    except KeyError:
        raise UsageError(
            f"unknown workload {name!r} (workloads: {', '.join(WORKLOADS)})"
        ) from None


def synthesize(name: str, *, seed: int, n_events: int, raw_params: dict[str, str]):
    """Generate workload ``name`` in memory; returns ``(Synthesis, resolved params)``."""
    workload = get_workload(name)
    params = resolve_params(f"workload {name}", workload.params, raw_params)
    if n_events < 1:
        raise UsageError(f"--events {n_events}: must be at least 1")
    return workload.generate(np.random.default_rng(seed), n_events, params), params


def write_synthesis(
    path: str | Path,
    synthesis: Synthesis,
    *,
    workload: str,
    seed: int,
    params: dict,
    command: list[str] | None = None,
    overwrite: bool = False,
    on_rows: Callable[[int], None] | None = None,
) -> TraceWriter:
    """Write ``synthesis`` as a sealed trace; ``on_rows(n)`` reports progress per chunk."""
    meta = new_meta("synth", command=command, ncpus=synthesis.ncpus)
    meta["kernel"] = {
        "release": "synthetic",
        "allocator": "SLUB",
        "geometry_from": "/sys/kernel/slab of Linux 6.18.44 (2026-11-25), see synth/geometry.py",
    }
    meta["caches"] = [c.to_meta(i) for i, c in enumerate(CACHES)]
    meta["memcgs"] = synthesis.memcgs
    meta["clock"] = {"start_ns": synthesis.start_ns, "end_ns": synthesis.end_ns}
    meta["workload"] = {"name": workload, "seed": seed, "params": params}
    with TraceWriter(path, meta, overwrite=overwrite) as writer:
        for batch in synthesis.stream():
            writer.append(batch)
            # Stamps are bumped to be unique: a crowd at the very end may pass the end.
            meta["clock"]["end_ns"] = max(meta["clock"]["end_ns"], int(batch["ts_ns"][-1]))
            if on_rows:
                on_rows(len(batch["ts_ns"]))
    return writer
