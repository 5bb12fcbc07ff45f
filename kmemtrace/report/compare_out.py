"""``compare`` results as 72-column text, a rich table and JSON.

A, B are the medians over each side's traces (the value itself with one trace); B/A is
their ratio. The verdict line says which test was used and how many rows it flagged.
"""

import json
import math
import textwrap
from pathlib import PurePath

from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

from kmemtrace import __version__
from kmemtrace.report.compare import MIN_PER_SIDE, TEST_NAME, Row, SideBySide
from kmemtrace.report.format import MISSING, NEVER, humanise, unit
from kmemtrace.report.text import WIDTH

_LABEL = 14
_NUM = 9


def verdict(sbs: SideBySide) -> str:
    """One sentence: the test's outcome, or why there is none."""
    if not sbs.several:
        return ("one trace per side: run-to-run noise is unknown, so no test; give "
                f"{MIN_PER_SIDE} or more per side (A1 .. A{MIN_PER_SIDE} -- B1 .. "
                f"B{MIN_PER_SIDE}) to tell a difference from noise")
    if not sbs.tested:
        return (f"too few traces per side to test (need ≥ {MIN_PER_SIDE}): no p can reach "
                "0.05; δ is the effect size (+1: every B above every A)")
    n = len(sbs.significant)
    if n == 0:
        return (f"no significant difference: none of the {len(sbs.family)} rows that vary "
                "differs by more than run-to-run noise")
    return f"{n} of the {len(sbs.family)} rows that vary differ by more than run-to-run noise"


def _sides(sbs: SideBySide) -> list[str]:
    out = []
    for label, side in (("A", sbs.a), ("B", sbs.b)):
        names = ", ".join(PurePath(c.facts.path).name for c in side)
        first = f"{label}  {len(side)} trace{'s' if len(side) > 1 else ''}: "
        out += textwrap.wrap(names, WIDTH, initial_indent=first,
                             subsequent_indent=" " * 3, break_on_hyphens=False)
        sources = "; ".join(dict.fromkeys(c.facts.source_text for c in side))
        out += textwrap.wrap(sources, WIDTH, initial_indent="   ", subsequent_indent="   ")
        if any(c.facts.is_emulated_vm for c in side):
            out.append("   warning: recorded in an emulated VM; times are not real-time")
    return out


def _ratio(r: Row) -> str:
    if r.ratio is None:
        return MISSING
    return "inf" if math.isinf(r.ratio) else f"{r.ratio:.3g}"


def _delta(r: Row) -> str:
    return MISSING if r.delta is None else f"{r.delta:+.2f}"


def _cells(r: Row, tested: bool, several: bool = False) -> list[str]:
    cells = [humanise(r.a_median), humanise(r.b_median), _ratio(r)]
    if several:
        cells.append(_delta(r))
    if tested and r.p is None:
        cells += [MISSING, MISSING]
    elif tested:
        cells += [f"{r.p:.2g}", "yes" if r.significant else "no"]
    return cells


def render_compare_text(sbs: SideBySide) -> str:
    """Header, verdict, then per metric one line per strategy; no line over 72 columns."""
    head = (["strategy", "A", "B", "B/A"] + (["δ"] if sbs.several else [])
            + (["p", "signif"] if sbs.tested else []))
    widths = [_LABEL] + [_NUM] * (len(head) - 1)
    lines = [*_sides(sbs),
             *(textwrap.wrap(f"test: {TEST_NAME}", WIDTH, subsequent_indent="  ")
               if sbs.tested else []),
             *textwrap.wrap(f"=> {verdict(sbs)}", WIDTH, subsequent_indent="   "), "",
             _line(head, widths)]
    metric = None
    for r in sbs.rows:
        if r.metric != metric:
            metric = r.metric
            lines.append(f"{metric} ({unit(metric)})" if unit(metric) else metric)
        lines.append(_line(["  " + r.strategy, *_cells(r, sbs.tested, sbs.several)], widths))
    lines.append("A, B: medians over each side's traces; never: some dead cache was never "
                 f"destroyed; {MISSING}: undefined (B/A of 0 and 0)"
                 + ("; δ: Cliff's delta of B vs A" if sbs.several else ""))
    return "\n".join(line[:WIDTH].rstrip() for line in _rewrap(lines)) + "\n"


def _rewrap(lines: list[str]) -> list[str]:
    out = []
    for line in lines:
        out += textwrap.wrap(line, WIDTH) if len(line) > WIDTH else [line]
    return out


def _line(cells: list[str], widths: list[int]) -> str:
    return cells[0].ljust(widths[0]) + "".join(c.rjust(w) for c, w in
                                               zip(cells[1:], widths[1:], strict=True))


def render_compare(sbs: SideBySide) -> RenderableType:
    """The same rows as a rich table, significant rows highlighted."""
    t = Table(header_style="bold")
    t.add_column("metric", no_wrap=True)
    for name in ("unit", "strategy"):
        t.add_column(name, style="dim" if name == "unit" else None, no_wrap=True)
    for name in ("A", "B", "B/A", *(("δ",) if sbs.several else ()),
                 *(("p", "signif") if sbs.tested else ())):
        t.add_column(name, justify="right", no_wrap=True)
    metric = None
    for r in sbs.rows:
        first = r.metric != metric
        metric = r.metric
        if first:
            t.add_section()
        t.add_row(r.metric if first else "", unit(r.metric) if first else "", r.strategy,
                  *_cells(r, sbs.tested, sbs.several),
                  style="bold yellow" if r.significant else None)
    return Group(Text("\n".join(_sides(sbs))), Text(f"test: {TEST_NAME}", style="dim"),
                 Text(verdict(sbs), style="bold"), t)


def _jsonable(v):
    return NEVER if isinstance(v, float) and math.isinf(v) else v


def compare_json(sbs: SideBySide) -> str:
    """Exact values per trace; inf as "never" (latencies) as in the replay's JSON."""
    rows = [{"metric": r.metric, "unit": unit(r.metric), "strategy": r.strategy,
             "a": [_jsonable(v) for v in r.a], "b": [_jsonable(v) for v in r.b],
             "a_median": _jsonable(r.a_median), "b_median": _jsonable(r.b_median),
             "ratio": "inf" if r.ratio == math.inf else r.ratio, "delta": r.delta, "p": r.p,
             "significant": r.significant}
            for r in sbs.rows]
    doc = {"kmemtrace_version": __version__, "test": TEST_NAME if sbs.tested else None,
           "verdict": verdict(sbs),
           "a": [c.facts.path for c in sbs.a], "b": [c.facts.path for c in sbs.b],
           "rows": rows}
    return json.dumps(doc, indent=1, allow_nan=False) + "\n"
