"""``kmemtrace fleet replay|report``: many traces on Dask, and the view over the hosts.

``replay`` checks every argument (strategies, era, output directory, that traces were
given) before it starts a cluster; a trace that cannot be replayed is reported on its own
line and the run goes on. It exits 3 after writing everything when any trace failed, so
a script notices.
"""

import glob
from contextlib import nullcontext
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

from kmemtrace.cli import app, err_console
from kmemtrace.cli.options import (
    EraOption,
    FormatOption,
    ParamOption,
    SamplesOption,
    StrategyOption,
)
from kmemtrace.cli.outputs import output_dir, output_file, write_charts, write_output
from kmemtrace.errors import TraceFormatError, UsageError
from kmemtrace.model.eras import DEFAULT_ERA, get_era
from kmemtrace.params import split_params
from kmemtrace.replay.engine import DEFAULT_SAMPLES
from kmemtrace.strategies import select

fleet = typer.Typer(help="Replay many traces on a Dask cluster (a local one by default) "
                    "and report over the hosts.", no_args_is_help=True)
app.add_typer(fleet, name="fleet")
FORMATS = ("rich", "text")
NO_CLUSTER = "no cluster needed"


def _jsonable(params: dict) -> dict:
    return {k: (v.item() if hasattr(v, "item") else v) for k, v in params.items()}


def trace_paths(traces: list[Path], pattern: str | None) -> list[Path]:
    """The TRACE arguments, then the --glob matches (sorted), each once, in that order."""
    paths = list(traces)
    if pattern is not None:
        matches = sorted(glob.glob(pattern, recursive=True))
        if not matches:
            raise UsageError(f"--glob {pattern!r} matches nothing")
        paths += [Path(m) for m in matches]
    if not paths:
        raise UsageError("no traces: give TRACE directories or --glob PATTERN")
    return list(dict.fromkeys(paths))


@fleet.command("replay")
def fleet_replay(
    traces: Annotated[list[Path] | None, typer.Argument(
        help="Trace directories.", show_default=False)] = None,
    pattern: Annotated[str | None, typer.Option(
        "--glob", help="Trace directories matching this pattern (quote it; ** recurses).",
        show_default=False)] = None,
    output: Annotated[Path | None, typer.Option(
        "--output", "-o", help="Results directory (created; rerun into it to skip done work).",
        show_default=False)] = None,
    scheduler: Annotated[str | None, typer.Option(
        help="Address of an existing Dask scheduler (tcp://host:8786); default: a local "
        "cluster.", show_default=False)] = None,
    workers: Annotated[int | None, typer.Option(
        help="Local cluster size (default: one worker per CPU).", show_default=False)] = None,
    strategy: StrategyOption = "all",
    param: ParamOption = None,
    era: EraOption = DEFAULT_ERA,
    samples: SamplesOption = DEFAULT_SAMPLES,
) -> None:
    """Replay every TRACE under every strategy as Dask tasks; results in one Parquet table."""
    from kmemtrace.fleet.results import ResultStore, RunSpec
    from kmemtrace.fleet.run import connect, plan_fleet, run_fleet

    selection = select(strategy, split_params(param))
    get_era(era)
    if samples < 2:
        raise UsageError(f"--samples {samples}: need at least 2")
    if workers is not None and (workers < 1 or scheduler):
        raise UsageError(f"--workers {workers}: " + (
            "sizes the local cluster; an existing one (--scheduler) has its own"
            if scheduler else "need at least 1"))
    if output is None:
        raise UsageError("fleet replay needs -o DIR (the results directory)")
    output_dir(output, "-o")
    paths = trace_paths(traces or [], pattern)
    specs = [RunSpec(s.name, _jsonable(p), era, samples) for s, p in selection]
    store = ResultStore(output)
    reported: set[str] = set()

    def report_failure(out) -> None:
        if out.status == "failed" and out.path not in reported:
            reported.add(out.path)
            err_console.print(f"[bold red]failed:[/] {out.path}: {out.error}", highlight=False)

    plan = plan_fleet(paths, specs, store, on_task=report_failure)
    cluster = connect(scheduler, workers) if plan.todo else nullcontext((None, NO_CLUSTER, 0))
    with cluster as (client, where, n_workers), Progress(
            TextColumn("replaying"), BarColumn(), MofNCompleteColumn(), console=err_console,
            transient=True, disable=not err_console.is_terminal) as bar:
        task = bar.add_task("fleet", total=len(plan.todo))

        def on_task(out) -> None:
            bar.advance(task)
            report_failure(out)

        manifest = run_fleet(client, plan, store, scheduler=where, workers=n_workers,
                             on_task=on_task, say=lambda s: err_console.print(s, highlight=False))
    counts = {k: sum(t.status == k for t in manifest.traces)
              for k in ("done", "skipped", "duplicate")}
    err_console.print(
        f"fleet: {len(paths)} traces x {len(specs)} strategies: "
        f"{sum(t.tasks for t in manifest.traces)} replays on {n_workers} workers ({where}) "
        f"in {manifest.wall_s:.3g} s; traces done {counts['done']}, done before "
        f"{counts['skipped']}, duplicates {counts['duplicate']}, failed "
        f"{len(manifest.failed)}; results in {store.results} (one Parquet table)",
        highlight=False)
    if manifest.failed:
        raise TraceFormatError(f"{len(manifest.failed)} of {len(paths)} traces could not be "
                               f"replayed (listed above and in {output}/fleet.json)")


@fleet.command("report")
def fleet_report(
    directory: Annotated[Path, typer.Argument(
        help="A `fleet replay` results directory.", show_default=False)],
    fmt: FormatOption = "rich",
    html: Annotated[Path | None, typer.Option(
        "--html", help="Also write the view as one self-contained HTML file.",
        show_default=False)] = None,
    plot_dir: Annotated[Path | None, typer.Option(
        "--plot", help="Also write the charts as PNG files into this directory.",
        show_default=False)] = None,
) -> None:
    """Per strategy: the fair metrics over the hosts, the worst hosts, hosts won."""
    from kmemtrace.fleet.summary import summarise
    from kmemtrace.report.fleet_out import render_fleet, render_fleet_text

    if fmt not in FORMATS:
        raise UsageError(f"unknown --format {fmt!r} (formats: {', '.join(FORMATS)})")
    if html is not None:
        output_file(html, "--html")
    if plot_dir is not None:
        output_dir(plot_dir, "--plot")
    summary = summarise(directory)
    if fmt == "text":
        print(render_fleet_text(summary), end="")
    else:
        Console().print(render_fleet(summary))
    if html is None and plot_dir is None:
        return
    # Imported here: matplotlib costs the text view's start-up otherwise.
    from kmemtrace.report.fleet_html import CHARTS, render_fleet_html
    from kmemtrace.report.plots import render_pngs

    if html is not None:
        write_output(html, render_fleet_html(summary, render_pngs(summary, CHARTS)))
        err_console.print(f"wrote {html}", highlight=False)
    if plot_dir is not None:
        write_charts(summary, plot_dir, CHARTS)
