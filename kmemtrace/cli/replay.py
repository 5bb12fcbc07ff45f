"""``kmemtrace replay TRACE``: replay a trace under each strategy and compare them.

Choices, help and errors come from the strategy registry and the era table, so a new
strategy module shows up here with no change to this file. All printing happens here;
the report layer only builds renderables and strings.
"""

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from kmemtrace.cli import app, err_console
from kmemtrace.cli.options import (
    EraOption,
    FormatOption,
    ParamOption,
    SamplesOption,
    StrategyOption,
)
from kmemtrace.cli.outputs import output_dir, output_file, write_charts, write_output
from kmemtrace.errors import UsageError
from kmemtrace.model.compiled import COMPILE_SECONDS, engine_is_compiled
from kmemtrace.model.eras import DEFAULT_ERA, get_era
from kmemtrace.params import split_params
from kmemtrace.replay.engine import DEFAULT_SAMPLES, replay
from kmemtrace.report.comparison import Comparison
from kmemtrace.report.format import param_value
from kmemtrace.report.jsonout import dumps
from kmemtrace.report.terminal import render
from kmemtrace.report.text import render_text
from kmemtrace.strategies import REGISTRY, select
from kmemtrace.trace.reader import TraceReader, open_trace

FORMATS = ("rich", "text")
PROGRESS_MIN_EVENTS = 1_000_000  # below this a replay ends before a bar is worth drawing


def list_strategies() -> str:
    """The registry as plain text: name, title, where it lived, parameters."""
    lines = []
    for s in REGISTRY.values():
        lines += [f"{s.name:<8} {s.title}", f"{'':<8} kernel: {s.kernel}"]
        lines += [f"{'':<8} --param {p.name}={param_value(p, p.default)} ({p.kind}): {p.help}"
                  for p in s.params]
    return "\n".join(lines)


@contextmanager
def _progress(total: int) -> Iterator[Callable[[int], None] | None]:
    """A transient bar on stderr for long replays; ``None`` (no bar) for short ones.

    Not drawn when stderr is a file or pipe: there it would leave a blank line behind.
    """
    if total <= PROGRESS_MIN_EVENTS or not err_console.is_terminal:
        yield None
        return
    columns = (TextColumn("replaying"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    with Progress(*columns, console=err_console, transient=True) as bar:
        task = bar.add_task("replay", total=total)
        yield lambda n: bar.advance(task, n)


@app.command("replay")
def replay_command(
    trace: Annotated[Path | None, typer.Argument(
        help="Trace directory.", show_default=False)] = None,
    strategy: StrategyOption = "all",
    param: ParamOption = None,
    era: EraOption = DEFAULT_ERA,
    fmt: FormatOption = "rich",
    json_path: Annotated[Path | None, typer.Option(
        "--json", help="Also write metrics, assumptions and series as JSON to this file.",
        show_default=False)] = None,
    samples: SamplesOption = DEFAULT_SAMPLES,
    show_strategies: Annotated[bool, typer.Option(
        "--list-strategies", help="List strategies and their parameters, then exit.")] = False,
    plot_dir: Annotated[Path | None, typer.Option(
        "--plot", help="Also write PNG charts (pinned pages, dead caches, destroy latency, "
        "hot-path costs) into this directory.", show_default=False)] = None,
    cpus: Annotated[int | None, typer.Option(
        "--cpus", help="What if the host had N CPUs: recorded CPUs are split and tasks "
        "hashed onto them by pid (docs/replay.md). Default: the recorded count.",
        show_default=False)] = None,
) -> None:
    """Replay TRACE under each strategy and compare pinned pages, dead caches and costs."""
    if show_strategies:
        print(list_strategies())
        return
    if fmt not in FORMATS:
        raise UsageError(f"unknown --format {fmt!r} (formats: {', '.join(FORMATS)})")
    if samples < 2:
        raise UsageError(f"--samples {samples}: need at least 2")
    if cpus is not None and cpus < 1:
        raise UsageError(f"--cpus {cpus}: need at least 1")
    if trace is None:
        raise UsageError("missing TRACE (a trace directory)",
                         tip="kmemtrace replay --list-strategies needs none")
    if json_path is not None:
        output_file(json_path, "--json")
    if plot_dir is not None:
        output_dir(plot_dir, "--plot")
    cmp = compare_strategies(trace, strategy, param, era, samples, cpus)
    if fmt == "text":
        print(render_text(cmp), end="")
    else:
        Console().print(render(cmp))
    if json_path is not None:
        write_output(json_path, dumps(cmp))
    if plot_dir is not None:
        write_charts(cmp, plot_dir)


def warn_about(reader: TraceReader) -> None:
    """The trace's own warnings, on stderr, before any result is printed."""
    for line in reader.warnings():
        err_console.print(f"[bold yellow]warning:[/] {reader.path}: {line}", highlight=False)


def announce_compile() -> None:
    """One line before numba's first compile, which is otherwise a silent pause."""
    if not engine_is_compiled():
        err_console.print(f"compiling the replay engine once (~{COMPILE_SECONDS} s; cached "
                          "for later runs)", highlight=False)


def compare_strategies(trace: Path, strategy: str, param: list[str] | None, era: str,
                       samples: int, cpus: int | None = None) -> Comparison:
    """Replay one trace under the selected strategies (with a progress bar if long)."""
    # Reject bad names before reading anything.
    selection = select(strategy, split_params(param))
    get_era(era)
    reader = open_trace(trace)
    warn_about(reader)
    announce_compile()
    with _progress(reader.n_events) as progress:
        result = replay(reader, selection, era=era, samples=samples, progress=progress,
                        cpus=cpus, slab_samples=False)
    return Comparison.from_replay(result)
