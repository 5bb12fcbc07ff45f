"""``kmemtrace compare A B`` / ``compare A1 A2 A3 -- B1 B2 B3``: two sides, metric by metric.

Every trace is replayed under the same strategies, parameters and era; the statistics
live in :mod:`kmemtrace.report.compare`.
"""

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from typer.core import TyperCommand

from kmemtrace.cli import app
from kmemtrace.cli.options import EraOption, FormatOption, ParamOption, StrategyOption
from kmemtrace.cli.replay import FORMATS, compare_strategies
from kmemtrace.errors import UsageError
from kmemtrace.model.eras import DEFAULT_ERA
from kmemtrace.report.compare import side_by_side
from kmemtrace.report.compare_out import compare_json, render_compare, render_compare_text

_AFTER_SEPARATOR = "kmemtrace.after_separator"


class SplitAtSeparator(TyperCommand):
    """Remembers how many arguments followed ``--``: the parser drops the ``--`` itself."""

    def parse_args(self, ctx, args: list[str]) -> list[str]:
        if "--" in args:
            ctx.meta[_AFTER_SEPARATOR] = len(args) - args.index("--") - 1
        return super().parse_args(ctx, args)


def split_sides(traces: list[Path], after_separator: int | None) -> tuple[list, list]:
    """A, B from ``A B`` or from ``A... -- B...``."""
    if after_separator is None:
        if len(traces) != 2:
            raise UsageError(f"{len(traces)} traces and no '--': give A B, or "
                             "A1 A2 ... -- B1 B2 ...")
        return traces[:1], traces[1:]
    a, b = traces[:len(traces) - after_separator], traces[len(traces) - after_separator:]
    if not a or not b:
        raise UsageError("each side of '--' needs at least one trace")
    return a, b


@app.command("compare", cls=SplitAtSeparator)
def compare_command(
    ctx: typer.Context,
    traces: Annotated[list[Path], typer.Argument(
        help="A B, or A1 A2 ... -- B1 B2 ... (several runs per side enable the test; "
        "options go before the --).",
        show_default=False)],
    strategy: StrategyOption = "all",
    param: ParamOption = None,
    era: EraOption = DEFAULT_ERA,
    fmt: FormatOption = "rich",
    json_path: Annotated[Path | None, typer.Option(
        "--json", help="Also write every value, p and verdict as JSON to this file.",
        show_default=False)] = None,
) -> None:
    """Compare traces of one workload (A vs B): values, ratio, and whether it is noise."""
    if fmt not in FORMATS:
        raise UsageError(f"unknown --format {fmt!r} (formats: {', '.join(FORMATS)})")
    side_a, side_b = split_sides(traces, ctx.meta.get(_AFTER_SEPARATOR))
    # Series are not compared; two samples keep each replay's bookkeeping minimal.
    sides = [[compare_strategies(t, strategy, param, era, 2) for t in side]
             for side in (side_a, side_b)]
    sbs = side_by_side(*sides)
    if fmt == "text":
        print(render_compare_text(sbs), end="")
    else:
        Console().print(render_compare(sbs))
    if json_path is not None:
        json_path.write_text(compare_json(sbs))
