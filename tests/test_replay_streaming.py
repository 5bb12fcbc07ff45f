"""Streaming is no result: a replay in tiny batches, over many parts, on one thread or
several, gives exactly the numbers of a replay that reads each part whole.

The model carries every state across batches (``run_events`` over successive chunks with
one Model), and strategies share nothing but the chunk, so batch size, part boundaries
and threads may only change speed. Tiny odd batches put boundaries everywhere: between
an object's alloc and free, inside runs of equal timestamps, next to memcg offlines.
"""

import json
import threading
from pathlib import Path

import numpy as np
import pytest

from kmemtrace.errors import TraceFormatError
from kmemtrace.metrics import compute_metrics
from kmemtrace.model.state import C_NINST, C_SLAB_HWM
from kmemtrace.replay.engine import replay
from kmemtrace.strategies import select
from kmemtrace.trace.reader import open_trace
from kmemtrace.trace.writer import TraceWriter

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "default"
PART_ROWS = 40_000  # the fixture's 150k rows become four parts


def _split(tmp_path: Path) -> Path:
    """The fixture's events rewritten as several parts of several row groups."""
    src = open_trace(FIXTURE)
    meta = json.loads((FIXTURE / "meta.json").read_text())
    out = tmp_path / "split"
    with TraceWriter(out, meta, rotate_rows=PART_ROWS) as writer:
        for cols in src.iter_batches(batch_rows=25_000):
            writer.append(cols)
    return out


def _everything(result) -> dict:
    """Every number a replay gives, per strategy (timings aside)."""
    out = {"events": result.events, "memcg_ids": list(result.memcg_ids),
           "offline_ns": result.offline_ns.tolist(),
           "interrupt_allocs": result.interrupt_allocs,
           "unknown_ctx_allocs": result.unknown_ctx_allocs,
           "notes": result.notes, "warnings": result.warnings}
    for run in result.runs:
        m = run.model
        metrics = compute_metrics(run).to_dict()
        metrics.pop("loop_seconds")
        out[run.strategy.name] = {
            "metrics": metrics, "ctr": m.ctr.tolist(), "fctr": m.fctr.tolist(),
            "series": m.series.tolist(), "vsample": m.vsample.tolist(),
            "stock": m.stock.tolist(), "mstock": m.mstock.tolist(),
            "inst": m.inst[:, :m.ctr[C_NINST]].tolist(),
            "slab": m.slab[:, :m.ctr[C_SLAB_HWM]].tolist(),
        }
    return out


@pytest.fixture(scope="module")
def whole_parts():
    return _everything(replay(open_trace(FIXTURE), select("all", {}), threads=1))


@pytest.mark.parametrize(("batch_rows", "threads"), [(997, 1), (997, 2), (None, 2),
                                                     (1 << 30, 3)])
def test_batches_parts_and_threads_change_no_number(tmp_path, whole_parts, batch_rows,
                                                    threads):
    trace = open_trace(_split(tmp_path))
    assert len(trace.meta["parts"]) >= 3
    got = _everything(replay(trace, select("all", {}), batch_rows=batch_rows,
                             threads=threads))
    assert got.keys() == whole_parts.keys()
    for key, want in whole_parts.items():
        assert got[key] == want, key


def test_batches_hold_the_trace_in_order(tmp_path):
    trace = open_trace(_split(tmp_path))
    seen = [cols["ts_ns"] for cols in trace.iter_batches(["ts_ns"], batch_rows=997)]
    assert max(len(b) for b in seen) == 997
    np.testing.assert_array_equal(np.concatenate(seen),
                                  np.concatenate([c["ts_ns"] for c in trace.iter_parts()]))


def test_a_damaged_later_part_stops_the_replay_with_its_name_and_no_thread_left(tmp_path):
    path = _split(tmp_path)
    trace = open_trace(path)
    third = path / "events" / trace.meta["parts"][2]["file"]
    third.write_bytes(third.read_bytes()[:third.stat().st_size // 2])  # cut short
    before = threading.active_count()
    with pytest.raises(TraceFormatError, match=third.name):
        replay(trace, select("all", {}), threads=2, batch_rows=5_000)
    assert threading.active_count() == before
