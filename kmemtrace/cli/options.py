"""Options shared by the commands that replay (replay, report, compare, validate): one
definition each, so their names, help and defaults cannot drift apart."""

from typing import Annotated

import typer

from kmemtrace.model.eras import ERAS
from kmemtrace.strategies import REGISTRY

StrategyOption = Annotated[str, typer.Option(
    "--strategy", "-s", help=f"'all' or a comma list of: {', '.join(REGISTRY)}.")]
ParamOption = Annotated[list[str] | None, typer.Option(
    "--param", "-p", help="name=value for every selected strategy that has it "
    "(see replay --list-strategies); repeatable.", show_default=False)]
EraOption = Annotated[str, typer.Option(help=f"SLUB behaviour to model: {', '.join(ERAS)}.")]
FormatOption = Annotated[str, typer.Option(
    "--format", help="rich (terminal table) or text (72 columns, for a mailing list).")]
SamplesOption = Annotated[int, typer.Option(help="Time-series points per strategy.")]
