"""``record --in-memcg -- COMMAND``: a fresh memcg around one command.

The point is a complete memcg life in the trace: MKDIR, the command's allocations charged
to it, then the offline when we remove the directory after the command ends (objects still
charged make it a dying memcg, the case the strategies differ on). The child moves itself
into the memcg between fork and exec, so every allocation of the command is charged there.
"""

import contextlib
import os
import secrets
import signal
import subprocess
import time
from pathlib import Path

from kmemtrace.errors import KernelSupportError, UsageError

RMDIR_TIMEOUT_S = 5.0


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


class FreshMemcg:
    """A memcg directory we create, run one command in, and remove."""

    def __init__(self, mount: Path):
        self.mount = mount
        self.path = mount / f"kmemtrace-{os.getpid()}-{secrets.token_hex(3)}"
        _delegate_memory(mount)
        try:
            self.path.mkdir()
        except OSError as exc:
            raise KernelSupportError(f"cannot create memcg {self.path}: {exc.strerror}") from None
        self.id = self.path.stat().st_ino  # = kernfs id = cgroup:cgroup_mkdir's id
        self.rel = "/" + str(self.path.relative_to(mount))
        self.level = self.rel.count("/")
        self.proc: subprocess.Popen | None = None

    def spawn(self, argv: list[str]) -> subprocess.Popen:
        procs = str(self.path / "cgroup.procs")

        def enter_memcg() -> None:  # runs in the child, before exec
            with open(procs, "w") as fh:
                fh.write("0")  # "0" = the writing task itself (v1 and v2)

        try:
            self.proc = subprocess.Popen(argv, preexec_fn=enter_memcg)
        except OSError as exc:
            self.remove()
            raise UsageError(f"cannot run {argv[0]!r}: {exc.strerror}") from None
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

    def _members(self) -> list[int]:
        try:
            return [int(p) for p in (self.path / "cgroup.procs").read_text().split()]
        except OSError:
            return []

    def remove(self) -> None:
        """rmdir the memcg (this offlines it); kill leftovers of the command first."""
        deadline = time.monotonic() + RMDIR_TIMEOUT_S
        while True:
            try:
                self.path.rmdir()
                return
            except FileNotFoundError:
                return
            except OSError as exc:
                if time.monotonic() > deadline:
                    raise KernelSupportError(
                        f"cannot remove memcg {self.path}: {exc.strerror}",
                        tip=f"kill the tasks in {self.path}/cgroup.procs and rmdir it",
                    ) from None
            for pid in self._members():  # daemons the command left behind
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            time.sleep(0.05)
