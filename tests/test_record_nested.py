"""Frees nested under RCU/softirq reach the trace (issue 10, item 1), and every event says
its context. Root, real kernel; CI runs these and they fail, never skip.

The workload creates and closes socketpairs under `record --in-memcg`. Each socket's inode
(sock_inode_cache) is freed by an RCU callback, often in softirq while `kmt_cache_free` is
already running on that CPU: the kernel then skips the nested run of the program. The
independent count is ftrace, in a private tracefs instance (no BPF, so no recursion
guard), on the same tracepoints, with pointers unhashed: per pointer, the frees ftrace saw
of objects the workload allocated must all be in the trace, or the shortfall in LOST.
"""

import collections
from pathlib import Path

import numpy as np
import pytest

from kmemtrace.record.ftrace_ref import frees_of_workload_objects
from kmemtrace.record.probes import find_tracefs
from kmemtrace.trace.schema import EventContext, EventKind

from conftest import assert_loss_is_the_counted_residue, record_socket_churn

pytestmark = pytest.mark.root

N_PAIRS = 30_000
CACHE = "sock_inode_cache"
# Addresses allowed a missed free in their last life, where no later ALLOC can reveal it:
# 0.5 % of the frees (the residue measured here is 0-0.12 %: RCU-callback frees that run
# while a task no BPF program runs under is current, docs/recording.md "Frees no probe
# sees"; the nested loss the twins replaced was 8-23 %).
LAST_LIFE_MAX = 2 * N_PAIRS // 200
@pytest.fixture(scope="module")
def churn(tmp_path_factory):
    return record_socket_churn(tmp_path_factory.mktemp("nested"), N_PAIRS, CACHE)


def _cache_ids(trace, name: str) -> list[int]:
    return [c["id"] for c in trace.caches if c["name"] == name or name in c.get("aliases", [])]


def test_every_free_is_recorded_or_counted_lost(churn):
    trace, text, dropped = churn
    assert dropped == 0, "ftrace itself dropped events: the reference count is not whole"
    df = trace.to_pandas(kinds=[EventKind.ALLOC, EventKind.FREE])
    ids = _cache_ids(trace, CACHE)
    mine = df[df.cache_id.isin(ids)]
    allocs = mine[mine.kind == EventKind.ALLOC]
    pids = allocs.pid.unique()
    assert len(allocs) == 2 * N_PAIRS and len(pids) == 1, (len(allocs), pids)  # 2 inodes a pair
    truth = frees_of_workload_objects(text, int(pids[0]))
    assert sum(truth.values()) == 2 * N_PAIRS  # ftrace saw every socket inode freed
    got = collections.Counter(mine[mine.kind == EventKind.FREE].ptr.astype(np.uint64)
                              .map(int))
    short = truth - got
    missing = sum(short.values())
    # A missed free is inferred (LOST FREE_UNSEEN) when its address is allocated again: per
    # address, the trace then holds two ALLOCs with no FREE between. A miss in an address's
    # last life cannot be, and each address has one last life. So per short address the
    # trace's implied frees are its ftrace shortfall, or one less; and the kernel's
    # FREE_UNSEEN equals the implied frees of the whole trace (conftest).
    implied = _implied_by_ptr(mine)
    for ptr, n in short.items():
        assert n - 1 <= implied[ptr] <= n, (hex(ptr), n, implied[ptr])
    assert_loss_is_the_counted_residue(trace)
    last_lives = missing - sum(implied[p] for p in short)
    assert last_lives <= LAST_LIFE_MAX, (f"{last_lives} addresses short of a free", short)
    assert not (got - truth), "the trace holds frees ftrace never saw (duplicates?)"
    print(f"\n{CACHE}: {2 * N_PAIRS} allocs, ftrace frees {sum(truth.values())}, trace frees "
          f"{sum(got.values())}, missing {missing}, LOST {trace.meta['lost']}, "
          f"rescued by twins {trace.meta['record']['nested_rescued']}")


def _implied_by_ptr(df) -> collections.Counter:
    """Per pointer, ALLOCs that follow an ALLOC of it with no FREE between."""
    rows = df.sort_values("ts_ns", kind="stable")
    last: dict[int, int] = {}
    out: collections.Counter = collections.Counter()
    for ptr, kind in zip(rows.ptr.astype(np.uint64).map(int), rows.kind, strict=True):
        if kind == EventKind.ALLOC and last.get(ptr) == EventKind.ALLOC:
            out[ptr] += 1
        last[ptr] = kind
    return out


def test_no_address_is_allocated_while_live(churn):
    from kmemtrace.trace.summary import implied_frees

    trace = churn[0]
    implied = implied_frees(trace)
    assert implied["total"] <= trace.meta["lost"]["total"], implied


def test_context_is_marked(churn):
    """The workload allocates in task context; RCU frees its socket inodes from softirq."""
    trace = churn[0]
    df = trace.to_pandas(kinds=[EventKind.ALLOC, EventKind.FREE])
    mine = df[df.cache_id.isin(_cache_ids(trace, CACHE))]
    alloc_ctx = set(mine[mine.kind == EventKind.ALLOC].ctx.unique())
    free_ctx = collections.Counter(mine[mine.kind == EventKind.FREE].ctx)
    assert alloc_ctx == {EventContext.TASK}
    assert free_ctx[EventContext.SOFTIRQ] > 0 and free_ctx[EventContext.UNKNOWN] == 0, free_ctx
    assert "-DKMT_PCPU_PREEMPT_COUNT" in " ".join(trace.meta["record"]["cflags"])


def test_ftrace_parser_pairs_by_pointer():
    """The reference count itself, on a hand-made trace: pid 7 allocates 0xa twice (freed in
    between) and 0xb once; 0xc belongs to another task; 0xb is freed once."""
    text = "\n".join([
        " x-7 [000] ..... 1.0: kmem_cache_alloc: call_site=f ptr=000000000000000a name=c",
        " y-9 [001] ..s.. 1.1: kmem_cache_free: call_site=f ptr=000000000000000a name=c",
        " x-7 [000] ..... 1.2: kmem_cache_alloc: call_site=f ptr=000000000000000a name=c",
        " z-8 [000] ..... 1.3: kmem_cache_alloc: call_site=f ptr=000000000000000c name=c",
        " x-7 [000] ..... 1.4: kmem_cache_alloc: call_site=f ptr=000000000000000b name=c",
        " y-9 [001] ..s.. 1.5: kmem_cache_free: call_site=f ptr=000000000000000c name=c",
        " y-9 [001] ..s.. 1.6: kmem_cache_free: call_site=f ptr=000000000000000b name=c",
    ])
    assert frees_of_workload_objects(text, 7) == collections.Counter({0xA: 1, 0xB: 1})


def test_cleanup_left_no_instance():
    tracefs = find_tracefs()
    assert tracefs is not None
    assert not list(Path(tracefs, "instances").glob("kmt-churn-*"))
