"""Boot a kernel with virtme-ng and run one shell script in it: timeouts, console, exit code.

Facts this relies on (measured, /work/shared/research/vm-lab.md): vng needs a stdin (it
crashes on a closed one), returns the guest script's exit status, shares the host root
read-only (only ``--rwdir`` folders are writable and seen by the host) and, with
``--verbose``, prints the kernel console on its stdout, which we save whole. A boot is
recognised by a marker line the script prints first, so "did not boot" and "the command
ran too long" are told apart.
"""

import glob
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from kmemtrace.lab import GuestError, LabError
from kmemtrace.lab.images import STOCK

BOOT_MARK = "kmemtrace-lab: guest up"
WATCHDOG_MARK = "kmemtrace-lab: watchdog"
TAIL_LINES = 25
KERNEL_LOG = re.compile(r"\[\s*\d+\.\d+\] ")  # printk's timestamp prefix
INSTALL = "apt-get install --no-install-recommends qemu-system-x86 busybox-static"


@dataclass
class GuestSpec:
    kernel: Path
    memory: str = "2G"
    cpus: int = 2
    accel: str = "auto"  # auto | tcg | kvm
    boot_timeout_s: float = 300.0
    timeout_s: float = 1800.0


def stock_kernel(boot: Path = Path("/boot")) -> Path:
    """Newest Debian kernel image installed on the host (its headers must match)."""
    found = sorted(glob.glob(str(boot / "vmlinuz-*")), key=_version_key)
    if not found:
        raise LabError(f"no stock kernel image in {boot}",
                       tip="apt-get install --no-install-recommends linux-image-amd64 "
                           "linux-headers-amd64")
    return Path(found[-1])


def _version_key(path: str) -> list:
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", path)]


def resolve_kernel(spec: str) -> Path:
    if spec == STOCK:
        return stock_kernel()
    path = Path(spec)
    if not path.is_file():
        raise LabError(f"{spec}: no kernel image there",
                       tip="use --kernel stock, or build one with `kmemtrace lab build`")
    return path.resolve()


def find_tools() -> str:
    """vng's path, after checking the host programs it needs; one line per missing piece."""
    vng = shutil.which("vng") or shutil.which("vng", path=str(Path(sys.executable).parent))
    if vng is None:
        raise LabError("virtme-ng (vng) is not installed",
                       tip="pip install 'kmemtrace[lab]' (or: pip install virtme-ng)")
    if shutil.which("qemu-system-x86_64") is None:
        raise LabError("qemu-system-x86_64 not found: the lab boots kernels under QEMU",
                       tip=INSTALL)
    if shutil.which("busybox") is None:
        raise LabError("busybox not found: virtme-ng builds the guest's initramfs with it",
                       tip=INSTALL)
    return vng


def choose_accel(requested: str) -> str:
    """KVM only where it runs stock kernels: a PVM host (kvm_pvm) aborts or hangs them."""
    if requested != "auto":
        return requested
    modules = Path("/sys/module")
    hw_kvm = (modules / "kvm_intel").exists() or (modules / "kvm_amd").exists()
    usable = os.access("/dev/kvm", os.R_OK | os.W_OK) and hw_kvm
    return "kvm" if usable and not (modules / "kvm_pvm").exists() else "tcg"


def vng_command(vng: str, spec: GuestSpec, script: str, rwdirs: list[Path]) -> list[str]:
    cmd = [vng, "--run", str(spec.kernel), "--verbose", "--memory", spec.memory,
           "--cpus", str(spec.cpus)]
    if choose_accel(spec.accel) == "tcg":
        cmd.append("--disable-kvm")
    for d in rwdirs:
        cmd += ["--rwdir", str(d)]
    return [*cmd, "--exec", f"echo {shlex.quote(BOOT_MARK)}; {watched(script, spec)}"]


def watchdog_after_s(spec: GuestSpec) -> int:
    """When the guest dumps its state, counted from the boot like the host's ``timeout_s``,
    and early enough for the dump to reach the console before the host kills the guest."""
    return max(1, int(spec.timeout_s - min(120.0, spec.timeout_s / 4)))


def watched(script: str, spec: GuestSpec) -> str:
    """``script`` with a watchdog beside it: a guest that hangs says where before it is killed.

    A hang in a TCG guest (seen once in CI, never here) otherwise leaves only "did not
    finish". The dump: every task with its state and kernel wait channel, kernel stacks of
    blocked tasks (sysrq w), and the Python stacks of every thread of the recorder
    (SIGABRT; the guest runs Python with PYTHONFAULTHANDLER=1), which also ends the run.
    """
    dump = "; ".join([
        f"echo {shlex.quote(WATCHDOG_MARK)}: still running after $wd_s s, dumping state",
        "ps -eo pid,ppid,stat,wchan:32,etime,args",
        "echo 1 > /proc/sys/kernel/sysrq; echo w > /proc/sysrq-trigger",
        "pkill -ABRT -f ' -m kmemtrace record'",
    ])
    return (f"wd_s={watchdog_after_s(spec)}; (sleep $wd_s; {dump}) & wd=$!; {script}; "
            "rc=$?; kill $wd 2>/dev/null; exit $rc")


def run(spec: GuestSpec, script: str, rwdirs: list[Path], console: Path,
        echo=None) -> int:
    """Run ``script`` in a guest; return its exit status. Raises GuestError on no boot/timeout.

    Every output line goes to ``console``; after the boot marker, lines also go to ``echo``
    (the user sees the guest command's own output live).
    """
    vng = find_tools()
    cmd = vng_command(vng, spec, script, rwdirs)
    console.parent.mkdir(parents=True, exist_ok=True)
    booted, dumped = threading.Event(), threading.Event()
    with open(console, "w") as log:
        log.write("# " + shlex.join(cmd) + "\n")
        # vng runs its sibling `virtme-run` through the shell: its folder must be on PATH
        env = {**os.environ, "PATH": f"{Path(vng).parent}:{os.environ.get('PATH', '')}"}
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, start_new_session=True, env=env)
        reader = threading.Thread(target=_pump, args=(proc.stdout, log, booted, dumped, echo),
                                  daemon=True)
        reader.start()
        started = time.monotonic()
        up_at = None  # the command's time counts from the boot marker, as the watchdog's does
        failure = None
        while proc.poll() is None:
            now = time.monotonic()
            if up_at is None and booted.is_set():
                up_at = now
            if up_at is None and now - started > spec.boot_timeout_s:
                failure = f"the guest did not boot within {spec.boot_timeout_s:.0f} s"
            elif up_at is not None and now - up_at > spec.timeout_s:
                failure = f"the guest command did not finish within {spec.timeout_s:.0f} s"
            if failure:
                _kill(proc)
                break
            time.sleep(0.2)
        reader.join(10)
    if dumped.is_set():  # says more than "did not finish", even if the kill came after it
        failure = (f"the guest command was still running after {watchdog_after_s(spec)} s: "
                   "the watchdog dumped its tasks and stacks into the console and stopped it")
    if failure is None and not booted.is_set():
        failure = f"the guest failed to boot (vng exit status {proc.returncode})"
    if failure:
        raise GuestError(failure, console, tail(console))
    return proc.returncode


def _pump(stream, log, booted: threading.Event, dumped: threading.Event, echo) -> None:
    for raw in iter(stream.readline, b""):
        line = raw.decode(errors="replace").replace("\0", "")
        log.write(line)
        log.flush()
        if booted.is_set() and echo is not None and not KERNEL_LOG.match(line):
            echo(line.rstrip("\n"))  # the command's output; kernel messages stay in the file
        elif line.strip() == BOOT_MARK:
            booted.set()
        if line.startswith(WATCHDOG_MARK):
            dumped.set()


def _kill(proc: subprocess.Popen) -> None:
    """vng and its qemu run in their own session: end that whole group, nothing else."""
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(10)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    except ProcessLookupError:
        pass


def tail(console: Path, n: int = TAIL_LINES) -> list[str]:
    lines = console.read_text(errors="replace").splitlines()
    return [ln for ln in lines if ln.strip()][-n:]
