"""The comparison as one self-contained HTML file: facts, tables, charts, assumptions.

Everything is inline (CSS in a ``<style>``, charts as base64 PNG ``data:`` URIs) so the
file can be mailed, attached to a bug or opened offline. Tables put strategies in rows,
one table per metric group, so that no table is wider than a screen; the best value of a
ranked column is bold, as in the terminal table.
"""

import base64
from html import escape

from kmemtrace import __version__
from kmemtrace.metrics import field_info, metric_fields
from kmemtrace.report.comparison import Comparison
from kmemtrace.report.format import best_columns, humanise, params_line
from kmemtrace.report.text import GROUPS

CSS = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 120em;
       padding: 0 1em; color: #222; background: #fff; }
h1 { font-size: 1.5em; } h2 { font-size: 1.2em; margin-top: 2em; }
table { border-collapse: collapse; margin: 0.5em 0 1.5em; font-size: 0.9em; }
th, td { border-bottom: 1px solid #ddd; padding: 0.25em 0.6em; text-align: right; }
th:first-child, td:first-child, table.facts td, table.facts th { text-align: left; }
thead th { background: #f3f3f3; }
th:first-child { white-space: nowrap; }
td.best { font-weight: bold; color: #176b1d; }
.warn { color: #a33; font-weight: bold; }
.scroll { overflow-x: auto; }
figure { margin: 1em 0; } img { max-width: 100%; }
figure img { max-width: min(100%, 70em); }
pre { font-size: 0.85em; background: #f7f7f7; padding: 0.8em; overflow-x: auto; }
"""

_BEST = ' class="best"'
_CHART_CAPTIONS = {
    "fair_metrics": "Slab footprint, stranded memory, metadata kept alive and dying "
                    "memcgs over time: defined alike for every strategy.",
    "pinned_pages": "Pages of dead per-memcg cache instances over time (designs without "
                    "such instances have none); dashed: the share in empty "
                    "slabs; ticks on the time axis: memcg offline moments.",
    "dead_caches": "Dead cache instances alive, and slab pages of all caches, over time.",
    "destroy_latency": "Offline → destroy latency per dead cache; the hatched bar counts "
                       "caches never destroyed within the trace.",
    "hot_path_cost": "Hot-path cost counters (symlog scale).",
}


def render_html(cmp: Comparison, charts: dict[str, bytes], *, title: str | None = None,
                validation: str | None = None) -> str:
    """The whole page; ``charts`` maps a file stem of plots.CHARTS to PNG bytes.

    ``title`` names the workload (the recorded command, or the synthetic workload);
    ``validation`` is ``kmemtrace validate``'s text for the trace, shown as it prints.
    """
    title = title or cmp.facts.source_text
    checked = ([f"<h2>Validation</h2><pre>{escape(validation)}</pre>"]
               if validation is not None else [])
    body = [f"<h1>kmemtrace: {escape(title)}</h1>", _facts(cmp),
            "<h2>Comparison</h2>", _legend(), *(_group_table(cmp, g) for g in GROUPS),
            "<h2>Charts</h2>", *(_figure(stem, png) for stem, png in charts.items()),
            *checked, "<h2>Assumptions</h2>", _assumptions(cmp),
            f"<p><small>kmemtrace {escape(__version__)}</small></p>"]
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<title>kmemtrace report: {escape(title)}</title>"
            f"<style>{CSS}</style></head><body>\n" + "\n".join(body) + "\n</body></html>\n")


def _row(*cells: str, tag: str = "td") -> str:
    return "<tr>" + "".join(f"<{tag}>{c}</{tag}>" for c in cells) + "</tr>"


def _facts(cmp: Comparison) -> str:
    f = cmp.facts
    lost = f"{f.lost_total:,}"
    if f.lost_total:
        reasons = ", ".join(f"{k}={v:,}" for k, v in f.lost.get("by_reason", {}).items())
        lost = f'<span class="warn">{lost} ({escape(reasons)}): counts are lower bounds</span>'
    kernel = "; ".join(f"{k}={v}" for k, v in f.kernel.items() if k != "release")
    rows = [("trace", escape(f.path)), ("source", escape(f.source_text)),
            ("kernel", escape(f"{f.kernel_release}" + (f" ({kernel})" if kernel else ""))),
            ("events", f"{f.events:,} over {f.span_s:.3g} s"), ("lost events", lost),
            ("caches", f"{f.caches:,}"), ("memcgs", f"{f.memcgs:,}"),
            ("SLUB era", escape(cmp.era))]
    if params := params_line(cmp.metrics):
        rows.append(("parameters", escape(params)))
    if f.is_emulated_vm:
        rows.append(("warning", '<span class="warn">recorded in an emulated VM; times are '
                                "not real-time</span>"))
    if not f.complete:
        why = f"writing it failed: {f.write_error}" if f.write_error else "the recorder was killed"
        rows.append(("warning", f'<span class="warn">incomplete trace ({escape(why)}): only its '
                                "sealed parts were replayed; losses after them are not "
                                "counted</span>"))
    out = ['<h2>Trace</h2><table class="facts">',
           *(_row(k, v, tag="td") for k, v in rows), "</table>"]
    out.append(_attach_plan(f.attach_plan))
    return "\n".join(out)


def _attach_plan(plan: tuple[dict, ...]) -> str:
    if not plan:
        return "<p>Attach plan: none (not a recording).</p>"
    rows = [_row(escape(str(e.get("probe", "?"))), escape(str(e.get("type", ""))),
                 "attached" if e.get("status") == "attached"
                 else '<span class="warn">missing</span>', escape(str(e.get("why", ""))))
            for e in plan]
    return ('<h3>Attach plan</h3><table class="facts"><thead>'
            + _row("probe", "type", "status", "why", tag="th") + "</thead><tbody>"
            + "".join(rows) + "</tbody></table>")


def _legend() -> str:
    return ("<p>Bold green: best (lowest) in its column; "
            f"{escape(humanise(None))}: does not apply; never: some dead cache was never "
            "destroyed. Hover a column name for its meaning.</p>")


def _group_table(cmp: Comparison, group: str) -> str:
    """One metric group: strategies as rows, metrics as columns."""
    names = metric_fields(group)
    head = "".join(
        f'<th title="{escape(field_info(n)["doc"])}">{_breakable(n)}'
        f'<br><small>{escape(field_info(n)["unit"])}</small></th>' for n in names)
    best = {n: best_columns(n, cmp.metrics) for n in names}
    rows = []
    for i, m in enumerate(cmp.metrics):
        cells = "".join(f"<td{_BEST if i in best[n] else ''}>{escape(humanise(getattr(m, n)))}"
                        "</td>" for n in names)
        rows.append(f'<tr data-strategy="{escape(m.strategy)}">'
                    f"<th>{escape(m.strategy)}</th>{cells}</tr>")
    return (f'<h3>{escape(group)}</h3><div class="scroll"><table data-group="{escape(group)}">'
            f"<thead><tr><th>strategy</th>{head}</tr></thead><tbody>" + "".join(rows)
            + "</tbody></table></div>")


def _breakable(name: str) -> str:
    """A metric name that may wrap after its underscores, so tables fit a 1000 px window."""
    return escape(name).replace("_", "_<wbr>")


def _figure(stem: str, png: bytes) -> str:
    data = base64.b64encode(png).decode("ascii")
    caption = _CHART_CAPTIONS.get(stem, stem)
    return (f'<figure><img alt="{escape(caption)}" src="data:image/png;base64,{data}">'
            f"<figcaption>{escape(caption)}</figcaption></figure>")


def _assumptions(cmp: Comparison) -> str:
    items = "".join(f"<li>{escape(s)}</li>"
                    for s in cmp.assumptions)
    return f"<ul>{items}</ul>"
