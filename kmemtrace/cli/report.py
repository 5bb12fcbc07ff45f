"""``kmemtrace report TRACE -o report.html``: the replay as one self-contained HTML page."""

from pathlib import Path, PurePath
from typing import Annotated

import typer

from kmemtrace.cli import app, err_console
from kmemtrace.cli.options import EraOption, ParamOption, SamplesOption, StrategyOption
from kmemtrace.cli.outputs import output_file, write_output
from kmemtrace.cli.replay import compare_strategies
from kmemtrace.cli.validate import MATCHING, validation
from kmemtrace.errors import UsageError
from kmemtrace.model.eras import DEFAULT_ERA
from kmemtrace.replay.engine import DEFAULT_SAMPLES
from kmemtrace.report.validate_out import NO_SAMPLES, render_validate_text
from kmemtrace.trace.reader import open_trace


@app.command("report")
def report_command(
    trace: Annotated[Path, typer.Argument(help="Trace directory.", show_default=False)],
    output: Annotated[Path, typer.Option(
        "--output", "-o", help="HTML file to write.")] = Path("report.html"),
    strategy: StrategyOption = "all",
    param: ParamOption = None,
    era: EraOption = DEFAULT_ERA,
    samples: SamplesOption = DEFAULT_SAMPLES,
) -> None:
    """Replay TRACE and write one HTML file: trace facts, table, charts, assumptions."""
    # Imported here: matplotlib costs every other command's start-up otherwise.
    from kmemtrace.report.html import render_html
    from kmemtrace.report.plots import render_pngs

    if samples < 2:
        raise UsageError(f"--samples {samples}: need at least 2")
    output_file(output, "--output")
    cmp = compare_strategies(trace, strategy, param, era, samples)
    reader = open_trace(trace)
    if reader.meta["counts"].get("SLAB_SAMPLE"):
        v, release, note = validation(reader, MATCHING, era)
        checked = render_validate_text(v, PurePath(trace).name, release, note)
    else:
        checked = NO_SAMPLES + "\n"
    write_output(output, render_html(cmp, render_pngs(cmp), title=trace_title(reader.meta),
                                     validation=checked))
    err_console.print(f"wrote {output}", highlight=False)


def trace_title(meta: dict) -> str:
    """What the page is about: the recorded command, or the workload and its seed."""
    workload = meta.get("workload")
    if workload:
        return f"{workload.get('name')} (synth, seed {workload.get('seed')})"
    command = " ".join(map(str, meta["command"]))
    if meta["source"] == "record" and command:
        cgroup = meta["record"].get("cgroup")
        return f"{command}" + (f" in {cgroup}" if cgroup else "") + " (record)"
    return f"{meta['source']}: {command}" if command else meta["source"]
