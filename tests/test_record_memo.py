"""Recording everything (`--all-objects`), every kmem_cache_alloc and kmem_cache_free takes
its cache from a per-CPU memo in front of the `caches` hash (bpf/kmemtrace.bpf.c,
cache_ref()). A memo entry read while a nested program rewrote it, or a collision served as
a hit, would give an event another cache's id. Root, real kernel; CI runs it and it fails,
never skips.

The independent truth is ftrace in a private tracefs instance, filtered to one cache by name
(no BPF): per pointer, which objects of that cache the workload allocated and which of them
were freed. The workload (socket churn) touches several caches per iteration, and its
socket inodes are freed in RCU softirq, nested inside other programs.
"""

import collections

import numpy as np
import pytest

from kmemtrace.record.ftrace_ref import LINE
from kmemtrace.trace.schema import EventKind

from conftest import record_socket_churn

pytestmark = pytest.mark.root

N_PAIRS = 5_000
CACHE = "sock_inode_cache"


def test_every_event_of_a_cache_carries_that_cache(tmp_path):
    trace, text, dropped = record_socket_churn(tmp_path, N_PAIRS, CACHE, "--all-objects")
    assert dropped == 0, "ftrace itself dropped events: the reference is not whole"
    ids = {c["id"] for c in trace.caches if c["name"] == CACHE or CACHE in c.get("aliases", [])}
    df = trace.to_pandas(kinds=[EventKind.ALLOC, EventKind.FREE])
    allocs = df[(df.kind == EventKind.ALLOC) & df.cache_id.isin(ids)]
    pids = allocs.pid.unique()
    assert len(allocs) == 2 * N_PAIRS and len(pids) == 1, (len(allocs), pids)
    pid = int(pids[0])

    # ftrace: the workload's sock_inode_cache objects, and how often each was freed after
    truth_allocs: collections.Counter = collections.Counter()
    truth_frees: collections.Counter = collections.Counter()
    live: set[int] = set()
    for m in LINE.finditer(text):
        tid, event, ptr = int(m.group(1)), m.group(2), int(m.group(3), 16)
        if event == "kmem_cache_alloc" and tid == pid:
            truth_allocs[ptr] += 1
            live.add(ptr)
        elif event == "kmem_cache_free" and ptr in live:
            live.discard(ptr)
            truth_frees[ptr] += 1
    assert sum(truth_allocs.values()) == 2 * N_PAIRS

    got_allocs = collections.Counter(allocs.ptr.astype(np.uint64).map(int))
    assert got_allocs == truth_allocs  # same objects, every one under this cache's id

    # Every FREE in the trace of one of those objects names this cache, not another one.
    ptrs = set(truth_frees)
    frees = df[(df.kind == EventKind.FREE) & df.ptr.astype(np.uint64).map(int).isin(ptrs)]
    wrong = frees[~frees.cache_id.isin(ids)]
    # (a pointer reused by another cache after its last free here would be a FREE of that
    # cache: only frees between this cache's ALLOC and ftrace's free are compared)
    mine = frees[frees.cache_id.isin(ids)]
    assert len(mine) >= 0.99 * sum(truth_frees.values()), (len(mine), sum(truth_frees.values()))
    reused = set(df[(df.kind == EventKind.ALLOC) & ~df.cache_id.isin(ids)].ptr.astype(np.uint64)
                 .map(int))
    assert set(wrong.ptr.astype(np.uint64).map(int)) <= reused, wrong.head()
