"""``lab run``: ``kmemtrace record --in-memcg`` around a command inside a guest.

The guest runs this checkout's interpreter (the host root is shared in) and writes the
trace into a staging folder next to the requested output, which is the only writable
place both sides see; the host then moves it into place and adds ``meta["lab"]``.
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
GUEST_ENV = "export XDG_CACHE_HOME=/tmp/kmemtrace-cache COLUMNS=200"


@dataclass
class LabRun:
    kernel: str  # "stock" or a bzImage path
    output: Path
    command: list[str]
    record_args: list[str] = field(default_factory=list)  # passed through to `record`
    guest: vm.GuestSpec | None = None


def guest_script(run: LabRun, image: Path, stage: Path) -> str:
    """The shell the guest runs: modules of a patched image, then the recorder."""
    parts = [GUEST_ENV]
    mods = images.modules_path(image) / "lib" / "modules"
    if run.kernel != images.STOCK and mods.is_dir():
        # /lib is a writable overlay in the guest: make modprobe find the image's modules.
        parts.append(f"for d in {shlex.quote(str(mods))}/*; do ln -sfn \"$d\" /lib/modules/; "
                     "done")
    parts.append(f"cd {shlex.quote(str(Path.cwd()))}")
    record = [sys.executable, "-m", "kmemtrace", "record", "--in-memcg",
              "-o", str(stage / "trace"), *run.record_args, "--", *run.command]
    parts.append(shlex.join(record))
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
        rc = vm.run(spec, guest_script(run, image, stage), [stage], console, echo)
        trace = stage / "trace"
        if not (trace / "meta.json").exists():
            raise vm.GuestError(f"the guest recorder wrote no trace (exit status {rc})",
                                console, vm.tail(console))
        trace.rename(run.output)
    finally:
        shutil.rmtree(stage, ignore_errors=True)
    meta = load_meta(run.output)
    accel = vm.choose_accel(spec.accel)
    meta["lab"] = images.lab_meta(run.kernel, image, accel)
    meta["lab"]["console"] = str(console)
    # TCG: every time in the trace is stretched 19-53x; reports warn when this is true.
    meta["kernel"]["emulated_vm"] = bool(meta["kernel"].get("emulated_vm")) or accel == "tcg"
    write_meta_atomic(run.output, meta)
    return rc, meta
