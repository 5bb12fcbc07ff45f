"""``kmemtrace top``'s state, snapshot and rendering on hand scenarios (no kernel needed).

Each scenario is a batch of trace columns as the recorder hands them to its tap; the
expected tables are worked out on paper in the comments.
"""

from pathlib import Path

import numpy as np

from kmemtrace.top import kernel
from kmemtrace.top.render import plain
from kmemtrace.top.snapshot import (
    Header,
    Snapshot,
    cache_rows,
    memcg_rows,
    sort_memcgs,
)
from kmemtrace.top.state import TopState
from kmemtrace.trace.schema import EventKind, LostReason, empty_columns

SEC = 1_000_000_000
ROOT, A, B = 1, 100, 200
TABLE = [{"id": ROOT, "path": "/"}, {"id": A, "path": "/a"}, {"id": B, "path": "/b"}]
NAMES = ["(kmalloc_large)", "dentry", "inode", "kmalloc-cg-64"]


def batch(*rows: tuple) -> dict[str, np.ndarray]:
    """Rows of (ts_ns, kind, ptr, memcg_id, cache_id, bytes)."""
    cols = empty_columns(len(rows))
    for i, (ts, kind, ptr, memcg, cache, nbytes) in enumerate(rows):
        cols["ts_ns"][i], cols["kind"][i], cols["ptr"][i] = ts, int(kind), ptr
        cols["memcg_id"][i], cols["cache_id"][i], cols["bytes"][i] = memcg, cache, nbytes
    return cols


ALLOC, FREE = EventKind.ALLOC, EventKind.FREE


def scenario() -> tuple[TopState, object]:
    """/a allocates 3 dentries (192 B) and an inode (600 B), frees one dentry; /b allocates
    one 64 B kmalloc; a free of 0x999 (allocated before the start) is unpaired. Then /a goes
    offline. Live: /a 2 dentries + 1 inode = 984 B in 3 objects; /b 64 B."""
    state = TopState(TABLE, 0)
    before = state.counters()
    state.feed(batch((1, ALLOC, 0x10, A, 0, 192), (2, ALLOC, 0x20, A, 0, 192),
                     (3, ALLOC, 0x30, A, 0, 192), (4, ALLOC, 0x40, A, 1, 600),
                     (5, FREE, 0x20, 0, 0, 0), (6, ALLOC, 0x50, B, 2, 64),
                     (7, FREE, 0x999, 0, 0, 0)))
    state.feed(batch((SEC, EventKind.MEMCG_OFFLINE, 0, A, -1, 0)))
    return state, before


def test_frees_are_paired_with_their_alloc_by_address():
    state, _ = scenario()
    now = state.counters()
    a, b = state.index[A], state.index[B]
    assert now.live_bytes[a, 1] == 2 * 192 and now.live_objs[a, 1] == 2
    assert now.live_bytes[a, 2] == 600 and now.live_bytes[b, 3] == 64
    assert now.frees[a, 1] == 1 and now.allocs[a, 1] == 3
    assert now.unpaired_frees[1] == 1  # the free of 0x999, in the dentry column
    assert state.tracked_objects == 4
    assert state.memcgs[a].offline_ns == SEC and state.memcgs[b].online


def test_an_address_allocated_again_while_live_leaves_the_old_object():
    """The FREE in between was not seen: the first object leaves the tables."""
    state = TopState(TABLE, 0)
    state.feed(batch((1, ALLOC, 0x10, A, 0, 192), (2, ALLOC, 0x10, B, 0, 192)))
    now = state.counters()
    assert now.live_objs[state.index[A]].sum() == 0
    assert now.live_objs[state.index[B], 1] == 1


def test_memcgs_unknown_at_start_and_new_caches_grow_the_tables():
    state = TopState(TABLE, 0)
    state.feed(batch(*[(i, ALLOC, 0x1000 + i, 1000 + i, 100 + i, 8) for i in range(40)]))
    now = state.counters()
    assert now.live_objs.sum() == 40 and now.live_objs.shape[1] >= 141
    assert state.memcgs[state.index[1039]].path == "(id 1039)"


def test_rows_rates_and_sorting():
    state, before = scenario()
    now = state.counters()  # ts 1 s: rates are per second over [0, 1 s]
    rows = memcg_rows(state.memcgs, now, before, 3 * SEC, NAMES, lambda _p: True)
    by_id = {r.id: r for r in rows}
    assert set(by_id) == {A, B}  # the root has nothing
    a = by_id[A]
    assert (a.live_bytes, a.live_objects, a.online, a.age_s) == (984, 3, False, 2.0)
    assert a.top_caches == [("inode", 1, 600), ("dentry", 2, 384)]
    assert (a.alloc_per_s, a.free_per_s) == (4.0, 1.0)
    assert a.label == f"(removed) id {A}"
    assert [r.id for r in sort_memcgs(rows, "bytes")] == [A, B]
    assert [r.id for r in sort_memcgs(rows, "rate")] == [A, B]
    assert [r.id for r in sort_memcgs(rows, "age")] == [A, B]  # the dead one first
    caches = {c.name: c for c in cache_rows(state.memcgs, now, before, NAMES)}
    assert caches["dentry"].free_per_s == 2.0  # one paired free, one from before the start
    assert (caches["dentry"].live_objects, caches["dentry"].offline_objects) == (2, 2)
    assert caches["kmalloc-cg-64"].offline_objects == 0
    caches["dentry"].objects = 8
    assert caches["dentry"].offline_share == 0.25


def test_subtree_limits_the_rows():
    state, before = scenario()
    rows = memcg_rows(state.memcgs, state.counters(), before, SEC, NAMES,
                      lambda p: p.startswith("/b"))
    assert [r.id for r in rows] == [B]


def test_the_text_view_names_removed_memcgs_with_their_bytes():
    state, before = scenario()
    now = state.counters()
    rows = memcg_rows(state.memcgs, now, before, 3 * SEC, NAMES, lambda _p: True)
    header = Header(host="h", kernel="6.18", allocator="SLUB", cgroup="v1", attach="x",
                    offline_from="cgroup:cgroup_rmdir", interval_s=1, elapsed_s=3, events_per_s=7,
                    events=7, lost={"RINGBUF_FULL": 5}, online=2, dying=1, dying_source="test",
                    removed_seen=1, tracked_objects=4, subtree=None, record_to=None)
    text = plain(Snapshot(header, rows, cache_rows(state.memcgs, now, before, NAMES), "k"))
    line = next(ln for ln in text.splitlines() if f"(removed) id {A}" in ln)
    assert "984 B" in line and "dying 2s" in line
    assert "lost 5 (RINGBUF_FULL 5)" in text and "1 dying" in text


def test_v1_dying_count_is_num_cgroups_minus_directories(tmp_path: Path):
    mount = tmp_path / "memory"
    (mount / "a" / "b").mkdir(parents=True)
    (mount / "c").mkdir()
    proc = tmp_path / "cgroups"
    proc.write_text("#subsys_name\thierarchy\tnum_cgroups\tenabled\n"
                    "cpu\t1\t1\t1\nmemory\t4\t10\t1\n")
    counts = kernel.memcg_counts("v1", mount, proc_cgroups=proc)
    assert (counts.online, counts.dying) == (4, 6)


def test_v2_dying_count_is_the_kernels_own(tmp_path: Path):
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "cgroup.stat").write_text("nr_descendants 3\nnr_dying_descendants 7\n")
    counts = kernel.memcg_counts("v2", tmp_path, "/sub")
    assert (counts.online, counts.dying) == (4, 7)
    assert "nr_dying_descendants" in counts.source


def test_the_recorders_final_lost_rows_are_summed_by_reason():
    state = TopState(TABLE, 0)
    cols = batch((9, EventKind.LOST, 0, 0, -1, 0), (9, EventKind.LOST, 0, 0, -1, 0),
                 (9, EventKind.LOST, 0, 0, -1, 0))
    cols["aux"][:] = [3, 4, 5]
    cols["aux2"][:] = [LostReason.RINGBUF_FULL, LostReason.RINGBUF_FULL, LostReason.NESTED]
    state.feed(cols)
    assert state.lost_at_stop == {"RINGBUF_FULL": 7, "NESTED": 5}


def test_rows_of_released_empty_memcgs_are_reused_and_rates_restart_from_zero():
    """/a allocates 2 objects and frees them, is released: its row is freed at the next
    read. /b (new) then takes the row: 1 allocation in that second is 1/s, not 1 - 2."""
    state = TopState(TABLE, 0)
    state.feed(batch((1, ALLOC, 0x10, A, 0, 8), (2, ALLOC, 0x20, A, 0, 8),
                     (3, FREE, 0x10, 0, 0, 0), (4, FREE, 0x20, 0, 0, 0),
                     (5, EventKind.MEMCG_OFFLINE, 0, A, -1, 0),
                     (5, EventKind.MEMCG_RELEASE, 0, A, -1, 0),
                     (5, EventKind.MEMCG_RELEASE, 0, 777, -1, 0)))  # removed before start
    row = state.index[A]
    before = state.counters()
    assert A not in state.index and state.memcgs[row] is None and state.offlined == 1
    assert 777 not in state.index
    state.feed(batch((SEC + 5, ALLOC, 0x30, 4242, 0, 8)))  # 1 s after the first read
    assert state.index[4242] == row
    now = state.counters()
    rows = memcg_rows(state.memcgs, now, before, SEC, NAMES, lambda _p: True)
    assert [(r.id, r.alloc_per_s, r.live_objects) for r in rows] == [(4242, 1.0, 1)]
