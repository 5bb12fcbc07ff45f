"""``kmemtrace fleet report --html``: the fleet view as one self-contained page, and its
charts (also written as PNG files by ``--plot``).

Made like the single-trace report (``report/html.py``): inline CSS, charts as base64 PNG,
strategies in their registry colours (``report/plots.py``), numbers humanised.
"""

import base64
from html import escape

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from kmemtrace import __version__
from kmemtrace.fleet.summary import FAIR_METRICS, SHORT_NAMES, FleetSummary
from kmemtrace.report.fleet_out import facts, title, worst_text
from kmemtrace.report.format import humanise
from kmemtrace.report.html import CSS
from kmemtrace.report.plots import colour

_BEST = ' class="best"'
_MIB = 1 << 20
_CAPTIONS = {
    "fleet_spread": "Each fair metric per strategy over the hosts: box from p25 to p75, "
                    "line at the median, whiskers to min and max, one dot per host.",
    "fleet_wins": "Hosts on which each strategy has the lowest value of each fair metric "
                  "(ties count for every tied strategy).",
}


def spread_figure(s: FleetSummary) -> Figure:
    """One panel per fair metric: the per-host values of each strategy as box and dots."""
    fig = Figure(figsize=(11, 3.2 * ((len(FAIR_METRICS) + 1) // 2)))
    FigureCanvasAgg(fig)
    axes = fig.subplots((len(FAIR_METRICS) + 1) // 2, 2).ravel()
    x = np.arange(len(s.strategies))
    for ax, metric in zip(axes, FAIR_METRICS, strict=False):
        unit, scale = ("MiB", 1 / _MIB) if s.unit(metric) == "B" else (s.unit(metric), 1)
        for i, sp in enumerate(s.spreads[metric]):
            if not sp.hosts:
                continue
            values = sp.values * scale
            ax.boxplot([values], positions=[i], widths=0.6, whis=(0, 100),
                       showfliers=False, medianprops={"color": colour(sp.strategy)})
            jitter = (np.arange(sp.hosts) % 7 - 3) * 0.04
            ax.plot(i + jitter, values, linestyle="none", marker="o", markersize=3,
                    alpha=0.6, color=colour(sp.strategy))
        ax.set_xticks(x, s.strategies, fontsize="small")
        ax.set_xlim(-0.5, len(s.strategies) - 0.5)
        ax.set_title(f"{SHORT_NAMES[metric]}: {metric} ({unit})", fontsize="small")
        ax.set_ylim(bottom=0)
        ax.grid(axis="y", alpha=0.3)
    for ax in axes[len(FAIR_METRICS):]:
        ax.set_visible(False)
    fig.tight_layout()
    return fig


def wins_figure(s: FleetSummary) -> Figure:
    """Grouped bars: per fair metric, hosts won by each strategy."""
    fig = Figure(figsize=(10, 4))
    FigureCanvasAgg(fig)
    ax = fig.subplots()
    x = np.arange(len(FAIR_METRICS))
    width = 0.8 / max(len(s.strategies), 1)
    for i, strategy in enumerate(s.strategies):
        wins = [s.spreads[m][i].wins for m in FAIR_METRICS]
        ax.bar(x + (i - (len(s.strategies) - 1) / 2) * width, wins, width,
               color=colour(strategy), label=strategy)
    ax.set_xticks(x, [SHORT_NAMES[m] for m in FAIR_METRICS])
    ax.set(title=f"Hosts won per strategy ({len(s.hosts)} hosts)", ylabel="hosts")
    # Room above the bars for the legend: a strategy that wins everywhere reaches the top.
    ax.set_ylim(0, max(len(s.hosts), 1) * 1.25)
    ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    ax.legend(fontsize="small", ncol=len(s.strategies), loc="upper center")
    ax.grid(axis="y", alpha=0.3)
    return fig


CHARTS = {"fleet_spread": spread_figure, "fleet_wins": wins_figure}


def render_fleet_html(s: FleetSummary, charts: dict[str, bytes]) -> str:
    rows = "".join(f"<tr><td>{escape(k)}</td><td>{escape(v)}</td></tr>" for k, v in facts(s))
    body = [f"<h1>kmemtrace fleet: {escape(s.directory)}</h1>",
            f'<table class="facts">{rows}</table>']
    if s.hosts:
        body += ["<h2>Hosts won</h2>", _wins(s), "<h2>Fair metrics over the hosts</h2>",
                 *(_metric(s, m) for m in FAIR_METRICS),
                 "<h2>Charts</h2>", *(_figure(stem, png) for stem, png in charts.items())]
    if s.failed:
        items = "".join(f"<li><code>{escape(t.path)}</code>: {escape(t.error or '')}</li>"
                        for t in s.failed)
        body += ['<h2 class="warn">Failed traces</h2>', f"<ul>{items}</ul>"]
    body.append(f"<p><small>kmemtrace {escape(__version__)}</small></p>")
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<title>kmemtrace fleet: {escape(s.directory)}</title>"
            f"<style>{CSS}</style></head><body>\n" + "\n".join(body) + "\n</body></html>\n")


def _wins(s: FleetSummary) -> str:
    head = "".join(f"<th>{escape(SHORT_NAMES[m])}</th>" for m in FAIR_METRICS)
    top = {m: max(sp.wins for sp in s.spreads[m]) for m in FAIR_METRICS}
    rows = []
    for i, strategy in enumerate(s.strategies):
        cells = "".join(
            f"<td{_BEST if top[m] and s.spreads[m][i].wins == top[m] else ''}>"
            f"{s.spreads[m][i].wins}</td>" for m in FAIR_METRICS)
        rows.append(f"<tr><th>{escape(strategy)}</th>{cells}</tr>")
    return (f"<table><thead><tr><th>strategy</th>{head}</tr></thead><tbody>"
            + "".join(rows) + "</tbody></table>")


def _metric(s: FleetSummary, metric: str) -> str:
    names = ("min", "p25", "median", "p75", "p90", "max")
    head = "".join(f"<th>{n}</th>" for n in ("hosts", *names, "wins", "worst hosts"))
    rows = []
    for sp in s.spreads[metric]:
        q = [humanise(v) for v in sp.quantiles] or [humanise(None)] * len(names)
        cells = "".join(f"<td>{escape(c)}</td>" for c in (str(sp.hosts), *q, str(sp.wins)))
        rows.append(f"<tr><th>{escape(sp.strategy)}</th>{cells}"
                    f"<td>{escape(worst_text(sp, 3))}</td></tr>")
    return (f"<h3>{escape(title(metric))}</h3><div class=\"scroll\"><table><thead><tr>"
            f"<th>strategy</th>{head}</tr></thead><tbody>" + "".join(rows)
            + "</tbody></table></div>")


def _figure(stem: str, png: bytes) -> str:
    data = base64.b64encode(png).decode("ascii")
    caption = _CAPTIONS[stem]
    return (f'<figure><img alt="{escape(caption)}" src="data:image/png;base64,{data}">'
            f"<figcaption>{escape(caption)}</figcaption></figure>")
