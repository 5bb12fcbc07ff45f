"""``kmemtrace compare A B`` / ``compare A1 A2 A3 -- B1 B2 B3``: two sides, metric by metric.

Every trace is replayed under the same strategies, parameters and era; the statistics
live in :mod:`kmemtrace.report.compare`.
"""

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from typer.core import TyperCommand, TyperOption

from kmemtrace.cli import app
from kmemtrace.cli.options import EraOption, FormatOption, ParamOption, StrategyOption
from kmemtrace.cli.outputs import is_probably_option, output_file, write_output
from kmemtrace.cli.replay import FORMATS, compare_strategies
from kmemtrace.errors import UsageError
from kmemtrace.model.eras import DEFAULT_ERA
from kmemtrace.report.compare import side_by_side
from kmemtrace.report.compare_out import compare_json, render_compare, render_compare_text

_AFTER_SEPARATOR = "kmemtrace.after_separator"


class SplitAtSeparator(TyperCommand):
    """Remembers how many traces followed ``--`` (the parser drops the ``--`` itself).

    Options written after ``--`` (``compare A -- B --json out.json``) would be taken as
    traces; they are moved in front of it, with their value, before click parses.
    """

    def parse_args(self, ctx, args: list[str]) -> list[str]:
        if "--" in args:
            cut = args.index("--")
            before, after = args[:cut], args[cut + 1:]
            traces = []
            while after:
                arg = after.pop(0)
                if not is_probably_option(arg):
                    traces.append(arg)
                    continue
                before.append(arg)  # an unknown option is then click's usual error
                option = self._option(arg.split("=", 1)[0])
                if option is not None and not option.is_flag and "=" not in arg and after:
                    before.append(after.pop(0))
            ctx.meta[_AFTER_SEPARATOR] = len(traces)
            args = [*before, "--", *traces]
        return super().parse_args(ctx, args)

    def _option(self, name: str):
        return next((p for p in self.params
                     if isinstance(p, TyperOption) and name in p.opts + p.secondary_opts), None)


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
        "options may go anywhere).",
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
    if json_path is not None:
        output_file(json_path, "--json")
    # Series are not compared; two samples keep each replay's bookkeeping minimal.
    sides = [[compare_strategies(t, strategy, param, era, 2) for t in side]
             for side in (side_a, side_b)]
    sbs = side_by_side(*sides)
    if fmt == "text":
        print(render_compare_text(sbs), end="")
    else:
        Console().print(render_compare(sbs))
    if json_path is not None:
        write_output(json_path, compare_json(sbs))
