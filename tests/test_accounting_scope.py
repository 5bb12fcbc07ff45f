"""Which allocations an era charges to a memcg (issue 9 §3), on hand-built traces.

Scenario: memcg 100 allocates at 10..13 ns and goes offline at 1 s; nothing is freed; the
trace ends at 2 s. One cache of 4 objects per one-page slab.
"""

import pytest

from kmemtrace.metrics import compute_metrics
from kmemtrace.replay.engine import replay
from kmemtrace.strategies import select
from kmemtrace.trace.reader import open_trace
from kmemtrace.trace.schema import EventContext

from conftest import SEC

MEMCG = 100


def _replay(path, names="current", **kw):
    r = replay(open_trace(path), select(names, {}), **kw)
    return r, {run.strategy.name: compute_metrics(run) for run in r.runs}


def test_an_interrupt_context_allocation_is_charged_to_no_memcg(trace_builder):
    """One object in task context, one in softirq (its memcg_id is the interrupted
    task's), one of unknown context. The softirq one goes to the root cache: two cache
    instances, and the dead memcg's cache holds 2 objects in one page."""
    tb = trace_builder()
    tb.cache()
    tb.mkdir(0, MEMCG)
    tb.alloc(10, 0x1000, MEMCG, ctx=EventContext.TASK)
    tb.alloc(11, 0x2000, MEMCG, ctx=EventContext.SOFTIRQ)
    tb.alloc(12, 0x3000, MEMCG, ctx=EventContext.UNKNOWN)
    tb.offline(SEC, MEMCG)
    r, ms = _replay(tb.write(end_ns=2 * SEC), "current,objcg")
    cur, obj = ms["current"], ms["objcg"]
    assert cur.caches_created == 2  # memcg 100's instance and the root's
    assert cur.allocs_interrupt_uncharged == obj.allocs_interrupt_uncharged == 1
    assert cur.pinned_pages_end == 1
    assert cur.stranded_slab_bytes_end == 4096  # 2 dead objects, alone in their slab
    # objcg: one shared slab holds all three; the softirq one is nobody's
    assert obj.stranded_object_bytes_end == 2 * 192
    assert (r.interrupt_allocs, r.unknown_ctx_allocs) == (1, 1)
    assert any("1 allocations of unknown context were treated as task context" in n
               for n in r.notes)


@pytest.mark.parametrize("era, all_objects, per_memcg_objects", [
    ("3.14", True, 2),  # before v4.5: every allocation of the memcg's tasks
    ("3.14", False, 1),  # the trace cannot support it: only the marked one
    ("5.16", True, 1),  # v4.5+: only __GFP_ACCOUNT / SLAB_ACCOUNT
])
def test_era_3_14_accounts_every_allocation_of_an_all_objects_trace(
        trace_builder, era, all_objects, per_memcg_objects):
    tb = trace_builder(record={"all_objects": all_objects})
    tb.cache(accounted=False)
    tb.mkdir(0, MEMCG)
    tb.alloc(10, 0x1000, MEMCG, accounted=True, ctx=EventContext.TASK)
    tb.alloc(11, 0x2000, MEMCG, accounted=False, ctx=EventContext.TASK)
    tb.offline(SEC, MEMCG)
    r, ms = _replay(tb.write(end_ns=2 * SEC), era=era)
    m = ms["current"]
    held = m.stranded_slab_bytes_end
    assert held == 4096  # the dead memcg's own slab, whatever it holds
    assert m.caches_created == (1 if per_memcg_objects == 2 else 2)
    old_scope = era == "3.14" and all_objects
    assert any(("every slab allocation of a memcg's tasks" in n) == old_scope
               for n in r.notes if n.startswith("Accounting scope"))
    assert bool(r.warnings) == (era == "3.14" and not all_objects)
