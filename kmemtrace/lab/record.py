"""``lab run``: ``kmemtrace record`` around a command inside a guest.

The guest runs this checkout's interpreter (the host root is shared in) and writes the
trace into a staging folder next to the requested output, which is the only writable
place both sides see; the host then moves it into place and adds ``meta["lab"]``.

The recorder runs either as ``record --in-memcg -- COMMAND`` or, for the whole guest, as a
plain ``record`` started before the command and stopped (SIGTERM) after it. The command's
working directory is a fresh tmpfs: the guest's root is 9p (read-only, synchronous, no
negative dentries), so a dentry-heavy workload would behave there unlike on any host.
"""

import secrets
import shlex
import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path

from kmemtrace.lab import LabError, images, vm
from kmemtrace.trace.meta import load_meta, write_meta_atomic

# /root and the repository are read-only in the guest; these are writable, discarded overlays.
# PYTHONFAULTHANDLER: the lab's watchdog (vm.watched) gets the recorder's thread stacks.
GUEST_ENV = "export XDG_CACHE_HOME=/tmp/kmemtrace-cache COLUMNS=200 PYTHONFAULTHANDLER=1"
WORKDIR = "/tmp/kmemtrace-work"  # a tmpfs mounted there: the command's working directory
WORKDIR_FS = "workdir-fs"  # in the staging folder: the guest's `stat -f` type of WORKDIR
GUEST_SCRIPT = "guest.sh"  # in the staging folder: what the guest runs
RECORD_LOG = "record.log"  # whole-guest mode: the recorder's stderr, shown after the command


@dataclass
class LabRun:
    kernel: str  # "stock" or a bzImage path
    output: Path
    command: list[str]
    record_args: list[str] = field(default_factory=list)  # passed through to `record`
    guest: vm.GuestSpec | None = None
    whole_guest: bool = False  # record everything while COMMAND runs, not --in-memcg
    grace_s: float = 0.0  # whole-guest: keep recording this long after COMMAND ends


def _host_paths(command: list[str]) -> list[str]:
    """Arguments naming files relative to the host's cwd, made absolute (the guest's cwd is
    the tmpfs work directory)."""
    return [str(Path(a).resolve()) if "/" in a and not a.startswith("/") and Path(a).exists()
            else a for a in command]


def _whole_guest(record: list[str], command: list[str], stage: Path, grace_s: float) -> str:
    """Recorder in the background until it says it records, the command, the grace period
    (memcg frees come an RCU grace period after the offline), SIGTERM, wait."""
    log = shlex.quote(str(stage / RECORD_LOG))
    return "; ".join([
        f"{shlex.join(record)} 2>{log} & rec=$!",
        f"until grep -qs 'recording to' {log}; do kill -0 $rec 2>/dev/null || break; "
        "sleep 0.5; done",
        f"if kill -0 $rec 2>/dev/null; then {shlex.join(command)}; rc=$?; "
        f"sleep {grace_s:.3f}; kill -TERM $rec; else rc=70; fi",
        f"wait $rec; rrc=$?; cat {log} >&2",
        'if [ "$rrc" -ne 0 ]; then exit "$rrc"; fi; exit "$rc"',
    ])


def guest_script(run: LabRun, image: Path, stage: Path) -> str:
    """The shell the guest runs: modules of a patched image, then the recorder."""
    parts = [GUEST_ENV]
    mods = images.modules_path(image) / "lib" / "modules"
    if run.kernel != images.STOCK and mods.is_dir():
        # /lib is a writable overlay in the guest: make modprobe find the image's modules.
        parts.append(f"for d in {shlex.quote(str(mods))}/*; do ln -sfn \"$d\" /lib/modules/; "
                     "done")
    work = shlex.quote(WORKDIR)
    parts.append(f"mkdir -p {work} && mount -t tmpfs kmemtrace-work {work} && cd {work} "
                 f"&& stat -f -c %T . > {shlex.quote(str(stage / WORKDIR_FS))} || exit 71")
    command = _host_paths(run.command)
    record = [sys.executable, "-m", "kmemtrace", "record", "-o", str(stage / "trace"),
              *run.record_args]
    if run.whole_guest:
        parts.append(_whole_guest(record, command, stage, run.grace_s))
    else:
        parts.append(shlex.join([*record, "--in-memcg", "--", *command]))
    return "; ".join(parts)


def run_in_guest(run: LabRun, echo=None) -> tuple[int, dict]:
    """Record in the VM, bring the trace to ``run.output``; (command status, sealed meta)."""
    if run.output.exists():
        raise LabError(f"{run.output}: already exists; choose another -o")
    image = vm.resolve_kernel(run.kernel)
    spec = run.guest or vm.GuestSpec(kernel=image)
    spec.kernel = image
    parent = run.output.resolve().parent
    parent.mkdir(parents=True, exist_ok=True)
    stage = parent / f".kmemtrace-lab-{secrets.token_hex(4)}"
    stage.mkdir()
    console = run.output.with_name(run.output.name + ".console.log")
    try:
        # The script goes in a file: vng passes --exec on the kernel command line, whose
        # 2 KiB a whole-guest script overflows (6.1 panics at boot: __fortify_strlen).
        script = stage / GUEST_SCRIPT
        script.write_text(guest_script(run, image, stage) + "\n")
        rc = vm.run(spec, f"/bin/bash {shlex.quote(str(script))}", [stage], console, echo)
        trace = stage / "trace"
        if not (trace / "meta.json").exists():
            raise vm.GuestError(f"the guest recorder wrote no trace (exit status {rc})",
                                console, vm.tail(console))
        trace.rename(run.output)
        fs_file = stage / WORKDIR_FS
        workdir_fs = fs_file.read_text().strip() if fs_file.exists() else "unknown"
    finally:
        shutil.rmtree(stage, ignore_errors=True)
    meta = load_meta(run.output)
    accel = vm.choose_accel(spec.accel)
    meta["lab"] = images.lab_meta(run.kernel, image, accel)
    meta["lab"]["console"] = str(console)
    meta["lab"]["mode"] = "whole-guest" if run.whole_guest else "in-memcg"
    meta["lab"]["workdir"] = {"path": WORKDIR, "fs": workdir_fs}
    # TCG: every time in the trace is stretched 19-53x; reports warn when this is true.
    meta["kernel"]["emulated_vm"] = bool(meta["kernel"].get("emulated_vm")) or accel == "tcg"
    write_meta_atomic(run.output, meta)
    return rc, meta
