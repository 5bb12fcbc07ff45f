"""``kmemtrace lab run|build|compare``: record on other kernels in a virtme-ng VM."""

import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.text import Text

from kmemtrace.cli import app, err_console
from kmemtrace.errors import UsageError
from kmemtrace.lab import GuestError, build, compare, images
from kmemtrace.lab.record import LabRun, run_in_guest
from kmemtrace.lab.vm import GuestSpec
from kmemtrace.params import parse_duration_ns
from kmemtrace.record.probes import LIFECYCLE_MODES

lab = typer.Typer(help="Record on the stock or a patched kernel in a VM (virtme-ng, TCG).",
                  no_args_is_help=True)
app.add_typer(lab, name="lab")

KernelOpt = Annotated[str, typer.Option(
    "--kernel", help="'stock' (newest /boot/vmlinuz-*) or a bzImage from `lab build`.")]
GraceOpt = Annotated[str, typer.Option(
    help="record --grace (guest time); with --whole-guest: recording after COMMAND ends.")]
AllObjectsOpt = Annotated[bool, typer.Option("--all-objects", help="record --all-objects.")]
LifecycleOpt = Annotated[str, typer.Option(
    help="record --lifecycle: " + " | ".join(LIFECYCLE_MODES))]
AccelOpt = Annotated[str, typer.Option(
    help="auto (KVM where it runs stock kernels, else TCG) | tcg | kvm.")]
TimeoutOpt = Annotated[str, typer.Option(
    help="Give up on the guest command this long after the boot (a watchdog dumps the guest's "
         "state into the console before).")]
BootTimeoutOpt = Annotated[str, typer.Option(help="Give up if the guest is not up by then.")]
MemoryOpt = Annotated[str, typer.Option(help="Guest memory (qemu -m).")]
PatchOpt = Annotated[list[Path], typer.Option(
    "--patch", help="A kernel patch (-p1); repeatable, applied in order.")]
CommandArg = Annotated[list[str], typer.Argument(help="The workload (after --).")]


def _say(line: str) -> None:
    err_console.print(line, highlight=False, soft_wrap=True, markup=False)


def _echo(line: str) -> None:
    err_console.print(Text.assemble(("guest | ", "dim"), line), highlight=False,
                      soft_wrap=True)


def _guest(kernel: str, memory: str, accel: str, timeout: str, boot_timeout: str) -> GuestSpec:
    if accel not in ("auto", "tcg", "kvm"):
        raise UsageError(f"--accel {accel}: expected auto, tcg or kvm")
    return GuestSpec(kernel=Path(kernel), memory=memory, accel=accel,
                     timeout_s=parse_duration_ns(timeout) / 1e9,
                     boot_timeout_s=parse_duration_ns(boot_timeout) / 1e9)


def _record_args(grace: str, all_objects: bool, lifecycle: str, *, cgroup: str | None = None,
                 follow_tasks: bool | None = None, transport: str = "auto",
                 sample_interval: str = "1s", whole_guest: bool = False) -> list[str]:
    """`record`'s own options, checked here so that a typo fails before a 20 s boot."""
    if lifecycle not in LIFECYCLE_MODES:
        raise UsageError(f"--lifecycle {lifecycle}: expected " + ", ".join(LIFECYCLE_MODES))
    if transport not in ("auto", "ringbuf", "perf"):
        raise UsageError(f"--transport {transport}: expected auto, ringbuf or perf")
    parse_duration_ns(sample_interval)
    if whole_guest and follow_tasks and cgroup is None:
        raise UsageError("--follow-tasks needs --cgroup with --whole-guest (without it every "
                         "memcg is recorded already)")
    args = ["--lifecycle", lifecycle, "--transport", transport,
            "--sample-interval", sample_interval]
    if not whole_guest:
        args += ["--grace", grace]
    if cgroup is not None:
        args += ["--cgroup", cgroup]
    if follow_tasks is not None:
        args.append("--follow-tasks" if follow_tasks else "--no-follow-tasks")
    return args + (["--all-objects"] if all_objects else [])


def _guest_failure(exc: GuestError) -> None:
    """Show the console's tail before the one-line error (the reason is usually there)."""
    err_console.print(f"[dim]--- last {len(exc.tail)} lines of the guest console ---[/]")
    for line in exc.tail:
        err_console.print(line, highlight=False, soft_wrap=True, markup=False)


@lab.command("run", context_settings={"allow_interspersed_args": False})
def run_command(
    command: CommandArg,
    output: Annotated[Path, typer.Option("-o", "--output", help="Trace directory to create.")],
    kernel: KernelOpt = images.STOCK,
    grace: GraceOpt = "2s",
    all_objects: AllObjectsOpt = False,
    lifecycle: LifecycleOpt = "auto",
    whole_guest: Annotated[bool, typer.Option(
        "--whole-guest", help="Record the whole guest while COMMAND runs (plain `record`), "
        "not only COMMAND's memcg (`record --in-memcg`).")] = False,
    cgroup: Annotated[str | None, typer.Option(help="record --cgroup (guest path).")] = None,
    follow_tasks: Annotated[bool | None, typer.Option(
        "--follow-tasks/--no-follow-tasks", help="record --follow-tasks.",
        show_default=False)] = None,
    transport: Annotated[str, typer.Option(help="record --transport.")] = "auto",
    sample_interval: Annotated[str, typer.Option(help="record --sample-interval.")] = "1s",
    accel: AccelOpt = "auto",
    memory: MemoryOpt = "2G",
    timeout: TimeoutOpt = "30m",
    boot_timeout: BootTimeoutOpt = "5m",
) -> None:
    """Boot KERNEL in a VM, run `record --in-memcg -- COMMAND` there, bring the trace back.

    The command runs in a fresh tmpfs (its working directory); paths relative to the host's
    working directory are made absolute first.
    """
    spec = _guest(kernel, memory, accel, timeout, boot_timeout)
    args = _record_args(grace, all_objects, lifecycle, cgroup=cgroup, follow_tasks=follow_tasks,
                        transport=transport, sample_interval=sample_interval,
                        whole_guest=whole_guest)
    job = LabRun(kernel, output, list(command), args, spec, whole_guest,
                 parse_duration_ns(grace) / 1e9)
    _say(f"booting {kernel} in a VM (TCG guests run 19-53x slower than the host)")
    try:
        rc, meta = run_in_guest(job, _echo)
    except GuestError as exc:
        _guest_failure(exc)
        raise
    _say(f"trace: {output} (kernel {meta['kernel']['release']}, {meta['lab']['accel']}; "
         f"console: {meta['lab']['console']})")
    if rc:
        _say(f"kmemtrace: the guest command exited with status {rc}")
        sys.exit(rc)


@lab.command("build")
def build_command(
    patch: PatchOpt,
    output: Annotated[Path | None, typer.Option(
        "-o", "--output", help="Where to put the bzImage (default: the lab's image cache).",
        show_default=False)] = None,
    jobs: Annotated[int | None, typer.Option("-j", help="make -j (default: all CPUs).",
                                             show_default=False)] = None,
) -> None:
    """Build a patched kernel from the distro source package (cached tree, incremental)."""
    image = build.build(list(patch), output, _say, jobs)
    print(image)


@lab.command("compare", context_settings={"allow_interspersed_args": False})
def compare_command(
    command: CommandArg,
    patch: PatchOpt,
    output: Annotated[Path, typer.Option("-o", "--output",
                                         help="Folder for the traces (stock-N, patched-N).")],
    runs: Annotated[int, typer.Option("-n", "--runs", help="Recordings per kernel.")] = 3,
    strategy: Annotated[str, typer.Option("--strategy", "-s",
                                          help="kmemtrace compare --strategy.")] = "all",
    grace: GraceOpt = "2s",
    all_objects: AllObjectsOpt = False,
    accel: AccelOpt = "auto",
    memory: MemoryOpt = "2G",
    timeout: TimeoutOpt = "30m",
    boot_timeout: BootTimeoutOpt = "5m",
) -> None:
    """Record COMMAND N times on the stock and on the patched kernel; `kmemtrace compare` them."""
    if runs < 1:
        raise UsageError("--runs must be at least 1")
    spec = _guest(images.STOCK, memory, accel, timeout, boot_timeout)
    try:
        sets = compare.record_sets(list(patch), list(command), runs, output,
                                   _record_args(grace, all_objects, "auto"), spec, _say, _echo)
    except GuestError as exc:
        _guest_failure(exc)
        raise
    sys.exit(compare.compare(sets, ["--strategy", strategy]))
