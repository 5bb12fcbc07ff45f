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
GraceOpt = Annotated[str, typer.Option(help="record --grace (guest time).")]
AllObjectsOpt = Annotated[bool, typer.Option("--all-objects", help="record --all-objects.")]
LifecycleOpt = Annotated[str, typer.Option(
    help="record --lifecycle: " + " | ".join(LIFECYCLE_MODES))]
AccelOpt = Annotated[str, typer.Option(
    help="auto (KVM where it runs stock kernels, else TCG) | tcg | kvm.")]
TimeoutOpt = Annotated[str, typer.Option(help="Give up on the guest after this long.")]
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


def _record_args(grace: str, all_objects: bool, lifecycle: str) -> list[str]:
    if lifecycle not in LIFECYCLE_MODES:
        raise UsageError(f"--lifecycle {lifecycle}: expected " + ", ".join(LIFECYCLE_MODES))
    return ["--grace", grace, "--lifecycle", lifecycle] + (
        ["--all-objects"] if all_objects else [])


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
    accel: AccelOpt = "auto",
    memory: MemoryOpt = "2G",
    timeout: TimeoutOpt = "30m",
    boot_timeout: BootTimeoutOpt = "5m",
) -> None:
    """Boot KERNEL in a VM, run `record --in-memcg -- COMMAND` there, bring the trace back."""
    spec = _guest(kernel, memory, accel, timeout, boot_timeout)
    job = LabRun(kernel, output, list(command), _record_args(grace, all_objects, lifecycle),
                 spec)
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
