"""The writer thread between the drain side and the disk: bound, loss counting, failures."""

import itertools
import time

import numpy as np
import pytest

from kmemtrace.errors import KmemtraceError
from kmemtrace.record.pipeline import WriterThread
from kmemtrace.trace.meta import load_meta, new_meta
from kmemtrace.trace.reader import open_trace
from kmemtrace.trace.schema import EventKind, LostReason, empty_columns
from kmemtrace.trace.writer import TraceWriter


def batch(ts: np.ndarray, kind: EventKind, *, cpu: int = 0, seq0: int = 0) -> dict:
    cols = empty_columns(len(ts))
    cols["ts_ns"][:] = ts
    cols["seq"][:] = np.arange(seq0, seq0 + len(ts))
    cols["kind"][:] = kind
    cols["cpu"][:] = cpu
    return cols


def lost_rows(lost: dict[tuple[int, int], int], ts: int) -> dict:
    cols = batch(np.full(len(lost), ts), EventKind.LOST, seq0=10**9)
    for i, ((cpu, reason), count) in enumerate(sorted(lost.items())):
        cols["cpu"][i], cols["aux"][i], cols["aux2"][i] = cpu, count, reason
    return cols


def test_a_full_queue_drops_only_slab_rows_and_counts_them_per_cpu(tmp_path):
    writer = TraceWriter(tmp_path / "t", new_meta("test"), reorder_window_ns=0)
    pipe = WriterThread(writer, max_rows=10)
    mixed = {k: np.concatenate([a, b]) for (k, a), b in zip(
        batch(np.arange(15), EventKind.ALLOC, cpu=1).items(),
        batch(np.arange(15, 17), EventKind.MEMCG_MKDIR, seq0=15).values(), strict=True)}
    pipe.put(mixed)  # 17 rows > 10: the 15 ALLOCs go, the 2 MKDIRs stay
    pipe.put(batch(np.arange(20, 24), EventKind.FREE, seq0=20))  # fits (2 + 4 <= 10) or
    # the writer already took the MKDIRs: either way these 4 rows are queued
    assert pipe.lost_rows() == {(1, int(LostReason.WRITER_QUEUE)): 15}
    pipe.put(lost_rows(pipe.lost_rows(), 30))
    meta = pipe.close()
    assert meta["complete"]
    assert meta["counts"]["ALLOC"] == 0 and meta["counts"]["MEMCG_MKDIR"] == 2
    assert meta["counts"]["FREE"] == 4
    assert meta["lost"] == {"total": 15, "by_reason": {"WRITER_QUEUE": 15}}
    df = open_trace(tmp_path / "t").to_pandas()
    assert len(df) == 7 and df.ts_ns.is_monotonic_increasing


def test_a_failed_write_keeps_sealed_parts_and_counts_every_dropped_row(tmp_path):
    out = tmp_path / "t"
    writer = TraceWriter(out, new_meta("test"), reorder_window_ns=0, rotate_rows=100)
    pipe = WriterThread(writer)
    pipe.put(batch(np.arange(100), EventKind.ALLOC))  # sealed at once: part 0
    while writer.rows_written < 100:
        time.sleep(0.01)  # the writer thread seals it
    (out / "events").rename(tmp_path / "moved")  # the next part cannot be created
    pipe.put(batch(np.arange(100, 250), EventKind.FREE, seq0=100))  # 150 rows: seal fails
    pipe.put(batch(np.arange(250, 260), EventKind.ALLOC, seq0=250))  # after the failure
    pipe.put(lost_rows({(0, int(LostReason.RINGBUF_FULL)): 7}, 300))
    with pytest.raises(KmemtraceError) as err:
        pipe.close()
    msg = str(err.value)
    assert "No such file or directory" in msg and "160 events dropped" in msg
    assert "the 1 sealed part stays readable" in msg
    meta = load_meta(out)
    assert meta["complete"] is False and meta["write_error"] == "No such file or directory"
    assert meta["counts"]["ALLOC"] == 100 and meta["counts"]["FREE"] == 0
    assert meta["lost"]["by_reason"] == {"WRITE_FAILED": 160, "RINGBUF_FULL": 7}
    assert meta["lost"]["total"] == 167
    (tmp_path / "moved").rename(out / "events")
    assert len(open_trace(out).to_pandas()) == 100
    assert not list((out / "events").glob(".*.tmp"))


def test_reused_writer_buffers_keep_every_row_in_order_across_many_parts(tmp_path):
    """The writer sorts and seals from buffers it reuses part after part (and grows): two
    CPUs' interleaved, mutually out-of-order batches over 10 or more rotations must come back whole,
    each row with its own values, sorted by (ts_ns, seq), parts not overlapping in time. The
    caller reuses its arrays after each append, as the drain may."""
    rng = np.random.default_rng(7)
    writer = TraceWriter(tmp_path / "t", new_meta("test"), rotate_rows=500,
                         reorder_window_ns=500)
    sent, seq, scratch = [], 0, batch(np.zeros(400, np.int64), EventKind.ALLOC)
    for i in range(40):
        cpu = i % 2
        n = int(rng.integers(1, 400))
        # CPU 1 lags CPU 0 by up to 300 ns: within the 500 ns reorder window
        ts = np.sort(i * 300 + rng.integers(0, 300, n)) - cpu * 300
        cols = {name: c[:n] for name, c in scratch.items()}
        cols["ts_ns"][:] = np.maximum(ts, 0)
        cols["seq"][:] = np.arange(seq, seq + n)
        cols["cpu"][:] = cpu
        cols["ptr"][:] = rng.integers(1, 1 << 40, n, dtype=np.uint64)
        seq += n
        sent.append({name: c.copy() for name, c in cols.items()})
        writer.append(cols)
        scratch["ptr"][:] = 0  # the caller's arrays change after the append
    writer.close()
    want = {name: np.concatenate([b[name] for b in sent]) for name in sent[0]}
    order = np.lexsort((want["seq"], want["ts_ns"]))
    trace = open_trace(tmp_path / "t")
    parts = trace.meta["parts"]
    assert len(parts) >= 10 and trace.meta["late_events"] == 0
    assert all(a["ts_max"] <= b["ts_min"] for a, b in itertools.pairwise(parts))
    got = {name: np.concatenate([p[name] for p in trace.iter_parts()])
           for name in ("ts_ns", "seq", "cpu", "ptr")}
    for name, col in got.items():
        np.testing.assert_array_equal(col, want[name][order], err_msg=name)


def test_pooled_decode_chunks_are_reused_only_after_the_writer_copied_them(tmp_path):
    """The drain decodes each span into a chunk from a pool and the writer thread hands it
    back once its rows are copied; the drain then decodes the next spans into the same
    memory. Every row must reach the trace with its own values: a chunk handed back too
    early (while still queued) would be overwritten by a later span. Spans are put faster
    than the writer takes them, and the queue's bound drops some (their chunks come back
    at once, and the dropped rows are counted)."""
    from kmemtrace.record.decode import ChunkPool, KmallocIds, columns
    from kmemtrace.record.events import EVENT_DTYPE, K

    rng = np.random.default_rng(3)
    pool = ChunkPool(keep_rows=2 * (1 << 16))
    meta = new_meta("test")
    meta["caches"] = [dict(id=i, name=f"c{i}", object_size=64, size=64, objs_per_slab=64,
                           order=0, min_partial=5, cpu_partial=30, aliases=[], accounted=True)
                      for i in range(4)]
    writer = TraceWriter(tmp_path / "t", meta, rotate_rows=20_000, reorder_window_ns=0)
    pipe = WriterThread(writer, max_rows=60_000)
    xlate = np.array([-1, 0, 1], np.int32)
    ids = KmallocIds({"kmalloc-cg-": {64: 2}, "kmalloc-": {64: 3}})
    sent, seq, chunks_seen = [], 0, set()
    for i in range(60):
        n = int(rng.integers(1, 9_000))
        recs = np.zeros(n, EVENT_DTYPE)
        recs["ts_ns"] = seq + np.arange(n)
        recs["ptr"] = rng.integers(1, 1 << 40, n, dtype=np.uint64)
        recs["size_kind"] = 64 | rng.choice([K["KMT_K_ALLOC"], K["KMT_K_FREE"],
                                             K["KMT_K_KMALLOC"]], n) << K["KMT_KIND_SHIFT"]
        recs["cache_idx"] = rng.integers(0, 3, n)
        recs["gfp"] = rng.choice([0, 1 << 22], n)  # __GFP_ACCOUNT: kmalloc-cg
        recs["cpu"] = i % 2
        chunk = pool.take(n)
        chunks_seen.add(id(chunk))
        cols = columns(recs, xlate, ids, chunk)
        cols["seq"] = np.add(np.arange(n), seq, out=chunk.arrays["seq"][:n])
        sent.append({name: c.copy() for name, c in cols.items()})
        seq += n
        pipe.put(cols, chunk.release)
    meta = pipe.close()
    dropped = sum(pipe.dropped.values())
    assert len(chunks_seen) < 60  # chunks were reused
    want = {name: np.concatenate([b[name] for b in sent]) for name in sent[0]}
    trace = open_trace(tmp_path / "t")
    got = {name: np.concatenate([p[name] for p in trace.iter_parts()])
           for name in ("seq", "ts_ns", "ptr", "kind", "cache_id", "cpu")}
    assert len(got["seq"]) + dropped == seq and meta["counts"]["ALLOC"] + meta["counts"][
        "FREE"] == len(got["seq"])
    keep = np.isin(want["seq"], got["seq"])  # rows the bound dropped are not in the trace
    for name, col in got.items():
        np.testing.assert_array_equal(col, want[name][keep], err_msg=name)
    assert set(got["cache_id"].tolist()) == {-1, 0, 1, 2, 3}
