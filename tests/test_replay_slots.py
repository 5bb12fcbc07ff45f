"""Destroyed cache instances give their slot back: memory follows the caches alive.

Hand scenario: three containers one after another, each allocating two objects in its
own cache, going offline at +1 s and freeing them at +2 s and +3 s. Way #1 destroys each
dead cache at its last free, so the second and third container reuse the first one's slot;
the current kernel never destroys, so it needs three. The destroy times must survive the
reuse: three latencies of exactly 2 s.
"""

import numpy as np
import pytest

from kmemtrace.metrics import compute_metrics, destroy_latencies_s
from kmemtrace.model.state import C_DLOG_LEN, C_NINST
from kmemtrace.replay.engine import replay
from kmemtrace.strategies import select
from kmemtrace.trace.reader import open_trace

from conftest import SEC


@pytest.fixture
def three_containers(trace_builder):
    tb = trace_builder()
    tb.cache()
    for k in range(3):
        memcg, t0, ptr = 100 + k, 10 * k * SEC, 0x1000 + 0x100 * k
        tb.mkdir(t0, memcg)
        tb.alloc(t0 + 1, ptr, memcg)
        tb.alloc(t0 + 2, ptr + 0x40, memcg)
        tb.offline(t0 + SEC, memcg)
        tb.free(t0 + 2 * SEC, ptr)
        tb.free(t0 + 3 * SEC, ptr + 0x40)
    return replay(open_trace(tb.write(end_ns=30 * SEC)), select("current,way1", {}))


def test_a_destroyed_cache_slot_is_reused(three_containers):
    current, way1 = three_containers.runs
    assert current.model.ctr[C_NINST] == 3 and current.model.ctr[C_DLOG_LEN] == 0
    assert way1.model.ctr[C_NINST] == 1 and way1.model.ctr[C_DLOG_LEN] == 3


def test_destroy_times_survive_the_reuse(three_containers):
    current, way1 = three_containers.runs
    np.testing.assert_array_equal(destroy_latencies_s(way1), [2.0, 2.0, 2.0])
    assert np.isinf(destroy_latencies_s(current)).all() and len(destroy_latencies_s(current)) == 3
    m = compute_metrics(way1)
    assert (m.caches_created, m.caches_destroyed, m.destroyed_later) == (3, 3, 3)
    assert m.destroy_latency_max_s == 2.0 and m.dead_caches_never_destroyed == 0
    assert compute_metrics(current).dead_caches_never_destroyed == 3
