"""Dying memcgs held by page cache, for the VM lab's cgroup v2 (stdlib only, run as root).

    python3 dying_v2.py CGROUP_ROOT N

Makes an ext4 on a RAM disk (``brd``: its pages are nobody's charge; the lab's work
directory is tmpfs, whose pages the page-cache tracepoints do not see, and a loop device
backed by it would charge its backing pages to the writers' memcgs), and a parent memcg
delegating memory. Then N
children one after another: each runs a job that writes and reads files on the ext4 and
exits, and the child is removed. Then half the jobs' files are deleted, then
``drop_caches`` drops the rest of the page cache (after a sync: it drops clean pages
only), then the filesystem is unmounted.

Between the steps it prints the kernel's own count, the parent's ``cgroup.stat``
``nr_dying_descendants``, as ``dying TS_NS N`` lines (CLOCK_MONOTONIC, the trace's clock;
short lines survive a VM console), and ``step NAME TS_NS``. The ids of the children as
``made ID...``. See parse().
"""

import os
import subprocess
import sys
import time
from pathlib import Path

FILES = 60
PAUSE_S = 1.0  # between a step and its count: the kernel frees a memcg after an RCU grace


def dying(parent: Path) -> int:
    for line in (parent / "cgroup.stat").read_text().splitlines():
        key, value = line.split()
        if key == "nr_dying_descendants":
            return int(value)
    raise SystemExit("cgroup.stat has no nr_dying_descendants")


def report(parent: Path, step: str) -> None:
    time.sleep(PAUSE_S)
    print(f"step {step} {time.monotonic_ns()}", flush=True)
    print(f"dying {time.monotonic_ns()} {dying(parent)}", flush=True)


def job(memcg: Path, where: Path) -> None:
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            (memcg / "cgroup.procs").write_text("0")
            where.mkdir()
            for i in range(FILES):
                (where / f"f{i}").write_bytes(os.urandom(4096 * (1 + i % 4)))
            for i in range(FILES):
                (where / f"f{i}").read_bytes()
            code = 0
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    if status:
        raise SystemExit(f"job in {memcg} failed: status {status}")


def main() -> None:
    root, n = Path(sys.argv[1]), int(sys.argv[2])
    mnt = Path(f"/tmp/kmt-dying-fs-{os.getpid()}")
    mnt.mkdir()
    subprocess.run(["modprobe", "brd", "rd_nr=1", "rd_size=65536"], check=True)
    subprocess.run(["mkfs.ext4", "-q", "-F", "/dev/ram0"], check=True)
    subprocess.run(["mount", "/dev/ram0", str(mnt)], check=True)
    control = root / "cgroup.subtree_control"
    if "memory" not in control.read_text().split():
        control.write_text("+memory")
    parent = root / f"kmt-dying-{os.getpid()}"
    parent.mkdir()
    (parent / "cgroup.subtree_control").write_text("+memory")
    report(parent, "start")
    made = []
    for i in range(n):
        child = parent / f"c{i}"
        child.mkdir()
        made.append(child.stat().st_ino)
        job(child, mnt / f"j{i}")
        child.rmdir()
    print("made " + " ".join(map(str, made)), flush=True)
    report(parent, "removed")
    for i in range(0, n, 2):
        for f in (mnt / f"j{i}").iterdir():
            f.unlink()
    report(parent, "deleted-half")
    os.sync()
    Path("/proc/sys/vm/drop_caches").write_text("1")
    report(parent, "drop-caches")
    subprocess.run(["umount", str(mnt)], check=True)
    report(parent, "unmounted")
    parent.rmdir()


def parse(console: str) -> dict:
    """{"dying": [(ts_ns, n)], "steps": {name: ts_ns}, "made": [ids]} from the output."""
    out = {"dying": [], "steps": {}, "made": []}
    for line in console.splitlines():
        words = line.split()
        if len(words) == 3 and words[0] == "dying" and words[1].isdigit():
            out["dying"].append((int(words[1]), int(words[2])))
        elif len(words) == 3 and words[0] == "step" and words[2].isdigit():
            out["steps"][words[1]] = int(words[2])
        elif words[:1] == ["made"]:
            out["made"] += [int(w) for w in words[1:] if w.isdigit()]
    return out


if __name__ == "__main__":
    main()
