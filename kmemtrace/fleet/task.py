"""What a Dask worker runs: one strategy over one trace, reduced to rows of the table.

The replay is :func:`kmemtrace.replay.engine.replay`, as ``kmemtrace replay`` runs it,
and the metrics are :func:`kmemtrace.metrics.compute_metrics` of the same run, so a fleet
row and a single replay cannot disagree. A worker process imports the engine once and
keeps numba's compiled loop loaded (from the on-disk cache, see ``kmemtrace.model``)
for every task it runs after: that, not the scheduling, is what a fleet saves over a loop
of ``kmemtrace replay`` processes, each of which pays both again.
"""

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from kmemtrace.errors import KmemtraceError
from kmemtrace.fleet.results import SCHEMA, RunSpec
from kmemtrace.metrics import compute_metrics, field_info, metric_fields, series
from kmemtrace.replay.engine import replay
from kmemtrace.strategies import get_strategy
from kmemtrace.trace.reader import open_trace

# A series' unit, from the last word of its name (kmemtrace.model.state.SERIES_NAMES).
_SERIES_UNITS = {"pages": "pages", "bytes": "B", "caches": "caches", "objects": "objects",
                 "memcgs": "memcgs"}


@dataclass(frozen=True)
class TaskFailure:
    """A trace ``kmemtrace replay`` would refuse with this one-line reason.

    Returned, not raised: an expected failure (a damaged part) is a result of the fleet
    run, not a crash for the worker to log with a traceback. Anything else raises."""

    reason: str


def replay_task(path: str, digest: str, spec: RunSpec) -> pd.DataFrame | TaskFailure:
    """Replay ``path`` under ``spec``; the rows of :data:`~kmemtrace.fleet.results.SCHEMA`."""
    try:
        reader = open_trace(path)
        result = replay(reader, [(get_strategy(spec.strategy), spec.params)], era=spec.era,
                        samples=spec.samples, slab_samples=False)
    except KmemtraceError as exc:
        return TaskFailure(str(exc))
    run = result.runs[0]
    metrics = compute_metrics(run).to_dict()
    names = metric_fields()
    t_s = (result.sample_times_ns - reader.start_ns) / 1e9
    curves = series(run)
    n_series = len(curves) * len(t_s)
    n = len(names) + n_series
    values = [np.nan if metrics[m] is None else float(metrics[m]) for m in names]
    columns = {
        "digest": digest, "trace": Path(path).name, "path": str(path),
        "host": str(reader.meta.get("host") or ""), "strategy": spec.strategy,
        "params": json.dumps(metrics["params"], sort_keys=True), "era": spec.era,
        "run_key": spec.key,
        "kind": ["metric"] * len(names) + ["series"] * n_series,
        "metric": names + [name for name in curves for _ in t_s],
        "unit": [field_info(m)["unit"] for m in names]
                + [_SERIES_UNITS[name.rsplit("_", 1)[1]] for name in curves for _ in t_s],
        "t_s": np.concatenate([np.full(len(names), np.nan), np.tile(t_s, len(curves))]),
        "value": np.concatenate([np.array(values, dtype=np.float64),
                                 *(np.asarray(c, dtype=np.float64) for c in curves.values())]),
    }
    frame = pd.DataFrame({k: (v if not isinstance(v, str) else [v] * n)
                          for k, v in columns.items()})
    return frame[SCHEMA.names]
