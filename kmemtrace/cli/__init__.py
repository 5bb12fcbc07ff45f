"""The typer app and the single error boundary.

Every command module registers itself on :data:`app`; core code raises
:class:`~kmemtrace.errors.KmemtraceError` and this module turns it into one red line, an
optional tip and the error's exit code. No traceback reaches the user for expected failures.
"""

import importlib
import sys

import typer
from rich.console import Console
from typer.core import TyperOption

from kmemtrace import __version__
from kmemtrace.errors import KmemtraceError

app = typer.Typer(
    name="kmemtrace",
    help="Record slab events attributed to memory cgroups; replay them under each "
    "dead-kmem-cache strategy (2014 RFC Ways 1-4, obj_cgroup) and compare.",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
    add_completion=False,
)
err_console = Console(stderr=True, soft_wrap=True)

_display_type_rich = TyperOption.display_type_rich


def _flag_has_no_type(self: TyperOption, ctx) -> str | None:
    """A flag takes no value, but typer 0.29's help prints ``--in-memcg <bool>`` as if it
    did; every command's flags (--json, --all, --force, --help) showed the same."""
    return None if self.is_flag else _display_type_rich(self, ctx)


TyperOption.display_type_rich = _flag_has_no_type


def _version(value: bool) -> None:
    if value:
        print(f"kmemtrace {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Print the version and exit."
    ),
) -> None:
    """kmemtrace: which way to destroy dead memcgs' kmem caches is best for *your* workload."""


# Each module adds its command(s) to `app` when imported.
COMMAND_MODULES: tuple[str, ...] = (
    "synth", "info", "record", "top", "doctor", "replay", "report", "compare", "validate", "lab",
    "fleet",
)


def _register(argv: list[str]) -> None:
    """Import the one command module the command line names, or all of them (for help).

    Each module pulls in what its command needs (numba, pandas, dask...): importing them
    all cost ~0.9 s here before any command ran, and minutes in a TCG guest whose Python
    files come over 9p (`kmemtrace lab`).
    """
    name = next((a for a in argv if not a.startswith("-")), None)
    for module in (name,) if name in COMMAND_MODULES else COMMAND_MODULES:
        importlib.import_module(f"kmemtrace.cli.{module}")


def main() -> None:
    """Console-script entry point: every expected failure is one line and an exit code.

    Runs typer outside standalone mode so that its own usage errors (unknown option, bad
    value) come back here too, instead of as a multi-line box.
    """
    _register(sys.argv[1:])
    try:
        rc = app(standalone_mode=False)
    except KmemtraceError as exc:
        _fail(str(exc), exc.exit_code, exc.tip)
    except typer.Abort:
        _fail("aborted", 130)
    except typer.TyperException as exc:  # click's usage errors, vendored by typer
        _fail(exc.format_message(), getattr(exc, "exit_code", 2))
    sys.exit(rc if isinstance(rc, int) else 0)


def _fail(message: str, code: int, tip: str | None = None) -> None:
    err_console.print(f"[bold red]kmemtrace:[/] {message}", highlight=False)
    if tip:
        err_console.print(f"[dim]Tip:[/] {tip}", highlight=False)
    sys.exit(code)
