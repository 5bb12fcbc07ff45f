"""The comparison as plain text for a mailing-list post: no ANSI, no line over 72 columns.

Strategies are columns; when they do not all fit beside the metric names, the table is
split into blocks of (nearly) equal width, each repeating the names, so nothing wraps in
a mail client.
"""

import math
import textwrap
from pathlib import PurePath

from kmemtrace.metrics import metric_fields
from kmemtrace.report.comparison import Comparison
from kmemtrace.report.format import best_columns, humanise, params_line, unit

WIDTH = 72
# The fair metrics first: they mean the same for every strategy (docs/replay.md).
GROUPS = ("footprint", "stranded", "waste", "metadata", "dying", "page_cache", "destroy",
          "instances", "churn", "cost", "safety", "trace")
BEST_MARK = "*"
_INDENT = "  "


def render_text(cmp: Comparison) -> str:
    """The whole report: header, comparison blocks, assumptions."""
    parts = [_header(cmp), *_blocks(cmp), _assumptions(cmp)]
    return "\n\n".join(parts) + "\n"


def _wrap(text: str, first: str, rest: str) -> list[str]:
    return textwrap.wrap(text, WIDTH, initial_indent=first, subsequent_indent=rest,
                         break_on_hyphens=False)


def _header(cmp: Comparison) -> str:
    f = cmp.facts
    # The directory name only: a local path is noise in a post and would be cut mid-word.
    lines = [*_wrap(PurePath(f.path).name, "trace   ", " " * 8),
             *_wrap(f"{f.source_text}; kernel {f.kernel_release}", "source  ", " " * 8),
             *_wrap(f"{f.events:,} over {f.span_s:.3g} s; {f.caches} caches, {f.memcgs} "
                    f"memcgs; {f.lost_total:,} lost", "events  ", " " * 8),
             f"era     SLUB {cmp.era}"]
    if params := params_line(cmp.metrics):
        lines += _wrap(params, "params  ", " " * 8)
    if f.lost_total:
        lines += _wrap(f"warning: the recorder lost {f.lost_total:,} events; "
                       "counts below are lower bounds", "", "  ")
    if f.is_emulated_vm:
        lines += _wrap("warning: recorded in an emulated VM; times are not real-time",
                       "", "  ")
    for warning in cmp.warnings:
        lines += _wrap(f"warning: {warning}", "", "  ")
    return "\n".join(lines)


def _cells(cmp: Comparison) -> dict[str, list[str]]:
    """Each metric's formatted values, the best ones marked."""
    out = {}
    for name in metric_fields():
        values = [getattr(m, name) for m in cmp.metrics]
        best = best_columns(name, cmp.metrics)
        out[name] = [humanise(v) + (BEST_MARK if i in best else " ")
                     for i, v in enumerate(values)]
    return out


def _blocks(cmp: Comparison) -> list[str]:
    cells = _cells(cmp)
    names = [m.strategy for m in cmp.metrics]
    label_w = max(len(_INDENT + n) for n in cells)
    unit_w = max(len(unit(n)) for n in cells)
    col_w = [max(len(s) + 1, *(len(row[i]) for row in cells.values()))
             for i, s in enumerate(names)]
    room = WIDTH - label_w - 1 - unit_w
    per_block = max(room // (max(col_w) + 1), 1)
    n_blocks = math.ceil(len(names) / per_block)
    per_block = math.ceil(len(names) / n_blocks)
    blocks = []
    for start in range(0, len(names), per_block):
        cols = range(start, min(start + per_block, len(names)))
        head = "metric".ljust(label_w) + " " + "unit".ljust(unit_w)
        lines = [head + "".join(" " + (names[i] + " ").rjust(col_w[i]) for i in cols)]
        for group in GROUPS:
            lines.append(group)
            for name in metric_fields(group):
                row = cells[name]
                lines.append((_INDENT + name).ljust(label_w) + " " + unit(name).ljust(unit_w)
                             + "".join(" " + row[i].rjust(col_w[i]) for i in cols))
        blocks.append("\n".join(line.rstrip() for line in lines))
    blocks.append(f"{BEST_MARK} best (lowest) in its row; {humanise(None)} does not apply")
    return blocks


def _assumptions(cmp: Comparison) -> str:
    lines = ["Assumptions:"]
    for sentence in cmp.assumptions:
        lines += _wrap(sentence, "- ", "  ")
    return "\n".join(lines)
