"""What every report is made from: trace facts plus one metrics object per strategy.

Built once from a finished :class:`~kmemtrace.replay.engine.Replay` so that the three
outputs cannot disagree; afterwards nothing reads the trace again.
"""

from dataclasses import dataclass, field

import numpy as np

from kmemtrace.metrics import StrategyMetrics, compute_metrics, destroy_latencies_s, series


@dataclass(frozen=True)
class TraceFacts:
    """What the trace says about itself (meta.json) and what the replay counted."""

    path: str
    source: str
    kernel: dict
    events: int
    start_ns: int
    end_ns: int
    caches: int
    memcgs: int
    lost: dict
    workload: dict | None = None  # synthetic traces: generator name, seed, params
    attach_plan: tuple[dict, ...] = ()  # recordings: which probes were real, which missing
    complete: bool = True  # false: the recording was killed or its disk filled
    write_error: str | None = None

    @property
    def span_s(self) -> float:
        return (self.end_ns - self.start_ns) / 1e9

    @property
    def lost_total(self) -> int:
        return int(self.lost.get("total", 0))

    @property
    def kernel_release(self) -> str:
        return str(self.kernel.get("release") or "unknown")

    @property
    def is_emulated_vm(self) -> bool:
        # Recorded under TCG or similar: timestamps run at emulation speed.
        return bool(self.kernel.get("emulated_vm"))

    @property
    def source_text(self) -> str:
        """``synth: container-churn seed=1`` for synthetic traces, else the source."""
        if not self.workload:
            return self.source
        return f"{self.source}: {self.workload.get('name')} seed={self.workload.get('seed')}"


@dataclass(frozen=True)
class Comparison:
    """One trace replayed under several strategies, reduced to metrics and series."""

    facts: TraceFacts
    era: str
    metrics: tuple[StrategyMetrics, ...]
    t_s: np.ndarray
    series: dict[str, dict[str, np.ndarray]]
    # Per strategy, offline -> destroy of every dead cache in s (inf: never destroyed), and
    # the memcg offline moments in s since the trace's start: what the plots draw.
    latencies_s: dict[str, np.ndarray] = field(default_factory=dict)
    offline_s: np.ndarray = field(default_factory=lambda: np.zeros(0))

    @classmethod
    def from_replay(cls, result) -> "Comparison":
        """Reduce a :class:`~kmemtrace.replay.engine.Replay` (its runs and meta only)."""
        trace = result.trace
        meta = trace.meta
        facts = TraceFacts(
            path=str(trace.path), source=str(meta.get("source") or "unknown"),
            kernel=dict(meta.get("kernel") or {}), events=int(result.events),
            start_ns=trace.start_ns, end_ns=trace.end_ns, caches=len(trace.caches),
            # memcg_ids[0] is the root, which every trace has.
            memcgs=len(result.memcg_ids) - 1,
            lost=dict(meta.get("lost") or {"total": 0, "by_reason": {}}),
            workload=meta.get("workload"),
            attach_plan=tuple(meta.get("attach_plan") or ()),
            complete=bool(meta.get("complete", True)), write_error=meta.get("write_error"),
        )
        return cls(
            facts=facts,
            era=result.runs[0].era.name,
            metrics=tuple(compute_metrics(run) for run in result.runs),
            t_s=(result.sample_times_ns - trace.start_ns) / 1e9,
            series={run.strategy.name: series(run) for run in result.runs},
            latencies_s={run.strategy.name: destroy_latencies_s(run) for run in result.runs},
            offline_s=(result.offline_ns - trace.start_ns) / 1e9,
        )
