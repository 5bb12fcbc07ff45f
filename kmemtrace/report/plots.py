"""PNG charts of a :class:`Comparison`: what a kernel developer pastes into a post.

Every chart is built from the Comparison alone (series, latencies, metrics). Figures are
made with matplotlib's object API on an Agg canvas, not pyplot: no display, no global
figure registry to leak into, nothing to close. A strategy keeps one colour in every
chart, taken from its place in the registry, so a reader learns the legend once.
"""

import io
import math
from itertools import pairwise
from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from kmemtrace.metrics import metric_fields
from kmemtrace.report.comparison import Comparison
from kmemtrace.report.format import NEVER, unit
from kmemtrace.strategies import REGISTRY

DPI = 110
_WIDE = (9, 4.5)
# The percentage has no common scale with the counts beside it.
COST_METRICS = tuple(n for n in metric_fields("cost") if not n.endswith("_pct"))
_MIB = 1 << 20


def _figure(figsize: tuple[float, float], rows: int = 1) -> tuple[Figure, object]:
    fig = Figure(figsize=figsize)
    FigureCanvasAgg(fig)
    return fig, fig.subplots(rows, 1, sharex=True)


def colour(strategy: str) -> str:
    """The strategy's colour in every chart: its index in the registry, in matplotlib's cycle."""
    names = list(REGISTRY)
    return f"C{names.index(strategy) % 10}" if strategy in names else "grey"


def fair_figure(cmp: Comparison) -> Figure:
    """The metrics defined alike for every strategy, over trace time, one panel each."""
    panels = (("footprint (MiB)", lambda s: s["total_pages"] * 4096 / _MIB),
              ("stranded (MiB)", lambda s: s["stranded_bytes"] / _MIB),
              ("metadata kept alive (MiB)", lambda s: s["metadata_bytes"] / _MIB),
              ("dying memcgs", lambda s: s["dying_memcgs"]))
    fig, axes = _figure((9, 9), rows=len(panels))
    for ax, (label, value) in zip(axes, panels, strict=True):
        for name, s in cmp.series.items():
            ax.plot(cmp.t_s, value(s), color=colour(name), label=name)
        ax.set(ylabel=label)
        ax.set_ylim(bottom=0)
        ax.grid(alpha=0.3)
    axes[0].set_title("Slab footprint, stranded memory, metadata and dying memcgs")
    axes[0].legend(fontsize="small", ncol=4)
    axes[-1].set(xlabel="trace time (s)")
    fig.tight_layout()
    return fig


def pinned_figure(cmp: Comparison) -> Figure:
    """Pinned pages of dead memcgs over trace time; empty-slab share dashed; offlines marked."""
    fig, ax = _figure(_WIDE)
    for name, s in cmp.series.items():
        ax.plot(cmp.t_s, s["dead_live_pages"] + s["dead_empty_pages"], color=colour(name),
                label=f"{name}: all pinned")
        if s["dead_empty_pages"].any():
            ax.plot(cmp.t_s, s["dead_empty_pages"], color=colour(name), linestyle="--",
                    linewidth=1, label=f"{name}: in empty slabs")
    if len(cmp.offline_s):
        # A rug along the time axis: hundreds of vertical lines would hide the curves.
        ax.plot(cmp.offline_s, np.zeros(len(cmp.offline_s)), linestyle="none", marker="|",
                markersize=12, color="black", alpha=0.5,
                transform=ax.get_xaxis_transform(), label="memcg offline", clip_on=False)
    ax.set(title="Pages of dead per-memcg cache instances", xlabel="trace time (s)",
           ylabel="pinned pages (pages)")
    ax.set_ylim(bottom=0)
    ax.legend(fontsize="small", ncol=2)
    ax.grid(alpha=0.3)
    return fig


def caches_figure(cmp: Comparison) -> Figure:
    """Dead caches still alive and total slab pages over trace time, one panel each."""
    fig, (top, bottom) = _figure((9, 6), rows=2)
    for name, s in cmp.series.items():
        top.plot(cmp.t_s, s["dead_caches"], color=colour(name), label=name)
        bottom.plot(cmp.t_s, s["total_pages"], color=colour(name), label=name)
    top.set(title="Dead cache instances alive", ylabel="dead caches (caches)")
    bottom.set(title="Slab pages, all caches", xlabel="trace time (s)",
               ylabel="slab pages (pages)")
    for ax in (top, bottom):
        ax.set_ylim(bottom=0)
        ax.grid(alpha=0.3)
    top.legend(fontsize="small", ncol=3)
    fig.tight_layout()
    return fig


def latency_bins(latencies: dict[str, np.ndarray]) -> tuple[list[str], dict[str, np.ndarray]]:
    """Decade bins over all finite latencies plus a last bin for "never"; counts per strategy.

    Decades because latencies span microseconds (destroyed at offline) to the whole trace.
    """
    finite = np.concatenate([a[np.isfinite(a)] for a in latencies.values()] or [np.zeros(0)])
    positive = finite[finite > 0]
    lo = math.floor(math.log10(positive.min())) if len(positive) else 0
    hi = max(math.ceil(math.log10(positive.max())) if len(positive) else 0, lo + 1)
    edges = [0.0, *(10.0 ** e for e in range(lo, hi + 1))]
    labels = [f"<{_secs(edges[1])}",
              *(f"{_secs(a)}–{_secs(b)}" for a, b in pairwise(edges[1:])),
              NEVER]
    counts = {}
    for name, a in latencies.items():
        fin = a[np.isfinite(a)]
        hist = np.histogram(fin, bins=edges)[0] if len(fin) else np.zeros(len(edges) - 1, int)
        counts[name] = np.append(hist, int(np.isinf(a).sum()))
    return labels, counts


def _secs(s: float) -> str:
    for scale, suffix in ((1.0, "s"), (1e-3, "ms"), (1e-6, "µs"), (1e-9, "ns")):
        if s >= scale:
            return f"{s / scale:g}{suffix}"
    return f"{s:g}s"


def latency_figure(cmp: Comparison) -> Figure:
    """Offline -> destroy latency histogram per strategy, "never" as its own hatched bar."""
    labels, counts = latency_bins(cmp.latencies_s)
    fig, ax = _figure(_WIDE)
    x = np.arange(len(labels))
    width = 0.8 / max(len(counts), 1)
    for i, (name, c) in enumerate(counts.items()):
        n = len(cmp.latencies_s[name])
        label = f"{name} ({n} dead caches)" if n else f"{name} (no per-memcg caches)"
        bars = ax.bar(x + (i - (len(counts) - 1) / 2) * width, c, width, color=colour(name),
                      label=label)
        bars[-1].set_hatch("//")
    ax.axvline(len(labels) - 1.5, color="grey", linewidth=0.8)
    ax.set_xticks(x, labels, fontsize="small")
    ax.set(title="Memcg offline → cache destroy latency", xlabel="latency (s; last: never "
           "destroyed within the trace)", ylabel="dead caches (caches)")
    ax.legend(fontsize="small")
    ax.grid(axis="y", alpha=0.3)
    return fig


def cost_figure(cmp: Comparison) -> Figure:
    """Hot-path cost counters, grouped by counter, one bar per strategy, symlog scale."""
    fig, ax = _figure((10, 4.5))
    x = np.arange(len(COST_METRICS))
    width = 0.8 / max(len(cmp.metrics), 1)
    for i, m in enumerate(cmp.metrics):
        values = [getattr(m, name) or 0 for name in COST_METRICS]
        ax.bar(x + (i - (len(cmp.metrics) - 1) / 2) * width, values, width,
               color=colour(m.strategy), label=m.strategy)
    # symlog, not log: a zero count is a result (the strategy never does it), not missing.
    ax.set_yscale("symlog", linthresh=1)
    ax.set_ylim(bottom=0)
    ax.set_xticks(x, [f"{n}\n({unit(n)})" for n in COST_METRICS], fontsize="x-small",
                  rotation=30, ha="right")
    ax.set(title="Hot-path cost counters (event counts, not time)",
           ylabel="count (symlog scale)")
    ax.legend(fontsize="small", ncol=3)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    return fig


# File stem -> chart, in the order a reader should see them.
CHARTS = {"fair_metrics": fair_figure, "pinned_pages": pinned_figure,
          "dead_caches": caches_figure,
          "destroy_latency": latency_figure, "hot_path_cost": cost_figure}


def render_pngs(subject, charts: dict = CHARTS) -> dict[str, bytes]:
    """Every chart of ``charts`` (file stem -> figure maker) drawn for ``subject`` (a
    comparison, or a fleet summary with the fleet's charts), as PNG bytes by file stem."""
    out = {}
    for stem, make in charts.items():
        buf = io.BytesIO()
        make(subject).savefig(buf, format="png", dpi=DPI, bbox_inches="tight")
        out[stem] = buf.getvalue()
    return out


def write_plots(subject, directory: Path, charts: dict = CHARTS) -> list[Path]:
    """Write ``<stem>.png`` for every chart into ``directory`` (created); return the paths."""
    directory.mkdir(parents=True, exist_ok=True)
    paths = []
    for stem, png in render_pngs(subject, charts).items():
        path = directory / f"{stem}.png"
        path.write_bytes(png)
        paths.append(path)
    return paths
