"""Page cache that holds a removed memcg, recorded on the host's cgroup v1 (root, real
kernel; fail, never skip).

A task in a fresh memcg writes files on ext4 (a loop device of its own); the memcg is
removed while they are cached; later the filesystem is unmounted, which drops every page it
cached, the files' and ext4's own metadata blocks alike. (Deleting the files is not enough:
the directory and inode-table blocks the task read are charged to its memcg too and stay
cached, and the kernel keeps the memcg dying for them.)

The files are written into the holes of a fragmented anonymous area, written back, and
compacted until compaction has moved some of the memcg's pages (``/proc/kpagecgroup``: pfns
charged to it before and after). A
migrated folio leaves the cache with no tracepoint and its copy's removal is the one the
unmount reports, so these rows must pair by place in the file, not by struct folio.

The independent counts: the kernel's own ``memory.stat`` ``cache`` of that memcg just
before the removal (page-cache bytes charged to it) against the PAGE_CACHE rows; the pfns
``/proc/kpagecgroup`` charges to it; and the kernel's release of the memcg
(``cgroup:cgroup_release``, the MEMCG_RELEASE row: its css was freed), which must follow the
removal of its last cached page, not the ``rmdir``. The recorder runs whole-system, as the
study does, and the test looks only at its own memcg, so other recorders and workloads do
not matter.
"""

import ctypes
import mmap
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from kmemtrace.metrics import memcg_free_times
from kmemtrace.replay.engine import replay
from kmemtrace.strategies import select
from kmemtrace.trace.reader import open_trace
from kmemtrace.trace.schema import EventKind

from conftest import wait_for_line

pytestmark = pytest.mark.root

MEMCG = Path("/sys/fs/cgroup/memory")
FILES, FILE_BYTES = 1000, 16384  # 4 000 pages of file cache
ENV = {**os.environ, "COLUMNS": "300"}
# memory.stat is flushed lazily: up to MEMCG_CHARGE_BATCH (64) pages per CPU may be pending
STAT_SLACK_PAGES = 64 * os.cpu_count()
WRITER = ("import os, sys\n"
          "d, n, size = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])\n"
          "block = os.urandom(size)\n"
          "for i in range(n):\n"
          "    with open(os.path.join(d, f'f{i}'), 'wb') as fh:\n"
          "        fh.write(block)\n")


def _stat_cache_pages(memcg: Path) -> int:
    for line in (memcg / "memory.stat").read_text().splitlines():
        key, value = line.split()
        if key == "cache":
            return int(value) // 4096
    raise AssertionError("memory.stat has no cache line")


def _pfns_of(memcg_ino: int) -> set[int]:
    """pfns the kernel charges to a memcg (``/proc/kpagecgroup``: one inode number per pfn)."""
    chunks = []
    with open("/proc/kpagecgroup", "rb", buffering=0) as fh:
        while chunk := fh.read(1 << 24):
            chunks.append(chunk)
    owners = np.frombuffer(b"".join(chunks), dtype=np.uint64)
    return set(np.flatnonzero(owners == memcg_ino).tolist())


def _write_into_holes(write, hole_mib: int = 1024, chunk_kib: int = 64) -> None:
    """Run ``write`` while anonymous memory holds every other 64 KiB of a 1 GiB area: the
    files' folios land in the holes, in half-used pageblocks that compaction empties.

    Written where the allocator chose, the pages often sat in the pageblocks compaction moves
    pages *into* (it fills partly used movable blocks from the top of the zone) and stayed:
    on 6.18, written back and compacted, 0-2 of 4 075 pages moved in seven of eight
    rewrites. Written into the holes after a compaction, 1 464-4 000 moved in eight test
    runs of eight with the recorder running (without that compaction, one run of
    twenty-one moved none in four tries)."""
    size, chunk = hole_mib << 20, chunk_kib << 10
    area = mmap.mmap(-1, size, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS | mmap.MAP_POPULATE)
    view = ctypes.c_char.from_buffer(area)
    try:
        madvise, base = ctypes.CDLL(None).madvise, ctypes.addressof(view)
        for off in range(0, size, 2 * chunk):
            madvise(ctypes.c_void_p(base + off), chunk, mmap.MADV_DONTNEED)
        write()
    finally:
        del view
        area.close()


def _move_some_pages(memcg_ino: int, write, tries: int = 4) -> int:
    """Write the files into holes and compact, until some of the memcg's cached pages moved;
    how many did (kernel's count). The files are written back first: compaction does not
    migrate a dirty page-cache page (6.18: 251 of 4 076 freshly written pages moved, 3 574
    after a ``sync``)."""
    for _ in range(tries):
        # Compacted first, the free memory the last try (or test) left in small blocks is
        # merged and the holes are where small allocations find room.
        Path("/proc/sys/vm/compact_memory").write_text("1")
        _write_into_holes(write)
        os.sync()
        before = _pfns_of(memcg_ino)
        Path("/proc/sys/vm/compact_memory").write_text("1")
        moved = len(before - _pfns_of(memcg_ino))
        if moved >= 32:
            return moved
    return moved


def _wait_detached(image: Path, timeout_s: float = 30.0) -> None:
    """Until no loop device is backed by ``image`` (``losetup -j``)."""
    deadline = time.monotonic() + timeout_s
    while subprocess.run(["losetup", "-j", str(image)], capture_output=True,
                         text=True).stdout.strip():
        assert time.monotonic() < deadline, f"a loop device still holds {image}"
        time.sleep(0.2)


def _wait_uncharged(memcg_ino: int, timeout_s: float = 30.0) -> int:
    """Until the kernel charges no page to the memcg (its cache left with the files); how
    many pages it still charges when the wait ends."""
    deadline = time.monotonic() + timeout_s
    while (left := len(_pfns_of(memcg_ino))) and time.monotonic() < deadline:
        time.sleep(0.5)
    return left


def _flags_of(pfns: set[int]) -> list[str]:
    """``/proc/kpageflags`` of some pfns, as hex: what kind of page the kernel kept."""
    with open("/proc/kpageflags", "rb", buffering=0) as fh:
        flags = []
        for pfn in sorted(pfns)[:8]:
            fh.seek(pfn * 8)
            flags.append(hex(int.from_bytes(fh.read(8), "little")))
    return flags


def _now_ns() -> int:
    return time.clock_gettime_ns(time.CLOCK_MONOTONIC)


@pytest.fixture(scope="module")
def ext4(tmp_path_factory):
    """A fresh ext4 on a loop device (64 MiB image), unmounted at the end if still mounted."""
    base = tmp_path_factory.mktemp("ext4")
    image, mnt = base / "fs.img", base / "mnt"
    with open(image, "wb") as fh:
        fh.truncate(64 << 20)
    subprocess.run(["mkfs.ext4", "-q", str(image)], check=True)
    mnt.mkdir()
    subprocess.run(["mount", "-o", "loop", str(image), str(mnt)], check=True)
    try:
        yield mnt
    finally:
        if os.path.ismount(mnt):
            subprocess.run(["umount", str(mnt)], check=True)


@pytest.fixture(scope="module")
def recorded(tmp_path_factory, ext4):
    out = tmp_path_factory.mktemp("pagecache") / "trace"
    memcg = MEMCG / f"i12c-pc-{os.getpid()}"
    files = ext4
    rec = subprocess.Popen([sys.executable, "-m", "kmemtrace", "record", "-o", str(out)],
                           stderr=subprocess.PIPE, text=True, env=ENV)
    marks = {}
    try:
        wait_for_line(rec.stderr, "recording to", 120)
        time.sleep(1.0)
        memcg.mkdir()
        marks["id"] = memcg.stat().st_ino

        def write():  # each try writes the files anew: their pages are charged afresh
            subprocess.run(["/bin/sh", "-c", f'echo $$ > {memcg}/cgroup.procs && exec '
                            f'{sys.executable} -c "$0" {files} {FILES} {FILE_BYTES}', WRITER],
                           check=True, timeout=120)

        marks["moved"] = _move_some_pages(marks["id"], write)
        marks["stat_pages"] = _stat_cache_pages(memcg)
        marks["rmdir_ns"] = _now_ns()
        memcg.rmdir()
        time.sleep(2.0)  # dying: held by its cached files
        marks["delete_ns"] = _now_ns()
        subprocess.run(["umount", str(files)], check=True)
        # The loop device charged its backing file's page cache to the memcg that issued the
        # I/O; that cache outlives the unmount (seen in full suites: +20 pages, no release),
        # and the loop device lets go of the file only when its rundown, after the unmount,
        # has run (seen in a full suite: 1 page left, no release, when the image was
        # unlinked 0 s after the unmount). So: wait for the detach, unlink, and wait until
        # the kernel charges no page to the memcg (/proc/kpagecgroup).
        _wait_detached(files.parent / "fs.img")
        (files.parent / "fs.img").unlink()
        marks["left_charged"] = _wait_uncharged(marks["id"])
        if marks["left_charged"]:
            # Seen once on a fresh CI machine (before the pages charged here were counted):
            # the trace held one page of the memcg past the unmount and the unlink, and the
            # kernel never released the memcg. What kept it is not known (not reproduced
            # here, also after dropping every cache first); one candidate is a block of the
            # host's own filesystem that the loop device's writes to its image read in,
            # charged to the memcg the I/O was for, which no unmount drops. Written back and
            # dropped as clean cache, such a page leaves through the traced path and the
            # trace must follow it out; the flags say what kind of page it was.
            marks["left_flags"] = _flags_of(_pfns_of(marks["id"]))
            os.sync()
            Path("/proc/sys/vm/drop_caches").write_text("1")
            marks["left_after_drop"] = _wait_uncharged(marks["id"])
        time.sleep(2.0)  # the release follows an RCU grace period and a work item
    finally:
        if rec.poll() is None:
            rec.send_signal(signal.SIGINT)
        err = rec.communicate(timeout=300)[1]
        if memcg.exists():
            memcg.rmdir()
    assert rec.returncode == 0, err[-3000:]
    trace = open_trace(out)
    return trace, trace.to_pandas(), marks


def test_page_cache_rows_match_the_kernels_memory_stat(recorded):
    trace, df, marks = recorded
    assert trace.meta["record"]["page_cache"] is True
    mine = df[(df.kind == EventKind.PAGE_CACHE) & (df.memcg_id == marks["id"])]
    before = mine[mine.ts_ns < marks["rmdir_ns"]]
    cached = int(before.aux.sum())
    assert cached >= FILES * FILE_BYTES // 4096
    assert abs(cached - marks["stat_pages"]) <= STAT_SLACK_PAGES, (cached, marks)
    assert int(mine.aux.sum()) == 0  # every inserted page left at the unmount
    per_folio = mine.groupby("ptr").aux.sum()
    assert (per_folio == 0).all()  # each removal names its insertion's folio, moved or not
    lost = trace.meta["lost"]["by_reason"].get("PAGE_CACHE", 0)
    assert lost == 0


def test_the_kernel_uncharged_every_page_of_the_memcg(recorded):
    """The scenario ended: the kernel charges the memcg no page (``/proc/kpagecgroup``)."""
    _, _, marks = recorded
    assert marks.get("left_after_drop", marks["left_charged"]) == 0, marks


def test_compaction_moved_some_of_the_memcgs_cached_pages(recorded):
    """The scenario the pairing must survive happened: the kernel moved cached pages (their
    removal at the unmount is then the copies' removal; the other tests check the rows)."""
    _, _, marks = recorded
    assert marks["moved"] >= 32, marks


def test_the_memcg_is_released_after_its_last_page_not_at_rmdir(recorded):
    """Kernel truth: the cgroup_release row. The model's pin ends at the last removal."""
    _, df, marks = recorded
    me = df[df.memcg_id == marks["id"]]
    offline = me.ts_ns[me.kind == EventKind.MEMCG_OFFLINE].to_numpy()
    release = me.ts_ns[me.kind == EventKind.MEMCG_RELEASE].to_numpy()
    pc = me[me.kind == EventKind.PAGE_CACHE]
    net = np.cumsum(pc.aux.to_numpy())
    last_page_ns = int(pc.ts_ns.to_numpy()[np.flatnonzero(net == 0)[-1]])
    assert len(offline) == 1 and len(release) == 1
    assert offline[0] < marks["delete_ns"] <= last_page_ns < release[0]
    assert release[0] - last_page_ns < 1_000_000_000


def test_the_model_frees_the_memcg_when_the_kernel_did(recorded):
    """objcg (6.x): slab never holds it, page cache does: the model's free is at the last
    page's removal, after the deletion began and within 1 s before the kernel's release."""
    trace, df, marks = recorded
    r = replay(trace, select("objcg", {}), samples=50)
    offline_ns, free_ns = memcg_free_times(r.runs[0], r.memcg_ids)[marks["id"]]
    me = df[df.memcg_id == marks["id"]]
    release = int(me.ts_ns[me.kind == EventKind.MEMCG_RELEASE].iloc[0])
    assert offline_ns < marks["delete_ns"] <= free_ns < release
    assert release - free_ns < 1_000_000_000
