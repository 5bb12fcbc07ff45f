"""SLAB_SAMPLE events are paired with the model's own count of the same root cache."""

import numpy as np
import pytest

from kmemtrace.errors import TraceFormatError
from kmemtrace.metrics import slab_samples
from kmemtrace.model.state import C_VSAMPLE_IDX
from kmemtrace.replay.engine import replay
from kmemtrace.strategies import select
from kmemtrace.trace.reader import open_trace
from kmemtrace.trace.schema import SAMPLE_HAS_CPU_FIELDS, EventKind

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


def test_samples_with_their_own_stamps_and_cpu_fields_read_back(trace_builder):
    """A round whose rows carry each cache's own stamp (in order, ms apart) and, flagged in
    ``gfp``, what the CPUs hold: the reader gives them back as written, and the replay pairs
    each row at its own stamp, as an unflagged row."""
    tb = trace_builder()
    tb.cache(objs_per_slab=4)
    tb.cache(name="other", objs_per_slab=4)
    tb.alloc(10, 0x1000, 1)
    tb.event(SEC, EventKind.SLAB_SAMPLE, cache_id=0, aux=3, aux2=7, bytes=2, pid=1, ptr=3,
             gfp=SAMPLE_HAS_CPU_FIELDS)
    tb.event(SEC + 4_000_000, EventKind.SLAB_SAMPLE, cache_id=1, aux=1, aux2=4)
    trace = open_trace(tb.write(end_ns=2 * SEC))
    cols = next(trace.iter_parts(["ts_ns", "kind", "cache_id", "gfp", "bytes", "pid", "ptr"]))
    sample = cols["kind"] == EventKind.SLAB_SAMPLE
    got = list(zip(*(cols[c][sample].tolist() for c in ("ts_ns", "cache_id", "gfp", "bytes",
                                                          "pid", "ptr")), strict=True))
    assert got == [(SEC, 0, 1, 2, 1, 3), (SEC + 4_000_000, 1, 0, 0, 0, 0)]
    run = replay(trace, select("objcg", {})).runs[0]
    assert slab_samples(run)["ts_ns"].tolist() == [SEC, SEC + 4_000_000]


@pytest.mark.parametrize("row", [dict(gfp=1, bytes=-1), dict(gfp=1, pid=-2)])
def test_a_sample_with_bad_cpu_fields_is_named(trace_builder, row):
    tb = trace_builder()
    tb.cache(objs_per_slab=4)
    tb.event(SEC, EventKind.SLAB_SAMPLE, cache_id=0, aux=3, aux2=7, **row)
    trace = open_trace(tb.write(end_ns=2 * SEC))
    with pytest.raises(TraceFormatError, match="row 0: SLAB_SAMPLE with CPU fields"):
        list(trace.iter_parts(["kind", "gfp", "bytes", "pid"]))
    assert len(next(trace.iter_parts(["kind", "aux"]))["aux"]) == 1  # not asked: not checked
