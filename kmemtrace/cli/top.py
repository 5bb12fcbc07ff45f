"""``kmemtrace top``: a live view of memcgs (online and dying) and the slab they hold.

The recorder does the work, exactly as for ``record`` (root, tracefs, BCC and headers
checks, attach plan, draining, loss accounting); ``top`` puts a
:class:`~kmemtrace.top.state.TopState` on its tap and shows a snapshot every interval.
"""

import contextlib
import json
import os
import select
import shutil
import sys
import termios
import time
import tty
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.live import Live
from rich.text import Text

from kmemtrace.cli import app, err_console
from kmemtrace.cli.options import EraOption, ParamOption, StrategyOption
from kmemtrace.cli.record import loss_sentence, start_recorder
from kmemtrace.errors import UsageError
from kmemtrace.live.feed import LiveWhatIf
from kmemtrace.live.view import final_json, final_sentence, final_table
from kmemtrace.live.view import render as render_whatif
from kmemtrace.model.eras import DEFAULT_ERA
from kmemtrace.params import parse_duration_ns, split_params
from kmemtrace.record.recorder import Recorder, RecordOptions
from kmemtrace.top.render import plain, screen
from kmemtrace.top.session import TopSession
from kmemtrace.top.snapshot import SORTS

READY = "kmemtrace top: watching"  # the stderr line scripts (and tests) wait for


@app.command()
def top(
    interval: Annotated[str, typer.Option(help="Refresh period (e.g. 2s, 500ms).")] = "2s",
    cgroup: Annotated[str | None, typer.Option(
        help="Only this memcg subtree (path in the memory hierarchy, e.g. /mygroup).")] = None,
    count: Annotated[int, typer.Option("-n", "--count",
                                       help="Rows per table.")] = 20,
    sort: Annotated[str, typer.Option(
        help="Memcgs worst first by: bytes (live slab) | rate (allocs+frees/s) | age "
        "(longest dead first).")] = "bytes",
    once: Annotated[bool, typer.Option(
        "--once", help="Watch one interval, print one snapshot, exit (like top -b -n 1).")] = False,
    fmt: Annotated[str, typer.Option("--format", help="--once output: text | json.")] = "text",
    record_to: Annotated[Path | None, typer.Option(
        "--record-to", help="Also keep a normal trace of the session in this directory.")] = None,
    what_if: Annotated[bool, typer.Option(
        "--what-if", help="Also replay the strategies on the events as they come: per "
        "strategy the footprint, stranded slab, dying memcgs and dead caches now.")] = False,
    strategy: StrategyOption = "all",
    param: ParamOption = None,
    era: EraOption = DEFAULT_ERA,
) -> None:
    """Live view of memcgs (online and dying) and the slab they hold; q or Ctrl-C quits."""
    if sort not in SORTS:
        raise UsageError(f"--sort {sort}: expected {', '.join(SORTS)}")
    if fmt not in ("text", "json"):
        raise UsageError(f"--format {fmt}: expected text or json")
    if fmt == "json" and not once:
        raise UsageError("--format json needs --once (one snapshot, for scripts)")
    if count < 1:
        raise UsageError(f"-n {count}: must be at least 1")
    interval_s = parse_duration_ns(interval) / 1e9
    if interval_s <= 0:
        raise UsageError(f"--interval {interval}: must be longer than 0")
    opts = RecordOptions(output=record_to, cgroup=cgroup, command=["kmemtrace", "top"])
    whatif = LiveWhatIf(strategy, split_params(param), era) if what_if else None
    rec = start_recorder(opts, whatif)
    session = TopSession(rec, interval_s, sort, count)
    err_console.print(f"{READY} (every {interval_s:g}s"
                      + (f", recording to {record_to}" if record_to else "") + ")",
                      highlight=False, soft_wrap=True)
    try:
        if once:
            end = time.monotonic() + interval_s
            rec.run(lambda: time.monotonic() >= end)
            snap = session.snapshot()
        else:
            _live(rec, session, interval_s, whatif)
    except BaseException:
        if whatif is not None:
            whatif.stop()
        raise
    finally:
        meta = rec.stop()
    final = whatif.close(meta) if whatif is not None else None
    if once and fmt == "json":
        out = snap.to_json()
        if final is not None:
            out["what_if"] = final_json(final)
        sys.stdout.write(json.dumps(out, indent=1) + "\n")
    elif once:
        sys.stdout.write(plain(snap, width=max(_width(), 100)))
    if final is not None and fmt != "json":
        console = Console(width=max(_width(), 100))
        console.print(final_table(final))
        console.print(final_sentence(final), highlight=False, soft_wrap=True)
    lost = sum(session.state.lost_at_stop.values())
    err_console.print(f"kmemtrace top: saw {session.state.events:,} slab events in "
                      f"{(meta['clock']['end_ns'] - rec.start_ns) / 1e9:.1f} s, lost {lost:,}"
                      + (f"; trace sealed in {record_to}: {loss_sentence(meta['lost'])}"
                         if record_to is not None else ""), highlight=False, soft_wrap=True)


def _width() -> int:
    """The terminal's width, or $COLUMNS, or 160 for a pipe (top -b prints wide too)."""
    return shutil.get_terminal_size((160, 24)).columns


def _live(rec: Recorder, session: TopSession, interval_s: float,
          whatif: LiveWhatIf | None) -> None:
    """Full screen until q, Ctrl-C or SIGTERM."""
    console = Console()
    with _keys() as pressed, Live(console=console, screen=True, auto_refresh=False) as live:
        def tick() -> None:
            extra = ()
            if whatif is not None:
                whatif.poll()
                extra = (Text(""), render_whatif(whatif))
            live.update(screen(session.snapshot(), extra), refresh=True)

        rec.run(lambda: "q" in pressed(), tick, tick_interval_s=interval_s)


@contextlib.contextmanager
def _keys():
    """Yield a function returning the keys typed since its last call ('' if stdin is not a
    terminal); the terminal is in cbreak mode meanwhile (keys arrive unbuffered, unechoed)."""
    fd = sys.stdin.fileno() if sys.stdin is not None else -1
    if fd < 0 or not os.isatty(fd):
        yield lambda: ""
        return
    saved = termios.tcgetattr(fd)
    tty.setcbreak(fd)

    def pressed() -> str:
        keys = ""
        while select.select([fd], [], [], 0)[0]:
            chunk = os.read(fd, 64)
            if not chunk:
                break
            keys += chunk.decode(errors="replace").lower()
        return keys

    try:
        yield pressed
    finally:
        termios.tcsetattr(fd, termios.TCSADRAIN, saved)
