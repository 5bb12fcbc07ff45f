"""The writer thread between the drain side and the disk: bound, loss counting, failures."""

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
