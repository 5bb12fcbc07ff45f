"""Memcg churn for the life-cycle tests: many memcgs made and removed, a few with a task in.

    python3 memcg_churn.py DIR N EVERY

makes N memcgs under DIR in a burst (one ``mkdir`` command for all, then one ``rmdir``), then
N more in a loop (mkdir, rmdir, one at a time). Into every EVERY-th memcg of each phase a
forked child moves itself ("0" into cgroup.procs, as container runtimes do) and allocates
accounted objects (socket pairs, tmpfs files) before it exits. Prints the ids (directory
inode = kernfs id) of every memcg made, and of those that had a task, as lines of at most
100 ids ("made ID...", "tasked ID...": short lines survive a VM console); see parse().
Runs on cgroup v1 and v2, the host's python3 or the lab guest's (stdlib only).
"""

import os
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

SOCKET_PAIRS = 20
FILES = 20


def delegate_memory(parent: Path) -> None:
    """cgroup v2: children of ``parent`` are memcgs only if it delegates memory."""
    control = parent / "cgroup.subtree_control"
    if control.exists() and "memory" not in control.read_text().split():
        control.write_text("+memory")


def allocate_in(memcg: Path) -> None:
    """Fork a child that enters ``memcg``, charges objects to it, frees them, exits."""
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            (memcg / "cgroup.procs").write_text("0")
            pairs = [socket.socketpair() for _ in range(SOCKET_PAIRS)]
            for a, b in pairs:
                a.close()
                b.close()
            with tempfile.TemporaryDirectory(dir="/dev/shm") as d:
                for i in range(FILES):
                    Path(d, f"f{i}").write_text("x")
            code = 0
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    if status:
        raise SystemExit(f"child in {memcg} failed: status {status}")


def main() -> None:
    parent, n, every = Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
    delegate_memory(parent)
    tag = f"kmt-churn-{os.getpid()}"
    made, tasked = [], []

    burst = [parent / f"{tag}-b{i}" for i in range(n)]
    subprocess.run(["mkdir", *map(str, burst)], check=True)
    for i, memcg in enumerate(burst):
        made.append(memcg.stat().st_ino)
        if i % every == 0:
            allocate_in(memcg)
            tasked.append(made[-1])
    subprocess.run(["rmdir", *map(str, burst)], check=True)

    for i in range(n):
        memcg = parent / f"{tag}-l{i}"
        memcg.mkdir()
        made.append(memcg.stat().st_ino)
        if i % every == 0:
            allocate_in(memcg)
            tasked.append(made[-1])
        memcg.rmdir()
    for name, ids in (("made", made), ("tasked", tasked)):
        for i in range(0, len(ids), 100):
            print(name, *ids[i:i + 100], flush=True)


def parse(output: str) -> dict[str, list[int]]:
    """The ids main() printed, from any text holding its lines (stdout, a console log)."""
    found: dict[str, list[int]] = {"made": [], "tasked": []}
    for line in output.splitlines():
        words = line.split()
        if words and words[0] in found and all(w.isdigit() for w in words[1:]):
            found[words[0]] += [int(w) for w in words[1:]]
    return found


if __name__ == "__main__":
    main()
