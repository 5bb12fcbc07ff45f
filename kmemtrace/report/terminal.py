"""The comparison as rich renderables: a header panel, the table, the assumptions.

Strategies are columns so that a row reads as "this metric, strategy by strategy"; the
best value of a ranked row is highlighted. The table measures itself against the
console: on a narrow terminal it splits into blocks of strategies instead of squeezing
numbers into ellipses, and the metric descriptions appear only when there is room.
Nothing here prints: the CLI does.
"""

import math

from rich import box
from rich.console import Console, ConsoleOptions, Group, RenderableType, RenderResult
from rich.measure import Measurement
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from kmemtrace.metrics import field_info, metric_fields
from kmemtrace.report.comparison import Comparison
from kmemtrace.report.format import best_columns, humanise, params_line
from kmemtrace.report.text import BEST_MARK, GROUPS

BEST_STYLE = "bold green"


def _plain(console: Console) -> bool:
    return console.no_color or console.color_system is None
_DOC_MIN_WIDTH = 30  # below this the descriptions wrap into unreadable slivers
_UNBOUNDED = 10_000


def render(cmp: Comparison) -> RenderableType:
    """Header, table and assumptions, in the order they should be read."""
    return Group(header(cmp), ComparisonTable(cmp), assumptions_block(cmp))


def header(cmp: Comparison) -> Panel:
    f = cmp.facts
    lines = [
        Text.assemble(_label("trace"), f.path),
        Text.assemble(_label("source"), f"{f.source_text}; kernel {f.kernel_release}"),
        Text.assemble(_label("events"), f"{f.events:,} over {f.span_s:.3g} s; "
                      f"{f.caches} caches, {f.memcgs} memcgs; ",
                      (f"{f.lost_total:,} lost", "bold red" if f.lost_total else "")),
        Text.assemble(_label("era"), f"SLUB {cmp.era}"),
    ]
    if params := params_line(cmp.metrics):
        lines.append(Text.assemble(_label("params"), params))
    if f.is_emulated_vm:
        lines.append(Text("warning: recorded in an emulated VM; times are not real-time",
                          style="yellow"))
    lines += [Text(f"warning: {w}", style="yellow") for w in cmp.warnings]
    return Panel(Group(*lines), title="kmemtrace replay", title_align="left", expand=False)


def _label(name: str) -> tuple[str, str]:
    return f"{name:<8}", "dim"


class ComparisonTable:
    """Metrics by group (rows) x strategies (columns), fitted to the console width."""

    def __init__(self, cmp: Comparison):
        self.cmp = cmp

    def table(self, columns: range, with_docs: bool, plain: bool = False) -> Table:
        """``plain``: no colour reaches the reader (a pipe, NO_COLOR), so mark with ``*``."""
        metrics = self.cmp.metrics
        marker = BEST_MARK if plain else BEST_STYLE.split()[-1]
        t = Table(box=box.SIMPLE_HEAD, header_style="bold", caption_justify="left",
                  caption=Text(f"{marker}: best (lowest) in its row; "
                               f"{humanise(None)}: does not apply", style="dim"))
        t.add_column("metric", no_wrap=True)
        t.add_column("unit", style="dim", no_wrap=True)
        for i in columns:
            t.add_column(metrics[i].strategy, justify="right", no_wrap=True)
        if with_docs:
            t.add_column("what", style="dim", overflow="fold", min_width=_DOC_MIN_WIDTH)
        for group in GROUPS:
            t.add_section()
            t.add_row(Text(group, style="bold cyan"))
            for name in metric_fields(group):
                values = [getattr(m, name) for m in metrics]
                best = best_columns(name, metrics)
                info = field_info(name)
                cells = [Text(humanise(values[i]) + (BEST_MARK if plain and i in best else ""),
                              style=BEST_STYLE if i in best else "") for i in columns]
                t.add_row(name, info["unit"], *cells, *([info["doc"]] if with_docs else []))
        return t

    def _fits(self, console: Console, options: ConsoleOptions, columns: range,
              with_docs: bool) -> bool:
        # Measure unclamped: Measurement.get never reports more than the width it is given.
        natural = options.update_width(_UNBOUNDED)
        table = self.table(columns, with_docs, _plain(console))
        width = Measurement.get(console, natural, table).maximum
        return width <= options.max_width

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        n = len(self.cmp.metrics)
        per_block = n
        while per_block > 1 and not self._fits(console, options, range(per_block), False):
            per_block -= 1
        per_block = math.ceil(n / math.ceil(n / per_block))
        with_docs = per_block == n and self._fits(console, options, range(n), True)
        for start in range(0, n, per_block):
            yield self.table(range(start, min(start + per_block, n)), with_docs,
                             _plain(console))


def assumptions_block(cmp: Comparison) -> RenderableType:
    bullets = Table.grid(padding=(0, 1))
    bullets.add_column(style="dim")
    bullets.add_column(style="dim")
    for sentence in cmp.assumptions:
        bullets.add_row("•", sentence)
    return Group(Text("Assumptions", style="bold"), bullets)
