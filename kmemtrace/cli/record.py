"""``kmemtrace record``: trace slab and memcg events into a sealed trace directory."""

import json
import shutil
import signal
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Group
from rich.live import Live
from rich.text import Text

from kmemtrace.cli import app, err_console
from kmemtrace.cli.options import EraOption, ParamOption, StrategyOption
from kmemtrace.cli.outputs import output_file, write_output
from kmemtrace.errors import UsageError
from kmemtrace.model.eras import DEFAULT_ERA
from kmemtrace.params import parse_duration_ns, split_params
from kmemtrace.record import probes
from kmemtrace.record.inmemcg import FreshMemcg
from kmemtrace.record.recorder import (
    BPF_SOURCE,
    Recorder,
    RecordOptions,
    cflags,
    prepare,
)

if TYPE_CHECKING:  # the live what-if (replay engine, numba, pandas) loads only with --live
    from kmemtrace.live.feed import Final, LiveWhatIf


@app.command(context_settings={"allow_interspersed_args": False})
def record(
    output: Annotated[Path | None, typer.Option("-o", "--output",
                                                help="Trace directory to create.")] = None,
    duration: Annotated[str | None, typer.Option(help="Stop after this long (e.g. 30s).")] = None,
    cgroup: Annotated[str | None, typer.Option(
        help="Only tasks in this memcg subtree (path in the memory hierarchy, e.g. /mygroup)."
    )] = None,
    all_objects: Annotated[bool, typer.Option(
        "--all-objects", help="Record every slab object, not only memcg-accounted ones.")] = False,
    page_cache: Annotated[bool, typer.Option(
        "--page-cache/--no-page-cache",
        help="Record page-cache insertions and removals (PAGE_CACHE rows: what holds an "
        "offline memcg besides slab).")] = True,
    shrink_at_start: Annotated[bool, typer.Option(
        "--shrink-at-start", help="Shrink every slab cache right before its first sample "
        "(as `slabinfo -s`: CPU slabs flushed, empty slabs freed), so that the sample says "
        "how many objects are live; the replay's start is then the kernel's.")] = False,
    print_bpf: Annotated[bool, typer.Option(
        "--print-bpf", help="Print the BPF program and its -D flags, then exit.")] = False,
    in_memcg: Annotated[bool, typer.Option(
        "--in-memcg", help="Run COMMAND in a fresh memcg, remove it when the command ends, "
        "record a grace period, stop.")] = False,
    grace: Annotated[str, typer.Option(
        help="--in-memcg: keep recording this long after removing the memcg.")] = "2s",
    transport: Annotated[str, typer.Option(
        help="auto | ringbuf | perf (perf buffers: kernels before 5.8).")] = "auto",
    sample_interval: Annotated[str, typer.Option(
        help="Period of the /sys/kernel/slab samples.")] = "1s",
    lifecycle: Annotated[str, typer.Option(
        help="How memcg offline/free, cache destroy and free_bulk are caught, first that "
        "works: auto (patched tracepoint, fentry, kprobe) | fentry (fentry, kprobe) | "
        "kprobe.")] = "auto",
    follow_tasks: Annotated[bool | None, typer.Option(
        "--follow-tasks/--no-follow-tasks",
        help="Follow the recorded tasks (and their children) into any memcg they create or "
        "move to, wherever it is. Default: on with --in-memcg, off with --cgroup.",
        show_default=False)] = None,
    force: Annotated[bool, typer.Option(
        "--force", help="Replace the trace already in -o (only a kmemtrace trace).")] = False,
    live: Annotated[bool, typer.Option(
        "--live", help="Also replay the strategies while recording (a what-if panel per "
        "strategy; same results as replaying the trace afterwards).")] = False,
    strategy: StrategyOption = "all",
    param: ParamOption = None,
    era: EraOption = DEFAULT_ERA,
    live_json: Annotated[Path | None, typer.Option(
        "--live-json", help="--live: write the what-if's final metrics as JSON to this file.",
        show_default=False)] = None,
    command: Annotated[list[str] | None, typer.Argument(
        help="With --in-memcg: the command to run (after --).")] = None,
) -> None:
    """Record slab allocations/frees charged to memcgs, and memcg lifecycle events."""
    if transport not in ("auto", "ringbuf", "perf"):
        raise UsageError(f"--transport {transport}: expected auto, ringbuf or perf")
    if lifecycle not in probes.LIFECYCLE_MODES:
        raise UsageError(f"--lifecycle {lifecycle}: expected "
                         + ", ".join(probes.LIFECYCLE_MODES))
    if command and not in_memcg:
        raise UsageError("a COMMAND needs --in-memcg (record --in-memcg -o T -- COMMAND...)")
    if in_memcg and not command:
        raise UsageError("--in-memcg needs a command after --")
    if follow_tasks and cgroup is None and not in_memcg:
        raise UsageError("--follow-tasks needs --cgroup or --in-memcg (without them every "
                         "memcg is recorded already)")
    if command:
        _check_command(command[0])
    if live_json is not None and not live:
        raise UsageError("--live-json needs --live")
    if live_json is not None:
        output_file(live_json, "--live-json")
    whatif = None
    if live:
        from kmemtrace.live.feed import LiveWhatIf
        from kmemtrace.live.view import final_json
        from kmemtrace.live.view import render as render_whatif
        whatif = LiveWhatIf(strategy, split_params(param), era)
    opts = RecordOptions(output=output, all_objects=all_objects, cgroup=cgroup,
                         transport=transport,
                         sample_interval_s=_positive("--sample-interval", sample_interval),
                         command=list(command or []), in_memcg=in_memcg, lifecycle=lifecycle,
                         follow_tasks=in_memcg if follow_tasks is None else follow_tasks,
                         force=force, page_cache=page_cache,
                         shrink_at_start=shrink_at_start)
    if print_bpf:
        _print_bpf(opts)
        return
    if output is None:
        raise UsageError("missing -o TRACE (the trace directory to create)")
    limit_s = _positive("--duration", duration) if duration is not None else None
    grace_s = parse_duration_ns(grace) / 1e9

    rec = start_recorder(opts, whatif)
    missing = [r.probe for r in rec.plan if r.status == "missing"]
    err_console.print(
        f"recording to {output} (offline from {probes.offline_source_note(rec.plan)}"
        + (f"; not attached: {', '.join(missing)}" if missing else "")
        + "); Ctrl-C stops",
        highlight=False, soft_wrap=True,
    )
    started = time.monotonic()
    deadline = started + limit_s if limit_s else float("inf")
    exit_code = 0
    try:
        with Live(console=err_console, auto_refresh=False, transient=True) as view:
            def tick() -> None:
                progress = _progress(rec, started)
                if whatif is not None:
                    whatif.poll()
                    progress = Group(progress, render_whatif(whatif))
                view.update(progress, refresh=True)

            if in_memcg:
                exit_code = _run_in_memcg(rec, rec.feats, opts, deadline, grace_s, tick)
            else:
                rec.run(lambda: time.monotonic() >= deadline, tick)
    except BaseException:
        if whatif is not None:
            whatif.stop()
        raise
    finally:
        meta = rec.stop()  # whatever happened, what was recorded is sealed
    _summary(meta, time.monotonic() - started)
    if whatif is not None:
        final = _finish_whatif(whatif, meta)
        if live_json is not None:
            write_output(live_json, json.dumps(final_json(final), indent=1,
                                               allow_nan=False) + "\n")
    if exit_code:
        err_console.print(f"kmemtrace: the command exited with status {exit_code}", soft_wrap=True)
        sys.exit(exit_code)  # click swallows typer.Exit codes with standalone_mode=False


def _finish_whatif(whatif: "LiveWhatIf", meta: dict) -> "Final":
    """Let the what-if replay what is still queued, then print its final figures."""
    from kmemtrace.live.view import final_sentence, final_table
    if whatif.behind_rows:
        err_console.print(f"what-if: replaying the {whatif.behind_rows:,} queued rows",
                          highlight=False)
    final = whatif.close(meta)
    err_console.print(final_table(final))
    err_console.print(final_sentence(final), highlight=False, soft_wrap=True)
    return final


def _positive(option: str, text: str) -> float:
    """A duration in seconds that must be above zero (0 would mean 'forever' or a busy loop)."""
    seconds = parse_duration_ns(text) / 1e9
    if seconds <= 0:
        raise UsageError(f"{option} {text}: must be longer than 0"
                         + (" (leave it out to record until Ctrl-C)"
                            if option == "--duration" else ""))
    return seconds


def _check_command(name: str) -> None:
    """A command that cannot start must fail before the BPF compile and the trace directory."""
    found = shutil.which(name)
    if found is None:
        where = "no such executable file" if "/" in name else "not found in PATH"
        raise UsageError(f"--in-memcg command {name!r}: {where}")


def _run_in_memcg(rec, feats, opts, deadline, grace_s, tick) -> int:
    if rec.stopping:  # interrupted during the compile: do not start the command at all
        return 0
    with rec.creating_memcg():  # its MKDIR is recorded: it joins the subtree at mkdir
        memcg = FreshMemcg(feats.memcg_root)
    try:
        rec.add_memcg(memcg.id, memcg.rel, memcg.level)
        if opts.cgroup is None:
            rec.set_subtree(memcg.rel)  # the command is the subject: record its memcg only
        proc = memcg.spawn(opts.command)
        rec.run(lambda: proc.poll() is not None or time.monotonic() >= deadline, tick)
    finally:
        memcg.terminate()
        memcg.remove()
    if not rec.stop_requested:
        end = time.monotonic() + grace_s
        rec.run(lambda: time.monotonic() >= end, tick)
    code = proc.returncode
    return code if code >= 0 else 128 - code


def start_recorder(opts: RecordOptions, whatif: "LiveWhatIf | None") -> Recorder:
    """Checks, BPF compile and attach, shared by ``record`` and ``top`` so both say the same
    notes and stop the same way: Ctrl-C or SIGTERM from here on ends the session cleanly,
    and the live what-if (if any) starts with the compile and then sees every batch."""
    stop = StopSignals()
    feats, header_note, mounted = prepare(opts)
    for note in (mounted, header_note):
        if note:
            err_console.print(note, highlight=False, soft_wrap=True)
    rec = Recorder(opts, feats, header_note)
    if whatif is not None:
        whatif.start()  # its imports overlap the BPF compile
    try:
        rec.start()
    except BaseException:
        if whatif is not None:
            whatif.stop()
        raise
    if whatif is not None:
        whatif.begin(rec.pipeline.meta)
        rec.taps.append(whatif.tap)
    stop.attach(rec)
    return rec


class StopSignals:
    """SIGINT/SIGTERM request a clean stop. Installed before the BPF compile (seconds long):
    a signal then is remembered, and the recording stops as soon as it has started, sealing
    an empty trace instead of dying with a traceback."""

    def __init__(self):
        self.rec: Recorder | None = None
        self.pending = False
        signal.signal(signal.SIGINT, self._handle)
        signal.signal(signal.SIGTERM, self._handle)

    def _handle(self, _signum, _frame) -> None:
        if self.rec is None:
            self.pending = True
        else:
            self.rec.stop_requested = True

    def attach(self, rec: Recorder) -> None:
        self.rec = rec
        rec.stop_requested = rec.stop_requested or self.pending


def _progress(rec: Recorder, started: float) -> Text:
    elapsed = max(time.monotonic() - started, 1e-9)
    queued = rec.pipeline.queued_rows + rec.writer.pending_rows
    mib = (rec.writer.bytes_written + 40 * queued) / 2**20
    return Text(f"{elapsed:6.1f} s  {rec.events / elapsed / 1e3:8.1f} k events/s  "
                f"{rec.events:,} events  ~{mib:.1f} MiB  lost {rec.lost_total():,}")


def _summary(meta: dict, elapsed: float) -> None:
    counts = {k: v for k, v in meta["counts"].items() if v}
    parts = ", ".join(f"{k}={v:,}" for k, v in counts.items())
    err_console.print(f"sealed trace: {parts or 'no events'} in {elapsed:.1f} s",
                      highlight=False, soft_wrap=True)
    line = loss_sentence(meta["lost"])
    err_console.print(f"[{'bold red' if meta['lost']['total'] else 'green'}]{line}[/]",
                      highlight=False, soft_wrap=True)


# Why each LostReason happens and what the user can do about it, in one clause each.
LOSS_FIXES = {
    "RINGBUF_FULL": ("the BPF ring buffer was full",
                     "record less (--cgroup, --in-memcg) or on a less busy machine"),
    "LIVE_MAP_FULL": ("the map of live objects was full",
                      "record a smaller memcg subtree (--cgroup) or a shorter run"),
    "PERF_LOST": ("the perf buffers were full", "use a kernel with BPF ring buffers (5.8+)"),
    "NESTED": ("a probe fired on a CPU where it was already running (a free in an interrupt)",
               "nothing to tune: the count says how many frees the trace lacks"),
    "WRITER_QUEUE": ("the disk writer fell behind and its queue stayed full",
                     "record to a faster disk or record less"),
    "WRITE_FAILED": ("the trace could not be written", "free space on that filesystem"),
    "LIFECYCLE_RING": ("memcg life-cycle records could not be queued",
                       "record on a less busy machine"),
    "LIFECYCLE_MAP": ("a life-cycle bookkeeping map was full", "record a smaller subtree"),
    "FREE_UNSEEN": ("a free ran where no BPF program was run for it, found when its address "
                    "was allocated again (docs/recording.md, 'Frees no probe sees')",
                    "nothing to tune: `kmemtrace info` lists them per cache as implied frees"),
    "PAGE_CACHE": ("page-cache records could not be queued, or more folios were cached at "
                   "once than the folio map follows (2^18)",
                   "record on a less busy machine, or pass --no-page-cache if page-cache pins "
                   "do not matter to you"),
}


def loss_sentence(lost: dict) -> str:
    """'No events were lost.' or which reasons lost how many, and the fix for each."""
    if not lost["total"]:
        return "No events were lost."
    clauses = []
    for reason, count in lost["by_reason"].items():
        why, fix = LOSS_FIXES.get(reason, (f"reason {reason}", "see docs/trace-format.md"))
        clauses.append(f"{count:,} because {why} (fix: {fix})")
    return f"LOST {lost['total']:,} events: " + "; ".join(clauses) + "."


def _print_bpf(opts: RecordOptions) -> None:
    feats = probes.detect()
    plan = probes.plan(feats, opts.lifecycle)
    if not opts.page_cache:
        probes.leave_out_page_cache(plan)
    flags = cflags(feats, opts, opts.transport == "perf", plan)
    sys.stdout.write(f"/* cflags: {' '.join(flags)} */\n")
    sys.stdout.write(BPF_SOURCE.read_text())
