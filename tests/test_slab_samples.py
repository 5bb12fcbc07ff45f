"""SLAB_SAMPLE events are paired with the model's own count of the same root cache."""

from kmemtrace.metrics import slab_samples
from kmemtrace.replay.engine import replay
from kmemtrace.strategies import select
from kmemtrace.trace.reader import open_trace
from kmemtrace.trace.schema import EventKind

from conftest import SEC


def test_model_count_sits_beside_the_kernel_count(trace_builder):
    tb = trace_builder()
    tb.cache(objs_per_slab=4)
    tb.mkdir(0, 100)
    for i in range(6):  # 4 + 2: two slabs, in memcg 100's cache or the shared one
        tb.alloc(10 + i, 0x1000 + 0x40 * i, 100)
    tb.event(SEC, EventKind.SLAB_SAMPLE, cache_id=0, aux=3, aux2=7)
    tb.event(SEC + 1, EventKind.SLAB_SAMPLE, cache_id=-1, aux=1, aux2=1)  # unknown: skipped
    trace = open_trace(tb.write(end_ns=2 * SEC))
    for run in replay(trace, select("all", {})).runs:
        got = slab_samples(run)
        assert got["ts_ns"].tolist() == [SEC], run.strategy.name
        assert (got["kernel_slabs"][0], got["kernel_objects"][0]) == (3, 7)
        assert (got["model_slabs"][0], got["model_objects"][0]) == (2, 6), run.strategy.name
