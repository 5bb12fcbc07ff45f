"""Replay every trace under every strategy, sweeping what decides the outcome.

One replay pass per (trace, era, CPU count) feeds all configurations at once (the engine
reads the trace a single time), and traces replay in parallel processes (:func:`pmap`).
The main era at the recorded CPU count and at the largest CPU count runs for every trace,
since the conclusions take their spread over runs there; the other eras (the main
strategies only) and CPU counts are sensitivity sweeps, run on the first run of each
workload (``full``), which cuts the replays of the study by about two thirds.
Configurations: each strategy with its defaults, way2's
reaper period from 0.5 s to 60 s plus pressure-only, way1 with v4.0's trigger (every
dead cache at css free) beside the RFC's (the cache's last page), and way4 with and
without Way #1's drop-empty. Eras change the SLUB parking rules every strategy runs on;
``--cpus`` replays the same trace as if the host had more CPUs (docs/replay.md). Every
metric is the replay's own (kmemtrace/metrics.py): the fair ones (footprint, stranded,
waste, metadata, dying memcgs, destroy classes) are defined alike for every strategy.
"""

import multiprocessing
import os
import pickle
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from kmemtrace.metrics import compute_metrics, series
from kmemtrace.replay.engine import replay
from kmemtrace.strategies import REGISTRY, select
from kmemtrace.trace.reader import TraceReader

ERAS = ("3.14", "5.15", "5.16", "6.8")
MAIN_ERA = "6.8"  # the SLUB rules of the recording kernel (6.18), which calibration checks
CPUS = (2, 8, 32, 128)
# label -> (strategy, --param values); the first seven are the strategies' defaults.
CONFIGS: dict[str, tuple[str, dict[str, str]]] = {
    **{name: (name, {}) for name in REGISTRY},
    "way2 period=0.5s": ("way2", {"period": "0.5s"}),
    "way2 period=10s": ("way2", {"period": "10s"}),
    "way2 period=60s": ("way2", {"period": "60s"}),
    "way2 pressure-only": ("way2", {"period": "0", "pressure": "on"}),
    "way1 v4.0 trigger": ("way1", {"trigger": "css"}),
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
    variant: str = ""
    rmdir_s: list[float] = field(default_factory=list)
    load: str = ""


@dataclass
class Timeline:
    """Time series of one trace at the main era, for the plots."""

    group: str
    t_s: np.ndarray
    by_label: dict[str, dict[str, np.ndarray]]


def _selection(labels):
    return [select(*CONFIGS[label])[0] for label in labels]


def _row(spec: TraceSpec, label: str, run, era: str, cpus: int, span_s: float) -> dict:
    m = compute_metrics(run).to_dict()
    m.update(group=spec.group, source=spec.source, run=spec.run, variant=spec.variant,
             label=label, era=era, cpus=cpus, trace_s=span_s)
    return m


def pmap(fn, items: list, workers: int | None = None) -> list:
    """``[fn(x) for x in items]`` in ``workers`` processes (``KMT_WORKERS``, default the
    usable CPUs), in order. Spawned, not forked: the replay engine runs threads."""
    items = list(items)
    workers = workers or int(os.environ.get("KMT_WORKERS", 0)) or len(os.sched_getaffinity(0))
    if workers <= 1 or len(items) <= 1:
        return [fn(x) for x in items]
    ctx = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(min(workers, len(items)), mp_context=ctx) as pool:
        return list(pool.map(fn, items))


def replay_trace(spec: TraceSpec, eras=ERAS, cpus=CPUS, full: bool = True
                 ) -> tuple[list[dict], Timeline]:
    """Every configuration in the main era at the recorded CPU count; with ``full``, the
    main strategies in the other ``eras`` and at every ``cpus``, else at the largest only:
    metric rows + the main-era timeline."""
    trace = TraceReader.open(spec.path)
    span_s = (trace.end_ns - trace.start_ns) / 1e9
    recorded = int(trace.meta.get("ncpus") or 1)
    rows: list[dict] = []
    timeline = None
    for era in eras if full else [e for e in eras if e == MAIN_ERA]:
        labels = list(CONFIGS) if era == MAIN_ERA else list(MAIN_LABELS)
        result = replay(trace, _selection(labels), era=era)
        for label, run in zip(labels, result.runs, strict=True):
            rows.append(_row(spec, label, run, era, recorded, span_s))
        if era == MAIN_ERA:
            t = (result.sample_times_ns - result.sample_times_ns[0]) / 1e9
            timeline = Timeline(spec.group, t, {lb: series(run) for lb, run in
                                                zip(labels, result.runs, strict=True)})
    for n in cpus if full else [max(cpus)]:
        if n == recorded:
            continue
        result = replay(trace, _selection(MAIN_LABELS), era=MAIN_ERA, cpus=n)
        for label, run in zip(MAIN_LABELS, result.runs, strict=True):
            rows.append(_row(spec, label, run, MAIN_ERA, n, span_s))
    return rows, timeline


def run_sweep(specs: list[TraceSpec], eras=ERAS, cpus=CPUS
              ) -> tuple[pd.DataFrame, dict[str, Timeline]]:
    """Every trace: one row per (trace, era, CPU count, configuration).

    Keeps the first run's timeline of each group for the plots.
    """
    rows: list[dict] = []
    timelines: dict[str, Timeline] = {}
    jobs = [(spec, eras, cpus, spec.run == 0) for spec in specs]
    for spec, (trace_rows, timeline) in zip(specs, pmap(_replay_job, jobs), strict=True):
        rows += trace_rows
        if timeline is not None:
            timelines.setdefault(spec.group, timeline)
    return pd.DataFrame(rows), timelines


def _replay_job(job: tuple) -> tuple[list[dict], Timeline]:
    spec, eras, cpus, full = job
    return cached("sweep", spec, (tuple(eras), tuple(cpus), full),
                  lambda: replay_trace(spec, eras, cpus, full))


CACHE_ENV = "KMT_WHICH_WAY_CACHE"  # set by ``--cache``: spawned workers inherit it


def cached(kind: str, spec: TraceSpec, key, compute):
    """``compute()``, saved beside the trace as ``<trace>.<kind>.pkl`` when caching is on
    (``--cache``), and loaded from there when it was saved under the same ``key``: the
    replays of a study take most of its time, and a report change, an interrupted
    analysis or traces analysed while later ones record need not redo them. Only valid
    for an unchanged kmemtrace, which is why it is opt-in."""
    if not os.environ.get(CACHE_ENV):
        return compute()
    path = spec.path.with_name(f"{spec.path.name}.{kind}.pkl")
    if path.exists():
        saved_key, value = pickle.loads(path.read_bytes())
        if saved_key == key:
            return value
    value = compute()
    path.write_bytes(pickle.dumps((key, value)))
    return value
