"""The fleet view: per strategy, how the fair metrics spread over the hosts.

A fleet's question is not "which strategy is best on this trace" but "which is best for
our hosts, and where does each one hurt". So for each fair metric (defined alike for every
strategy, docs/replay.md) and strategy: the distribution of the per-host values, the
hosts where it is worst, and on how many hosts each strategy is the best one (ties count
for every tied strategy; a host where all strategies agree is nobody's win).
"""

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from kmemtrace.fleet.results import Manifest, ResultStore, TraceOutcome
from kmemtrace.metrics import field_info

# The time averages: a peak is one instant, the average is what a host carries. The
# latency covers only caches destroyed within the trace, so the caches never destroyed
# stand beside it: without them a strategy that never destroys would look fast.
FAIR_METRICS = ("footprint_bytes_avg", "stranded_bytes_avg", "metadata_bytes_avg",
                "dying_memcgs_avg", "destroy_latency_p99_s", "dead_caches_never_destroyed")
SHORT_NAMES = {"footprint_bytes_avg": "footprint", "stranded_bytes_avg": "stranded",
               "metadata_bytes_avg": "metadata", "dying_memcgs_avg": "dying",
               "destroy_latency_p99_s": "latency", "dead_caches_never_destroyed": "never"}
QUANTILES = (0.0, 0.25, 0.5, 0.75, 0.9, 1.0)
WORST_HOSTS = 3


@dataclass(frozen=True)
class Spread:
    """One metric under one strategy over the hosts where it applies."""

    metric: str
    strategy: str
    hosts: int  # hosts with a value (destroy latency: only where caches were destroyed)
    quantiles: tuple[float, ...]  # at QUANTILES
    values: np.ndarray  # per host, for the plots
    worst: tuple[tuple[str, float], ...]  # (host, value), highest first
    wins: int

    @property
    def median(self) -> float | None:
        return self.quantiles[2] if self.hosts else None


@dataclass(frozen=True)
class FleetSummary:
    """Everything ``kmemtrace fleet report`` shows, from the table alone."""

    directory: str
    manifest: Manifest
    strategies: tuple[str, ...]
    hosts: tuple[str, ...]  # one per trace: its directory name (and meta's host if apart)
    spreads: dict[str, tuple[Spread, ...]]  # metric -> one per strategy, in strategy order
    table: pd.DataFrame  # metric rows, wide: index host, columns (metric, strategy)

    @property
    def failed(self) -> list[TraceOutcome]:
        return self.manifest.failed

    def unit(self, metric: str) -> str:
        return field_info(metric)["unit"]


def host_label(trace: str, host: str, hosts_per_name: int) -> str:
    """The trace's name; with its recording host when traces from several hosts share it."""
    return f"{host}:{trace}" if hosts_per_name > 1 and host else trace


def summarise(directory: Path) -> FleetSummary:
    store = ResultStore(directory)
    manifest = store.manifest()
    rows = store.table(manifest)
    metrics = rows[rows["kind"] == "metric"].copy()
    strategies = tuple(s.strategy for s in manifest.specs)
    per_name = metrics.groupby("trace")["host"].nunique()
    metrics["label"] = [host_label(t, h, int(per_name.get(t, 1)))
                        for t, h in zip(metrics["trace"], metrics["host"], strict=True)]
    wide = metrics.pivot_table(index="label", columns=["metric", "strategy"], values="value",
                               aggfunc="first", dropna=False)
    hosts = tuple(wide.index)
    spreads = {}
    for m in FAIR_METRICS:
        wins = _wins(wide, m, strategies)
        spreads[m] = tuple(_spread(wide, m, s, wins[s]) for s in strategies)
    return FleetSummary(directory=str(directory), manifest=manifest, strategies=strategies,
                        hosts=hosts, spreads=spreads, table=wide)


def _column(wide: pd.DataFrame, metric: str, strategy: str) -> pd.Series:
    if (metric, strategy) in wide.columns:
        return wide[(metric, strategy)]
    return pd.Series(np.nan, index=wide.index)


def _spread(wide: pd.DataFrame, metric: str, strategy: str, wins: int) -> Spread:
    col = _column(wide, metric, strategy)
    present = col.dropna()
    values = present.to_numpy(dtype=np.float64)
    quantiles = tuple(float(np.quantile(values, q, method="inverted_cdf")) for q in QUANTILES) \
        if len(values) else ()
    # A host at zero is at the floor, not among the worst.
    worst = present[present > 0].sort_values(ascending=False, kind="stable").head(WORST_HOSTS)
    return Spread(metric=metric, strategy=strategy, hosts=len(values), quantiles=quantiles,
                  values=values, worst=tuple((str(h), float(v)) for h, v in worst.items()),
                  wins=wins)


def _wins(wide: pd.DataFrame, metric: str, strategies: tuple[str, ...]) -> dict[str, int]:
    """Per strategy, hosts where it has the lowest value and not every strategy does."""
    frame = pd.concat({s: _column(wide, metric, s) for s in strategies}, axis=1)
    low = frame.min(axis=1)
    best = frame.eq(low, axis=0)
    decided = (frame.notna().sum(axis=1) >= 2) & (frame.nunique(axis=1) >= 2)
    return {s: int((best[s] & decided).sum()) for s in strategies}
