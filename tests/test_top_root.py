"""``kmemtrace top`` on the real kernel, used as a person would (root; fail, never skip).

The workload: a process in a fresh memcg creates N empty files on tmpfs (/dev/shm) and
exits; the memcg is then removed. The files keep their inode (shmem_inode_cache, one per
file) and dentry (one per file, plus the lookups the process made) charged to the memcg,
which goes offline holding them. The independent counts: N itself (a hand count: exactly
N shmem inodes), the kernel's ``memory.kmem.usage_in_bytes`` of the memcg read before the
rmdir (everything charged, so at least what ``top`` saw), ``/sys/kernel/slab`` for the
cache, and the trace ``--record-to`` wrote of the same session.
"""

import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from kmemtrace.cli.top import READY
from kmemtrace.trace.reader import open_trace
from kmemtrace.trace.schema import EventKind

from conftest import wait_for_line

pytestmark = pytest.mark.root

REPO = Path(__file__).resolve().parents[1]
MEMCG = Path("/sys/fs/cgroup/memory")
SLAB = Path("/sys/kernel/slab")
N = 2000
PREFIX = f"kmt-i14-top-{os.getpid()}"


def shmem_size() -> int:
    return int((SLAB / "shmem_inode_cache" / "slab_size").read_text())


def make_files_in(memcg: Path, folder: Path, n: int = N) -> None:
    """Create ``n`` empty files in ``folder`` from a process charged to ``memcg``."""
    def enter() -> None:
        (memcg / "cgroup.procs").write_text("0")

    subprocess.run(["/usr/bin/python3", "-c",
                    f"for i in range({n}): open('{folder}/f%d' % i, 'w').close()"],
                   preexec_fn=enter, check=True, timeout=120)


@pytest.fixture
def place():
    """A parent memcg (the view's --cgroup) and a tmpfs folder; both removed at the end,
    files first so the memcgs can be released."""
    parent = MEMCG / PREFIX
    folder = Path("/dev/shm") / PREFIX
    parent.mkdir()
    folder.mkdir()
    try:
        yield parent, folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)
        for child in parent.iterdir():
            if child.is_dir():
                child.rmdir()
        parent.rmdir()


def test_once_json_counts_the_objects_of_a_removed_memcg(place, tmp_path):
    parent, folder = place
    trace = tmp_path / "session"
    top = subprocess.Popen([sys.executable, "-m", "kmemtrace", "top", "--once", "--interval",
                            "10s", "--cgroup", parent.name, "--format", "json", "-n", "50",
                            "--record-to", str(trace)], cwd=REPO,
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_for_line(top.stderr, READY, 120)
        job = parent / "job"
        job.mkdir()
        job_id = job.stat().st_ino
        objects_before = int((SLAB / "shmem_inode_cache" / "objects").read_text().split()[0])
        make_files_in(job, folder)
        kmem = int((job / "memory.kmem.usage_in_bytes").read_text())
        job.rmdir()
        out, err = top.communicate(timeout=120)
    finally:
        if top.poll() is None:
            top.kill()
    assert top.returncode == 0, err
    snap = json.loads(out)
    row = next(r for r in snap["memcgs"] if r["id"] == job_id)
    assert not row["online"] and row["label"] == f"(removed) id {job_id}"
    assert row["path"] == f"/{parent.name}/job"
    caches = {name: (objs, nbytes) for name, objs, nbytes in row["top_caches"]}
    assert caches["shmem_inode_cache"] == (N, N * shmem_size())  # one inode per file
    assert caches["dentry"][0] >= N  # one per file, plus the process's own lookups
    # the kernel charged at least what top saw (it also charges stacks, page tables ...)
    assert N * shmem_size() <= row["live_bytes"] <= kmem
    assert snap["header"]["removed_seen"] >= 1 and snap["header"]["dying"] is not None
    shmem = next(c for c in snap["caches"] if c["name"] == "shmem_inode_cache")
    assert shmem["offline_objects"] >= N
    assert shmem["objects"] >= objects_before - 100 + N  # others create tmpfs files too
    # --record-to kept a normal trace of the same session: the same N inodes
    df = open_trace(trace).to_pandas()
    meta = json.loads((trace / "meta.json").read_text())
    shmem_id = next(c["id"] for c in meta["caches"] if c["name"] == "shmem_inode_cache")
    allocs = df[(df.kind == EventKind.ALLOC) & (df.memcg_id == job_id)]
    assert (allocs.cache_id == shmem_id).sum() == N
    assert job_id in set(df.memcg_id[df.kind == EventKind.MEMCG_OFFLINE])


def tmux(*args: str) -> subprocess.CompletedProcess:
    """tmux on a server of this test's own (other users of tmux keep theirs)."""
    return subprocess.run(["tmux", "-L", PREFIX, "-f", "/dev/null", *args],
                          capture_output=True, text=True, check=True)


def capture(session: str) -> str:
    return tmux("capture-pane", "-p", "-t", session).stdout


def wait_screen(session: str, pattern: str, timeout: float) -> str:
    """Capture the pane until a line matches ``pattern``; return that line."""
    deadline = time.monotonic() + timeout
    screen = ""
    while time.monotonic() < deadline:
        screen = capture(session)
        for line in screen.splitlines():
            if re.search(pattern, line):
                return line
        time.sleep(0.5)
    raise AssertionError(f"never saw {pattern!r} on screen:\n{screen}")


SIZE = re.compile(r"(\d+(?:\.\d)?) (B|KiB|MiB|GiB)\b")
UNITS = {"B": 1, "KiB": 1 << 10, "MiB": 1 << 20, "GiB": 1 << 30}


def test_tmux_screen_shows_a_memcg_appear_then_go_removed_with_its_bytes(place, tmp_path):
    parent, folder = place
    session = PREFIX
    done = tmp_path / "exit-code"
    # The pane's own size, as for a person (a COLUMNS inherited from the test run would win)
    command = (f"unset COLUMNS LINES; {sys.executable} -m kmemtrace top --interval 1s "
               f"--cgroup {parent.name} -n 10; echo $? > {done}")
    tmux("new-session", "-d", "-s", session, "-x", "200", "-y", "50", "-c", str(REPO), command)
    tmux("resize-window", "-t", session, "-x", "200", "-y", "50")
    try:
        wait_screen(session, r"^kmemtrace top .*every 1s", 120)
        job = parent / "job"
        job.mkdir()
        job_id = job.stat().st_ino
        make_files_in(job, folder)
        wait_screen(session, rf"/{parent.name}/job .*online", 30)
        job.rmdir()
        # dying, or already freed: since 5.9 its objects move to the parent's obj_cgroup at
        # offline and need not hold it; they stay on screen under the removed memcg
        line = wait_screen(session, rf"\(removed\) id {job_id} .*(dying|freed) ", 30)
        value, unit = SIZE.search(re.split(r"dying|freed", line, maxsplit=1)[1]).groups()
        assert float(value) * UNITS[unit] >= 0.95 * N * shmem_size()  # rounded on screen
        tmux("send-keys", "-t", session, "q")
        deadline = time.monotonic() + 30
        while not done.exists() and time.monotonic() < deadline:
            time.sleep(0.2)
        assert done.read_text().strip() == "0"
    finally:
        subprocess.run(["tmux", "-L", PREFIX, "kill-server"], capture_output=True)
        Path(f"/tmp/tmux-{os.getuid()}/{PREFIX}").unlink(missing_ok=True)  # its socket
