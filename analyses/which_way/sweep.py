"""Replay every trace under every strategy, sweeping what decides the outcome.

One replay pass per (trace, era) feeds all configurations at once (the engine reads the
trace a single time). Configurations: each strategy with its defaults, way2's reaper
period from 0.5 s to 60 s plus pressure-only, and way4 with and without Way #1's
drop-empty. Eras change the SLUB parking rules every strategy runs on.
"""

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from kmemtrace.metrics import compute_metrics, series
from kmemtrace.model.state import C_NINST, I_MEMCG, I_T_DESTROY, I_T_OFFLINE
from kmemtrace.replay.engine import replay
from kmemtrace.strategies import REGISTRY, select
from kmemtrace.trace.reader import TraceReader

ERAS = ("3.14", "5.15", "5.16", "6.8")
MAIN_ERA = "5.16"
# label -> (strategy, --param values); the first six are the strategies' defaults.
CONFIGS: dict[str, tuple[str, dict[str, str]]] = {
    **{name: (name, {}) for name in REGISTRY},
    "way2 period=0.5s": ("way2", {"period": "0.5s"}),
    "way2 period=10s": ("way2", {"period": "10s"}),
    "way2 period=60s": ("way2", {"period": "60s"}),
    "way2 pressure-only": ("way2", {"period": "0", "pressure": "on"}),
    "way4 drop_empty": ("way4", {"drop_empty": "on"}),
}
MAIN_LABELS = tuple(REGISTRY)


@dataclass
class TraceSpec:
    """A trace in the study: its workload group, where it came from, and the run number."""

    group: str
    source: str  # real | synthetic | fixture
    run: int
    path: Path
    rmdir_s: list[float] = field(default_factory=list)


@dataclass
class Timeline:
    """Time series of one trace at the main era, for the plots."""

    group: str
    t_s: np.ndarray
    by_label: dict[str, dict[str, np.ndarray]]


def _selection():
    return [select(name, params)[0] for name, params in CONFIGS.values()]


def dying_memcgs(run, t_ns: np.ndarray, end_ns: int) -> tuple[np.ndarray, float]:
    """Offline memcgs that still have an undestroyed cache instance, over ``t_ns``.

    Before v5.3 every slab page held its memcg (per-page css refs since v3.19), so a dead
    cache that keeps pages keeps its memcg dying: the count Roman Gushchin's v5.3 series
    measured. Returns the count at each sample time and the memcg-seconds integral.
    """
    inst = run.model.inst[:, :int(run.model.ctr[C_NINST])]
    dead = (inst[I_MEMCG] != 0) & (inst[I_T_OFFLINE] >= 0)
    memcg = inst[I_MEMCG][dead]
    if not len(memcg):
        return np.zeros(len(t_ns), dtype=np.int64), 0.0
    t_off = inst[I_T_OFFLINE][dead].astype(float)
    t_gone = np.where(inst[I_T_DESTROY][dead] >= 0, inst[I_T_DESTROY][dead], np.inf)
    frame = pd.DataFrame({"m": memcg, "off": t_off, "gone": t_gone}).groupby("m")
    off, gone = frame["off"].min().to_numpy(), frame["gone"].max().to_numpy()
    counts = ((off[None, :] <= t_ns[:, None]) & (gone[None, :] > t_ns[:, None])).sum(axis=1)
    held = np.clip(np.minimum(gone, end_ns) - off, 0, None).sum() / 1e9
    return counts, float(held)


def _row(spec: TraceSpec, label: str, run, t_ns: np.ndarray, end_ns: int) -> dict:
    m = compute_metrics(run).to_dict()
    s = series(run)
    dying, dying_s = dying_memcgs(run, t_ns, end_ns)
    m.update(group=spec.group, source=spec.source, run=spec.run, label=label,
             trace_s=(end_ns - t_ns[0]) / 1e9,
             slab_pages_mean=float(s["total_pages"].mean()),
             dying_memcgs_peak=int(dying.max()) if len(dying) else 0,
             dying_memcgs_end=int(dying[-1]) if len(dying) else 0,
             dying_memcg_seconds=dying_s)
    return m


def replay_trace(spec: TraceSpec, eras=ERAS) -> tuple[list[dict], Timeline]:
    """All configurations of one trace in every era: metric rows + the main-era timeline."""
    trace = TraceReader.open(spec.path)
    rows: list[dict] = []
    timeline = None
    for era in eras:
        result = replay(trace, _selection(), era=era)
        t_ns = result.sample_times_ns
        for label, run in zip(CONFIGS, result.runs, strict=True):
            rows.append(_row(spec, label, run, t_ns, trace.end_ns))
        if era == MAIN_ERA or timeline is None:
            by_label = {}
            for label, run in zip(CONFIGS, result.runs, strict=True):
                by_label[label] = series(run) | {"dying_memcgs": dying_memcgs(
                    run, t_ns, trace.end_ns)[0]}
            timeline = Timeline(spec.group, (t_ns - t_ns[0]) / 1e9, by_label)
    return rows, timeline


def run_sweep(specs: list[TraceSpec], eras=ERAS) -> tuple[pd.DataFrame, dict[str, Timeline]]:
    """Every trace, every era: one row per (trace, era, configuration).

    Keeps the first run's timeline of each group for the plots.
    """
    rows: list[dict] = []
    timelines: dict[str, Timeline] = {}
    for spec in specs:
        trace_rows, timeline = replay_trace(spec, eras)
        rows += trace_rows
        timelines.setdefault(spec.group, timeline)
    return pd.DataFrame(rows), timelines


def spread(df: pd.DataFrame, metric: str, by=("group", "era", "label")) -> pd.DataFrame:
    """Median, min and max of ``metric`` across runs."""
    g = df.groupby(list(by), sort=False)[metric]
    return pd.DataFrame({"median": g.median(), "min": g.min(), "max": g.max(), "n": g.size()})
