"""``record --in-memcg -- COMMAND``: a fresh memcg around one command.

The point is a complete memcg life in the trace: MKDIR, the command's allocations charged
to it, then the offline when we remove the directory after the command ends (objects still
charged make it a dying memcg, the case the strategies differ on). The child moves itself
into the memcg between fork and exec, so every allocation of the command is charged there.

A recorder that dies without cleaning up (SIGKILL, OOM kill) must not leave the command
running in an orphaned memcg: the command gets ``PR_SET_PDEATHSIG`` (SIGKILL when the
recorder dies), and a guardian process (:mod:`kmemtrace.record.guardian`) that outlives the
recorder kills what is left in the memcg and removes it. ``kmemtrace doctor`` lists any
memcg that still escaped, with the fix.
"""

import ctypes
import os
import re
import secrets
import signal
import subprocess
import sys
from pathlib import Path

from kmemtrace.errors import KernelSupportError, UsageError
from kmemtrace.record.guardian import members, reap
from kmemtrace.record.runtime import CALLER_NICE, CALLER_THP_DISABLE, PR_SET_THP_DISABLE

RMDIR_TIMEOUT_S = 5.0
NAME_PREFIX = "kmemtrace-"
_NAME = re.compile(rf"{NAME_PREFIX}(\d+)-[0-9a-f]+")
PR_SET_PDEATHSIG = 1  # include/uapi/linux/prctl.h


def _delegate_memory(mount: Path) -> None:
    """cgroup v2: children get a memory controller (a memcg) only if the parent delegates it.

    Without this a fresh v2 directory would be a cgroup with no memcg: nothing charged to
    it, and no mem_cgroup_css_offline when it goes. v1 memory mounts have no such file.
    """
    control = mount / "cgroup.subtree_control"
    if not control.exists() or "memory" in control.read_text().split():
        return
    try:
        control.write_text("+memory")
    except OSError as exc:
        raise KernelSupportError(f"cannot enable the memory controller in {control}: "
                                 f"{exc.strerror}") from None


def leftovers(mount: Path) -> list[tuple[Path, int]]:
    """Memcgs of ``--in-memcg`` runs whose recorder is gone: (directory, tasks in it)."""
    found = []
    for path in sorted(mount.glob(f"{NAME_PREFIX}*")):
        match = _NAME.fullmatch(path.name)
        if match and path.is_dir() and not Path(f"/proc/{match.group(1)}").exists():
            found.append((path, len(members(path))))
    return found


class FreshMemcg:
    """A memcg directory we create, run one command in, and remove (guarded, see above)."""

    def __init__(self, mount: Path):
        self.mount = mount
        self.path = mount / f"{NAME_PREFIX}{os.getpid()}-{secrets.token_hex(3)}"
        _delegate_memory(mount)
        try:
            self.path.mkdir()
        except OSError as exc:
            raise KernelSupportError(f"cannot create memcg {self.path}: {exc.strerror}") from None
        self.id = self.path.stat().st_ino  # = kernfs id = cgroup:cgroup_mkdir's id
        self.rel = "/" + str(self.path.relative_to(mount))
        self.level = self.rel.count("/")
        self.proc: subprocess.Popen | None = None
        self._guardian, lifeline = _start_guardian(self.path)
        self._lifeline: int | None = lifeline

    def spawn(self, argv: list[str]) -> subprocess.Popen:
        # The recorder has threads by now (the trace writer), so the child between fork and
        # exec only makes raw system calls: the file is opened here, in the parent.
        procs = os.open(self.path / "cgroup.procs", os.O_WRONLY)
        recorder = os.getpid()
        libc = ctypes.CDLL(None, use_errno=True)

        def enter_memcg() -> None:  # runs in the child, before exec (and before close_fds)
            libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
            if os.getppid() != recorder:  # the recorder died before prctl took effect
                os._exit(1)
            os.write(procs, b"0")  # "0" = the writing task itself (v1 and v2)
            os.setpriority(os.PRIO_PROCESS, 0, CALLER_NICE)  # not the recorder's raised one
            libc.prctl(PR_SET_THP_DISABLE, CALLER_THP_DISABLE, 0, 0, 0)  # nor its memory settings

        try:
            self.proc = subprocess.Popen(argv, preexec_fn=enter_memcg)
        except OSError as exc:
            self.remove()
            raise UsageError(f"cannot run {argv[0]!r}: {exc.strerror}") from None
        finally:
            os.close(procs)
        return self.proc

    def terminate(self) -> None:
        """Stop the command (Ctrl-C / SIGTERM of the recorder)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(RMDIR_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def remove(self) -> None:
        """rmdir the memcg (this offlines it); kill leftovers of the command first."""
        error = reap(self.path, RMDIR_TIMEOUT_S)
        if self._lifeline is not None:
            os.close(self._lifeline)  # the guardian sees EOF, finds the memcg gone, exits
            self._lifeline = None
            self._guardian.wait()
        if error is not None:
            raise KernelSupportError(f"cannot remove memcg {self.path}: {error.strerror}",
                                     tip=cleanup_tip(self.path))


def cleanup_tip(path: Path) -> str:
    return f"kill -9 $(cat {path}/cgroup.procs); rmdir {path}"


def _start_guardian(path: Path) -> tuple[subprocess.Popen, int]:
    """The guardian process and our end of its lifeline pipe (close-on-exec: ours alone)."""
    read_end, write_end = os.pipe()
    try:
        guardian = subprocess.Popen(
            [sys.executable, "-m", "kmemtrace.record.guardian", str(path)], stdin=read_end,
            stdout=subprocess.DEVNULL, start_new_session=True)
    except OSError as exc:
        os.close(write_end)
        path.rmdir()
        raise KernelSupportError(f"cannot start the memcg guardian: {exc.strerror}") from None
    finally:
        os.close(read_end)
    return guardian, write_end
