"""The what-if panel: per strategy the fair metrics now and a sparkline, then the lag.

A rich renderable built from a :class:`~kmemtrace.live.feed.LiveWhatIf`, shared by
``record --live`` and ``top --what-if``; it only reads, so any view can redraw it.
"""

import math

from rich.columns import Columns
from rich.console import Group, RenderableType
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from kmemtrace.live.feed import HISTORY_S, Final, LiveWhatIf
from kmemtrace.live.whatif import INITIAL_STATE_NOTE, Now
from kmemtrace.report.format import humanise

SPARK_WIDTH = 30
_BARS = "▁▂▃▄▅▆▇█"


def history_span_ns(points, end_ts: int) -> int:
    """What the sparkline covers: the last ``HISTORY_S`` seconds, or less if younger."""
    first = points[0][0] if points else end_ts
    return max(min(HISTORY_S * 1_000_000_000, end_ts - first), 1_000_000_000)


def sparkline(points, end_ts: int, span: int, width: int = SPARK_WIDTH) -> str:
    """The ``span`` ns before ``end_ts`` in ``width`` cells, the peak of each cell.

    A cell without a point repeats the one before (the value held until the next report);
    the scale is 0 .. the highest value shown, so a flat line at the bottom means zero.
    """
    cells: list[float | None] = [None] * width
    for ts, value in points:
        i = min((ts - (end_ts - span)) * width // span, width - 1)  # end_ts: the last cell
        if i >= 0 and ts <= end_ts:
            cells[i] = value if cells[i] is None else max(cells[i], value)
    last = None
    for i, v in enumerate(cells):
        last = v if v is not None else last
        cells[i] = last
    top = max((v for v in cells if v is not None), default=0)
    return "".join(" " if v is None else _BARS[0] if top <= 0
                   else _BARS[min(int(v / top * (len(_BARS) - 1) + 0.5), len(_BARS) - 1)]
                   for v in cells)


def _panel(now: Now, live: LiveWhatIf, end_ts: int) -> Panel:
    grid = Table.grid(padding=(0, 1))
    grid.add_column(style="dim")
    grid.add_column(justify="right")
    grid.add_row("footprint", humanise(now.footprint_bytes) + "B")
    grid.add_row("stranded", humanise(now.stranded_bytes) + "B")
    grid.add_row("dying memcgs", humanise(now.dying_memcgs))
    grid.add_row("dead caches", humanise(now.dead_caches))
    points = live.history.points.get(now.strategy, ())
    span = history_span_ns(points, end_ts)
    return Panel(Group(grid, Text(sparkline(points, end_ts, span), style="cyan"), Text(
        f"stranded, last {span / 1e9:.0f} s", style="dim")), title=now.strategy,
        expand=False)


def status_line(live: LiveWhatIf) -> Text:
    """Lag and exactness in one line (also printed when the panel cannot be drawn)."""
    snap = live.snapshot
    lag = live.lag_s
    line = Text(f"what-if: {snap.events if snap else 0:,} events replayed, lag "
                + (f"{lag:.1f} s" if lag is not None else "–")
                + f" ({live.behind_rows:,} rows queued)")
    if live.skipped:
        line.append(f"; behind: {live.skipped:,} events skipped, no longer exact",
                    style="bold red")
    if snap and snap.late:
        line.append(f"; {snap.late:,} late rows clamped, may differ from the replay",
                    style="yellow")
    if live.error:
        line.append(f"; the what-if failed ({live.error}), the recording goes on",
                    style="bold red")
    return line


def render(live: LiveWhatIf) -> RenderableType:
    snap = live.snapshot
    if snap is None or not snap.now:
        return Group(Text("what-if: starting the replay engine (its first use compiles it, "
                          "~25 s)", style="dim"), status_line(live))
    end = snap.replayed_ts or 0
    return Group(Columns([_panel(n, live, end) for n in snap.now]), status_line(live),
                 Text(INITIAL_STATE_NOTE, style="dim"))


def final_table(final: Final) -> Table:
    """The what-if's end-of-recording figures, one row per strategy."""
    table = Table(title="what-if at the end of the recording", title_justify="left")
    for name in ("strategy", "footprint end", "stranded end", "stranded peak",
                 "dying memcgs end", "dead caches end"):
        table.add_column(name, justify="left" if name == "strategy" else "right")
    for m in final.strategies:
        table.add_row(m["strategy"], humanise(m["footprint_bytes_end"]) + "B",
                      humanise(m["stranded_bytes_end"]) + "B",
                      humanise(m["stranded_bytes_peak"]) + "B",
                      humanise(m["dying_memcgs_end"]), humanise(m["dead_caches_end"]))
    return table


def final_sentence(final: Final) -> str:
    """Whether the figures equal a replay of the trace, and the model's initial state."""
    if final.exact:
        head = (f"exact: all {final.events:,} events replayed live in the trace's order, so "
                "these equal `kmemtrace replay` of the trace")
    else:
        head = (f"not exact ({final.skipped:,} events skipped while behind, {final.late:,} "
                f"late rows, {final.writer_dropped:,} rows the trace writer dropped): "
                "`kmemtrace replay` of the trace gives the exact figures")
    return f"{head}. The {INITIAL_STATE_NOTE}."


def final_json(final: Final) -> dict:
    """Exact values; a censored latency (inf) is "never", as in ``replay --json``."""
    return {"exact": final.exact, "events": final.events, "late": final.late,
            "skipped": final.skipped, "writer_dropped": final.writer_dropped,
            "initial_state": INITIAL_STATE_NOTE,
            "strategies": [{k: ("never" if isinstance(v, float) and math.isinf(v) else v)
                            for k, v in m.items()} for m in final.strategies]}
