"""Output paths, checked before the work and written with one-line errors.

Why before: a replay of a large trace used to run for seconds and then die on ``--json
DIR`` with a traceback. Every command checks each output path first: a file must not be a
directory, a directory must not be a file, and the parent must already exist and take a
new file (a probe file is created and removed, because as root ``os.access`` says yes to
``/proc`` and to read-only mounts). No command creates missing parents: a typo in a path
would otherwise leave a directory tree somewhere unexpected.
"""

import os
import tempfile
from pathlib import Path

from kmemtrace.cli import err_console
from kmemtrace.errors import KmemtraceError, UsageError


def _writable_dir(directory: Path, option: str, path: Path) -> None:
    if not directory.exists():
        raise UsageError(f"{option} {path}: directory {directory} does not exist "
                         "(kmemtrace does not create parent directories)")
    if not directory.is_dir():
        raise UsageError(f"{option} {path}: {directory} is not a directory")
    try:
        with tempfile.TemporaryFile(dir=directory):
            pass
    except OSError as exc:
        raise UsageError(f"{option} {path}: cannot write in {directory} "
                         f"({exc.strerror or exc})") from None


def output_file(path: Path, option: str) -> Path:
    """A file to (over)write: not a directory, in an existing writable directory."""
    if path.is_dir():
        raise UsageError(f"{option} {path}: is a directory; give a file name")
    if path.exists():
        try:
            with open(path, "r+b"):
                pass
        except OSError as exc:
            raise UsageError(f"{option} {path}: cannot write it ({exc.strerror or exc})") \
                from None
    else:
        _writable_dir(path.parent, option, path)
    return path


def output_dir(path: Path, option: str, *, empty: bool = False, force: bool = False) -> Path:
    """A directory to write into; ``empty``: it must be new or empty unless ``force``."""
    if path.exists():
        if not path.is_dir():
            raise UsageError(f"{option} {path}: exists and is not a directory")
        if empty and not force and any(path.iterdir()):
            raise UsageError(f"{option} {path}: already exists and is not empty; choose "
                             "another path or pass --force")
        _writable_dir(path, option, path)
    else:
        _writable_dir(path.parent, option, path)
    return path


def write_output(path: Path, text: str) -> None:
    """Write ``text``; a failure now (disk full, removed directory) is one line too."""
    try:
        path.write_text(text, encoding="utf-8")
    except OSError as exc:
        raise KmemtraceError(f"{path}: could not write ({exc.strerror or exc})") from None


def write_charts(subject, plot_dir: Path, charts: dict | None = None) -> None:
    """``--plot DIR``: every chart as ``<stem>.png`` (``charts``: the fleet's, or the
    comparison's by default), one line per file written, a one-line error if it fails."""
    # Imported here: matplotlib costs every other command's start-up otherwise.
    from kmemtrace.report.plots import CHARTS, write_plots

    try:
        paths = write_plots(subject, plot_dir, charts or CHARTS)
    except OSError as exc:
        raise KmemtraceError(f"{plot_dir}: could not write the charts "
                             f"({exc.strerror or exc})") from None
    for path in paths:
        err_console.print(f"wrote {path}", highlight=False)


def is_probably_option(arg: str) -> bool:
    """``-x`` or ``--name``, but not ``-`` and not a path that exists under that name."""
    return arg.startswith("-") and arg != "-" and not os.path.exists(arg)
