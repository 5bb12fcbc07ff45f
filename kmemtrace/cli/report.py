"""``kmemtrace report TRACE -o report.html``: the replay as one self-contained HTML page."""

from pathlib import Path
from typing import Annotated

import typer

from kmemtrace.cli import app, err_console
from kmemtrace.cli.replay import compare_strategies
from kmemtrace.errors import UsageError
from kmemtrace.model.eras import DEFAULT_ERA, ERAS
from kmemtrace.replay.engine import DEFAULT_SAMPLES
from kmemtrace.strategies import REGISTRY


@app.command("report")
def report_command(
    trace: Annotated[Path, typer.Argument(help="Trace directory.", show_default=False)],
    output: Annotated[Path, typer.Option(
        "--output", "-o", help="HTML file to write.")] = Path("report.html"),
    strategy: Annotated[str, typer.Option(
        "--strategy", "-s",
        help=f"'all' or a comma list of: {', '.join(REGISTRY)}.")] = "all",
    param: Annotated[list[str] | None, typer.Option(
        "--param", "-p", help="name=value for every selected strategy that has it; "
        "repeatable.", show_default=False)] = None,
    era: Annotated[str, typer.Option(
        help=f"SLUB behaviour to model: {', '.join(ERAS)}.")] = DEFAULT_ERA,
    samples: Annotated[int, typer.Option(help="Time-series points per strategy.")]
    = DEFAULT_SAMPLES,
) -> None:
    """Replay TRACE and write one HTML file: trace facts, table, charts, assumptions."""
    # Imported here: matplotlib costs every other command's start-up otherwise.
    from kmemtrace.report.html import render_html
    from kmemtrace.report.plots import render_pngs

    if samples < 2:
        raise UsageError(f"--samples {samples}: need at least 2")
    cmp = compare_strategies(trace, strategy, param, era, samples)
    output.write_text(render_html(cmp, render_pngs(cmp)), encoding="utf-8")
    err_console.print(f"wrote {output}", highlight=False)
