"""Workloads that run inside a memcg while kmemtrace records them.

Each one churns one kind of slab object for ``--seconds`` and leaves ``--keep`` objects
alive past its own exit, handed to a *keeper* child that leaves the memcg for the root and
releases them ``--release-after`` seconds later. That is the case the RFC is about: the
memcg goes offline while its caches still hold objects, and those objects are freed into
dead caches afterwards. Stdlib only, so that starting one per container stays cheap.

    python -m analyses.which_way.work files|sockets|build|mixed --seconds 2 --keep 100
"""

import argparse
import contextlib
import os
import shutil
import socket
import subprocess
import tempfile
import time

ROOT_PROCS = "/sys/fs/cgroup/memory/cgroup.procs"
C_SOURCE = "int f{n}(int x) {{ return x * {n} + {n}; }}\n"


class Survivors:
    """What the keeper releases later: paths to unlink, directories to remove, fds to close."""

    def __init__(self) -> None:
        self.paths: list[str] = []
        self.dirs: list[str] = []
        self.fds: list[int] = []

    def release(self) -> None:
        for p in self.paths:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(p)
        for d in self.dirs:
            shutil.rmtree(d, ignore_errors=True)
        for fd in self.fds:
            os.close(fd)


def files(deadline: float, keep: int, tmp: str, out: Survivors) -> int:
    """tmpfs create/write/unlink churn: dentries, shmem inodes, filps."""
    n = 0
    while time.monotonic() < deadline:
        path = os.path.join(tmp, f"f{n}")
        with open(path, "wb") as fh:
            fh.write(b"x" * 64)
        if n % 7 == 0 and len(out.paths) < keep:
            out.paths.append(path)  # a survivor: the memcg dies before it does
        else:
            os.unlink(path)
        n += 1
    return n


def sockets(deadline: float, keep: int, tmp: str, out: Survivors) -> int:
    """socketpair/send/close churn: UNIX sockets, sock inodes, skbs."""
    n = 0
    while time.monotonic() < deadline:
        a, b = socket.socketpair()
        a.send(b"ping" * 16)
        b.recv(64)
        if n % 5 == 0 and len(out.fds) < 2 * keep:
            out.fds += [a.detach(), b.detach()]
        else:
            a.close()
            b.close()
        n += 1
    return n


def build(deadline: float, keep: int, tmp: str, out: Survivors) -> int:
    """A build-like mix: gcc -c on tiny C files (processes, mm, vmas, files, pipes)."""
    n = 0
    gcc = shutil.which("gcc") or shutil.which("cc")
    while time.monotonic() < deadline:
        src = os.path.join(tmp, f"u{n}.c")
        with open(src, "w") as fh:
            fh.write(C_SOURCE.format(n=n))
        if gcc:
            subprocess.run([gcc, "-O1", "-c", src, "-o", src[:-2] + ".o"], check=True)
        os.unlink(src)
        if len(out.paths) < keep:
            out.paths.append(src[:-2] + ".o")
        n += 1
    return n


def mixed(deadline: float, keep: int, tmp: str, out: Survivors) -> int:
    """A container's short life: files, sockets and pipes, interleaved."""
    n = 0
    while time.monotonic() < deadline:
        step = min(deadline, time.monotonic() + 0.02)
        n += files(step, keep, tmp, out) + sockets(step, keep // 2, tmp, out)
        r, w = os.pipe()
        os.write(w, b"y" * 128)
        os.read(r, 128)
        os.close(r)
        os.close(w)
    return n


WORKLOADS = {"files": files, "sockets": sockets, "build": build, "mixed": mixed}


def hand_to_keeper(out: Survivors, release_after: float) -> None:
    """Fork a child that moves to the root memcg and releases the survivors later.

    The parent waits until the child has left, so the memcg can be removed as soon as the
    parent exits; the parent then drops its copies of the fds, the child holds the last.
    """
    r, w = os.pipe()
    if os.fork() == 0:
        os.close(r)
        try:
            with open(ROOT_PROCS, "w") as fh:
                fh.write(str(os.getpid()))
        except OSError:
            pass  # not root / no v1 hierarchy: the recorder's rmdir will kill us instead
        os.write(w, b"1")
        os.close(w)
        time.sleep(release_after)
        out.release()
        os._exit(0)
    os.close(w)
    os.read(r, 1)
    os.close(r)
    for fd in out.fds:
        os.close(fd)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m analyses.which_way.work")
    ap.add_argument("kind", choices=sorted(WORKLOADS))
    ap.add_argument("--seconds", type=float, default=2.0)
    ap.add_argument("--keep", type=int, default=100, help="objects that outlive the memcg")
    ap.add_argument("--release-after", type=float, default=1.0,
                    help="seconds after exit at which the survivors are released")
    ap.add_argument("--dir", default="/dev/shm", help="tmpfs to churn files in")
    args = ap.parse_args(argv)
    out = Survivors()
    tmp = tempfile.mkdtemp(prefix="kmt-ww-", dir=args.dir)
    out.dirs.append(tmp)
    WORKLOADS[args.kind](time.monotonic() + args.seconds, args.keep, tmp, out)
    hand_to_keeper(out, args.release_after)


if __name__ == "__main__":
    main()
