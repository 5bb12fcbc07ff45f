"""``kmemtrace doctor``: is this machine ready to record? Each missing piece with its fix."""

import os
from pathlib import Path

from rich.console import Console

from kmemtrace.cli import app
from kmemtrace.errors import KernelSupportError, KmemtraceError
from kmemtrace.record import bccload, headers, inmemcg, probes
from kmemtrace.record.btf import VMLINUX_BTF


def _check(name: str, fn) -> tuple[str, bool, str, str]:
    """(name, ok, detail, fix); ``fn`` returns the detail or raises KmemtraceError."""
    try:
        return name, True, fn(), ""
    except KmemtraceError as exc:
        return name, False, str(exc), exc.tip or ""


def _root() -> str:
    if os.geteuid() != 0:
        raise KmemtraceError("not root", tip="run recording with sudo")
    return "running as root"


def _tracefs() -> str:
    path = probes.find_tracefs()
    if path is None:
        raise KmemtraceError("tracefs not mounted",
                             tip="mount -t tracefs nodev /sys/kernel/tracing")
    return str(path)


def _bcc() -> str:
    return f"bcc at {Path(bccload.load_bcc().__file__).parent}"


def _headers() -> str:
    choice = headers.choose_headers(build=False)
    if choice is None:
        raise KmemtraceError("no kernel headers installed",
                             tip="apt-get install linux-headers-amd64")
    return choice.how


def _btf() -> str:
    if not VMLINUX_BTF.exists():
        raise KmemtraceError(f"{VMLINUX_BTF} missing",
                             tip="use a kernel built with CONFIG_DEBUG_INFO_BTF=y")
    return f"{VMLINUX_BTF} ({VMLINUX_BTF.stat().st_size // 1024} KiB)"


def _cgroups() -> str:
    mount = probes.memcg_mount()
    if mount is None:
        raise KmemtraceError("no memory cgroup controller mounted",
                             tip="mount -t cgroup -o memory none /sys/fs/cgroup/memory")
    return f"memory controller on cgroup {mount[0]} at {mount[1]}"


def _leftovers() -> str:
    """Memcgs of ``record --in-memcg`` runs whose recorder died before removing them."""
    mount = probes.memcg_mount()
    if mount is None:
        return "no memory cgroup mounted: nothing to look at"
    found = inmemcg.leftovers(mount[1])
    if not found:
        return f"no memcg left behind by a dead recorder under {mount[1]}"
    listed = ", ".join(f"{path} ({tasks} tasks)" for path, tasks in found)
    raise KmemtraceError(f"left behind by a recorder that died: {listed}",
                         tip="; ".join(inmemcg.cleanup_tip(path) for path, _ in found))


SLAB_EVENTS = ("kmem_cache_alloc", "kmem_cache_free", "kmalloc", "kfree")


def _tracing_slab_events(tracefs: Path) -> list[tuple[Path, list[str]]]:
    """(ftrace instance, its enabled kmem slab events) for the top level and every
    instance: the same four tracepoints kmemtrace attaches to."""
    out = []
    for inst in (tracefs, *sorted((tracefs / "instances").glob("*"))):
        on = []
        for ev in SLAB_EVENTS:
            try:
                if (inst / "events/kmem" / ev / "enable").read_text().strip() not in ("0", ""):
                    on.append(f"kmem:{ev}")
            except OSError:
                continue
        if on:
            out.append((inst, on))
    return out


def _slab_tracing() -> str:
    """ftrace left tracing the slab tracepoints (a killed benchmark's private instance,
    say) taxes every slab event of the machine: measured overheads and the recorded
    workload's speed then carry that cost too. Found the hard way: one such instance ran
    unnoticed for eight hours of benchmarks."""
    tracefs = probes.find_tracefs()
    if tracefs is None:
        return "tracefs not mounted: nothing to look at"
    found = _tracing_slab_events(tracefs)
    if not found:
        return "no ftrace instance is tracing the slab tracepoints"
    listed = ", ".join(f"{inst} ({' '.join(evs)})" for inst, evs in found)
    fixes = [f"echo 0 > {inst}/events/kmem/enable" + (
        f" && rmdir {inst}" if inst.parent.name == "instances" else "") for inst, _ in found]
    raise KmemtraceError(f"ftrace is tracing slab events, a cost on every one: {listed}",
                         tip="; ".join(fixes))


# Frees that emit no per-object tracepoint (docs/recording.md, "Frees no probe sees").
UNTRACED_FREES = ("frees by kmem_cache_free_bulk/kfree_bulk (kfree_rcu batches) and SLUB "
                  "sheaves' rcu_free_sheaf (6.18)")
FREE_UNSEEN_NOTE = ("counted as LOST FREE_UNSEEN when the address is allocated again "
                    "(`kmemtrace info`: implied frees)")


def _kprobes() -> str:
    if not (probes.KPROBE_PMU.exists() or Path("/sys/kernel/tracing/kprobe_events").exists()):
        raise KmemtraceError(
            "no kprobes: memcg offline comes from cgroup:cgroup_rmdir; kmem_cache_destroy "
            f"is not traced, and {UNTRACED_FREES} reach no probe: {FREE_UNSEEN_NOTE}",
            tip="optional: a kernel with CONFIG_KPROBES=y adds those events")
    return ("kprobes available; the kmem_cache_free_bulk kprobe sees 128 objects a call, "
            f"SLUB sheaves' RCU frees none: {FREE_UNSEEN_NOTE}")


def _fentry() -> str:
    feats = probes.detect()
    headers.apply(headers.choose_headers())  # the trial program is compiled by BCC
    if not probes.check_fentry(bccload.load_bcc(), feats):
        raise KmemtraceError("fentry programs cannot attach here",
                             tip="optional: not used for recording")
    return "fentry works"


REQUIRED = (("root", _root), ("tracefs", _tracefs), ("bcc module", _bcc),
            ("kernel headers", _headers), ("kernel BTF", _btf), ("memory cgroup", _cgroups))
OPTIONAL = (("kprobes", _kprobes), ("fentry", _fentry))
CLEANUP = (("leftovers", _leftovers), ("slab tracing", _slab_tracing))
app_console = Console(soft_wrap=True)


@app.command()
def doctor() -> None:
    """Check root, tracefs, BCC, headers, BTF, kprobes/fentry and cgroups; print fixes."""
    failed = False
    for group, checks in (("required", REQUIRED), ("optional", OPTIONAL), ("cleanup", CLEANUP)):
        for name, fn in checks:
            if group == "optional" and failed:
                break  # their probes need what is missing above
            label, ok, detail, fix = _check(name, fn)
            mark = "[green]ok[/]  " if ok else {"required": "[red]FAIL[/]",
                                                "cleanup": "[yellow]warn[/]"}.get(
                                                    group, "[yellow]no[/]  ")
            app_console.print(f"{mark} {label:15} {detail}", highlight=False)
            if fix:
                app_console.print(f"      {'':15} fix: {fix}", highlight=False)
            failed |= not ok and group == "required"
    if failed:
        raise KernelSupportError("this machine cannot record yet: fix the FAIL lines above")

