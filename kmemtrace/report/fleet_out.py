"""``kmemtrace fleet report`` as 72-column text and as rich tables.

Both show the same things in the same order: what the run covered, wins per strategy,
then one table per fair metric (the spread over hosts, wins, the worst hosts), then the
traces that failed. Numbers are formatted by :func:`~kmemtrace.report.format.humanise`,
as in every other report.
"""

import textwrap

from rich.console import Group, RenderableType
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from kmemtrace.fleet.summary import FAIR_METRICS, SHORT_NAMES, FleetSummary, Spread
from kmemtrace.metrics import field_info
from kmemtrace.report.format import humanise
from kmemtrace.report.text import WIDTH

BEST_STYLE = "bold green"


def facts(s: FleetSummary) -> list[tuple[str, str]]:
    """(label, text) lines about the run, shared by every output."""
    m = s.manifest
    counts = {k: sum(t.status == k for t in m.traces)
              for k in ("done", "skipped", "failed", "duplicate")}
    traces = (f"{len(s.hosts)} replayed ({counts['done']} in the last run, "
              f"{counts['skipped']} done before)")
    if counts["failed"]:
        traces += f"; {counts['failed']} failed"
    if counts["duplicate"]:
        traces += f"; {counts['duplicate']} duplicates"
    return [("results", f"{s.directory}/results (one Parquet table)"), ("traces", traces),
            ("era", f"SLUB {m.era}, {m.samples} samples per series"),
            ("strategies", ", ".join(s.strategies)),
            ("last run", f"{m.scheduler} cluster, {m.workers} workers, {m.wall_s:.3g} s"
             if m.workers else "no cluster started: nothing was left to replay")]


# The metric's own description refers to the row above it in a single report.
_DOCS = {"destroy_latency_p99_s": "offline -> destroy, 99th percentile over the dead caches "
                                  "destroyed after their offline (see never destroyed)"}


def title(metric: str) -> str:
    info = field_info(metric)
    return f"{metric} ({info['unit']}): {_DOCS.get(metric, info['doc'])}"


def worst_text(spread: Spread, n: int) -> str:
    return ", ".join(f"{h} {humanise(v)}" for h, v in spread.worst[:n])


def _best(spreads: tuple[Spread, ...]) -> set[str]:
    top = max((sp.wins for sp in spreads), default=0)
    return {sp.strategy for sp in spreads if top and sp.wins == top}


# --- text ---------------------------------------------------------------------------------

def render_fleet_text(s: FleetSummary) -> str:
    out = ["\n".join(_wrap(text, f"{label:<11}", " " * 11) for label, text in facts(s))]
    if s.hosts:
        out.append(_wins_text(s))
        out += [_metric_text(s, m) for m in FAIR_METRICS]
    if s.failed:
        out.append("\n".join(["failed traces:", *(_wrap(f"{t.path}: {t.error}", "- ", "  ")
                                                  for t in s.failed)]))
    return "\n\n".join(out) + "\n"


def _wrap(text: str, first: str, rest: str) -> str:
    return "\n".join(textwrap.wrap(text, WIDTH, initial_indent=first, subsequent_indent=rest,
                                   break_on_hyphens=False))


def _wins_text(s: FleetSummary) -> str:
    names = [SHORT_NAMES[m] for m in FAIR_METRICS]
    lines = ["hosts won (lowest value; ties count for each; * most)",
             f"{'strategy':<9}" + "".join(f"{n:>10}" for n in names)]
    best = {m: _best(s.spreads[m]) for m in FAIR_METRICS}
    for i, strategy in enumerate(s.strategies):
        cells = [f"{s.spreads[m][i].wins}{'*' if strategy in best[m] else ' '}"
                 for m in FAIR_METRICS]
        lines.append(f"{strategy:<9}" + "".join(f"{c:>10}" for c in cells))
    return "\n".join(line.rstrip() for line in lines)


def _metric_text(s: FleetSummary, metric: str) -> str:
    head = f"  {'strategy':<9}{'hosts':>5}{'median':>8}{'p90':>8}{'max':>8}{'wins':>6}  worst"
    lines = [_wrap(title(metric), "", "  "), head]
    for sp in s.spreads[metric]:
        q = sp.quantiles
        cells = [humanise(q[2]) if q else humanise(None), humanise(q[4]) if q else "",
                 humanise(q[5]) if q else ""]
        row = (f"  {sp.strategy:<9}{sp.hosts:>5}" + "".join(f"{c:>8}" for c in cells)
               + f"{sp.wins:>6}  ")
        lines.append((row + worst_text(sp, 1))[:WIDTH].rstrip())
    return "\n".join(lines)


# --- rich ---------------------------------------------------------------------------------

def render_fleet(s: FleetSummary) -> RenderableType:
    header = Panel(Group(*(Text.assemble((f"{label:<11}", "dim"), text)
                           for label, text in facts(s))),
                   title="kmemtrace fleet", title_align="left", expand=False)
    parts: list[RenderableType] = [header]
    if s.hosts:
        parts += [_wins_table(s), *(_metric_table(s, m) for m in FAIR_METRICS)]
    if s.failed:
        failed = Table(title="failed traces", title_justify="left", show_header=False)
        failed.add_column(style="bold red", overflow="fold")
        failed.add_column(overflow="fold")
        for t in s.failed:
            failed.add_row(t.path, t.error or "")
        parts.append(failed)
    return Group(*parts)


def _wins_table(s: FleetSummary) -> Table:
    t = Table(title="hosts won: lowest value (ties count for each)", title_justify="left")
    t.add_column("strategy")
    for m in FAIR_METRICS:
        t.add_column(SHORT_NAMES[m], justify="right")
    best = {m: _best(s.spreads[m]) for m in FAIR_METRICS}
    for i, strategy in enumerate(s.strategies):
        t.add_row(strategy, *(Text(str(s.spreads[m][i].wins),
                                   style=BEST_STYLE if strategy in best[m] else "")
                              for m in FAIR_METRICS))
    return t


def _metric_table(s: FleetSummary, metric: str) -> Table:
    t = Table(title=title(metric), title_justify="left")
    for name in ("strategy", "hosts", "min", "p25", "median", "p75", "p90", "max", "wins"):
        t.add_column(name, justify="left" if name == "strategy" else "right", no_wrap=True)
    t.add_column("worst hosts", overflow="fold")
    best = _best(s.spreads[metric])
    for sp in s.spreads[metric]:
        q = [humanise(v) for v in sp.quantiles] or [humanise(None)] * 6
        t.add_row(sp.strategy, str(sp.hosts), *q,
                  Text(str(sp.wins), style=BEST_STYLE if sp.strategy in best else ""),
                  worst_text(sp, 3))
    return t
