"""SLAB_SAMPLE events are paired with the model's own count of the same root cache."""

import numpy as np

from kmemtrace.metrics import slab_samples
from kmemtrace.model.state import C_VSAMPLE_IDX
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


def test_a_comparison_replay_keeps_no_slab_samples(trace_builder):
    """``slab_samples=False`` (the replay CLI, the fleet): no pairing and no array for it,
    since it grows with the recording's length; every other number is the same."""
    tb = trace_builder()
    tb.cache(objs_per_slab=4)
    tb.mkdir(0, 100)
    for i in range(6):
        tb.alloc(10 + i, 0x1000 + 0x40 * i, 100)
    for s in range(1, 4):
        tb.event(s * SEC, EventKind.SLAB_SAMPLE, cache_id=0, aux=3, aux2=7)
    trace = open_trace(tb.write(end_ns=4 * SEC))
    paired = replay(trace, select("all", {}))
    bare = replay(trace, select("all", {}), slab_samples=False)
    for with_, without in zip(paired.runs, bare.runs, strict=True):
        assert with_.model.vsample.shape == (6, 3)
        assert without.model.vsample.size == 0
        assert slab_samples(without)["ts_ns"].tolist() == []
        assert with_.model.ctr[C_VSAMPLE_IDX] == 3 and without.model.ctr[C_VSAMPLE_IDX] == 0
        keep = np.arange(len(with_.model.ctr)) != C_VSAMPLE_IDX
        assert with_.model.ctr[keep].tolist() == without.model.ctr[keep].tolist()
        assert (with_.model.series == without.model.series).all()
