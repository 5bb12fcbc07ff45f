"""``kmemtrace synth``: write a synthetic workload's trace (``--list`` shows the workloads)."""

import sys
import time
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

from kmemtrace.cli import app
from kmemtrace.cli.outputs import output_dir
from kmemtrace.errors import UsageError
from kmemtrace.params import ParamSpec, parse_count, split_params
from kmemtrace.synth import WORKLOADS, synthesize, write_synthesis

PROGRESS_MIN_EVENTS = 1_000_000  # below this the whole run is under a second


def _default_text(spec: ParamSpec) -> str:
    if spec.kind == "duration":
        return f"{spec.default / 1e9:g}s"
    return str(spec.default)


def _print_list(console: Console) -> None:
    for workload in WORKLOADS.values():
        console.print(f"[bold]{workload.name}[/]  {workload.summary}", highlight=False)
        for spec in workload.params:
            console.print(f"    {spec.name}={_default_text(spec)}  [dim]({spec.kind})[/] "
                          f"{spec.help}", highlight=False)


@app.command()
def synth(
    workload: Annotated[str | None, typer.Argument(help="Workload name (see --list).")] = None,
    output: Annotated[
        Path | None, typer.Option("-o", "--output", help="Trace directory to write.")
    ] = None,
    seed: Annotated[int | None, typer.Option(help="Random seed: same seed, same trace.")] = None,
    events: Annotated[str, typer.Option(help="Approximate event count (50k, 10M).")] = "1M",
    param: Annotated[
        list[str] | None, typer.Option("--param", "-p", help="Workload parameter k=v.")
    ] = None,
    force: Annotated[bool, typer.Option(help="Overwrite a non-empty output directory.")] = False,
    list_workloads: Annotated[
        bool, typer.Option("--list", help="List workloads and their parameters.")
    ] = False,
) -> None:
    """Generate a synthetic trace (deterministic for a seed)."""
    console = Console(soft_wrap=True)
    if list_workloads:
        _print_list(console)
        return
    if workload is None:
        raise UsageError("synth needs a WORKLOAD (see kmemtrace synth --list)")
    if output is None:
        raise UsageError("synth needs -o TRACE_DIR")
    if seed is None:
        raise UsageError("synth needs --seed N (the same seed gives the same trace)")
    n_events = parse_count(events)
    raw = split_params(param)
    output_dir(output, "-o", empty=True, force=force)

    started = time.perf_counter()
    with Progress(TextColumn("{task.description}"), BarColumn(), TimeElapsedColumn(),
                  console=Console(stderr=True), transient=True,
                  disable=n_events < PROGRESS_MIN_EVENTS) as bar:
        gen = bar.add_task(f"generating {workload}", total=None)
        synthesis, params = synthesize(workload, seed=seed, n_events=n_events, raw_params=raw)
        bar.remove_task(gen)
        task = bar.add_task(f"writing {output}", total=synthesis.approx_events)
        writer = write_synthesis(
            output, synthesis, workload=workload, seed=seed, params=params,
            command=["kmemtrace", *sys.argv[1:]], overwrite=force,
            on_rows=lambda n: bar.advance(task, n),
        )
    elapsed = time.perf_counter() - started
    console.print(
        f"wrote {output}: {writer.rows_written:,} events in {len(writer.meta['parts'])} parts, "
        f"{writer.bytes_written / 1e6:.1f} MB, {elapsed:.1f} s", highlight=False,
    )
