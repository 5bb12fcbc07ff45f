"""The dying-memcg calibration on a hand scenario worked out on paper.

Memcg 100 is made at 0 and caches a 2-page folio; it is removed at 1 s and the folio
leaves the cache at 3 s; the kernel frees it (MEMCG_RELEASE) at 3.1 s. Memcg 50 existed
and was already dying before the recording (the baseline): the kernel frees it at 2 s.
The driver sampled the v1 count at 0.5, 1.5, 2.5, 3.5 s: 5, 6, 5, 4.

On paper: memcgs offlined in the trace and held, kernel 0 1 1 0, model (objcg + page
cache) 0 1 1 0, slab rule alone 0 0 0 0. v1 change since start 0 +1 0 -1; the model's,
minus the baseline's own releases (0 0 1 1): 0 +1 0 -1 (slab rule alone 0 0 -1 -1).
Memcg 100 is freed by both, 0.1 s apart.
"""

from analyses.which_way.dying import dying_fit
from analyses.which_way.record import truth_path
from kmemtrace.replay.engine import replay
from kmemtrace.strategies import select
from kmemtrace.trace.reader import open_trace
from kmemtrace.trace.schema import EventKind

from conftest import SEC


def test_dying_fit_against_a_hand_scenario(trace_builder):
    tb = trace_builder()
    tb.cache()
    tb.memcgs.append({"id": 50, "parent": 1, "path": "/old", "level": 1})
    tb.mkdir(0, 100)
    tb.event(10, EventKind.PAGE_CACHE, ptr=0xFFFFEA0000100000, memcg_id=100, aux=2)
    tb.offline(1 * SEC, 100)
    tb.event(2 * SEC, EventKind.MEMCG_RELEASE, memcg_id=50)
    tb.event(3 * SEC, EventKind.PAGE_CACHE, ptr=0xFFFFEA0000100000, memcg_id=100, aux=-2)
    tb.event(3 * SEC + SEC // 10, EventKind.MEMCG_RELEASE, memcg_id=100)
    path = tb.write(end_ns=4 * SEC)
    truth_path(path).write_text("ts_ns,memcgs,online,dying\n" + "".join(
        f"{t * SEC // 2},{10 + d},10,{d}\n" for t, d in ((1, 5), (3, 6), (5, 5), (7, 4))))
    trace = open_trace(path)
    result = replay(trace, select("objcg", {}), samples=9)
    fit = dying_fit(trace, result, result.runs[0], truth_path(path))
    d = fit.over_time
    assert list(d.kernel_rows) == [0, 1, 1, 0]
    assert list(d.model_rows) == [0, 1, 1, 0]
    assert list(d.model_slab_rows) == [0, 0, 0, 0]
    assert list(d.kernel) == [0, 1, 0, -1]
    assert list(d.model_pc) == [0, 1, 0, -1]
    assert list(d.model) == [0, 0, -1, -1]  # slab rule alone: only the baseline's release
    assert fit.errors() == (0.0, 0.0)
    assert fit.errors("model_slab_rows") == (100.0, 100.0)
    assert fit.baseline_start == 5 and fit.baseline_released == 1
    classes = fit.classes()
    assert classes["offlined"] == 1 and classes["freed by both within 1 s"] == 1
    assert classes["existed before the recording"] == 0
