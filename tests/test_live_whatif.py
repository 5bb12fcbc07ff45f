"""The live what-if gives the same metrics as replaying the finished trace.

The recorder's batches are replayed from committed traces the way a recording delivers
them: in drain-sized batches, unsorted within a batch (per-CPU rings interleave), with the
cache table and the memcg list of meta growing as the recording goes.
"""

import copy

import numpy as np
import pytest

from kmemtrace.live.feed import LiveWhatIf
from kmemtrace.live.view import history_span_ns, sparkline
from kmemtrace.live.whatif import WhatIf
from kmemtrace.metrics import compute_metrics, metric_fields
from kmemtrace.model.eras import DEFAULT_ERA
from kmemtrace.replay.engine import replay
from kmemtrace.strategies import select
from kmemtrace.trace.reader import open_trace
from kmemtrace.trace.schema import EventKind

from conftest import run_cli

FIXTURES = ["fixtures/default", "fixtures/long-tail", "fixtures/steady"]


def _rows(reader) -> dict[str, np.ndarray]:
    parts = list(reader.iter_parts())
    return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}


def _start_meta(meta: dict, rows: dict[str, np.ndarray]) -> dict:
    """meta as the recorder has it at attach: no cache or memcg that appears later."""
    start = copy.deepcopy(meta)
    mkdirs = set(rows["memcg_id"][rows["kind"] == EventKind.MEMCG_MKDIR].tolist())
    start["memcgs"] = [g for g in meta["memcgs"] if g["id"] not in mkdirs]
    first_use = {int(c): i for i, c in reversed(list(enumerate(rows["cache_id"].tolist())))}
    late_cache = max(first_use, key=first_use.get)
    start["caches"] = [c for c in meta["caches"] if c["id"] < late_cache]
    start["clock"]["end_ns"] = None
    return start, late_cache


def _metrics(ms) -> list[dict]:
    return [{k: m.to_dict()[k] for k in ["strategy", "params", *metric_fields()]} for m in ms]


@pytest.mark.parametrize("path", FIXTURES)
def test_live_equals_replay_of_finished_trace(path):
    reader = open_trace(path)
    rows = _rows(reader)
    start_meta, late_cache = _start_meta(reader.meta, rows)
    live = WhatIf(start_meta, select("all", {}), DEFAULT_ERA)
    rng = np.random.default_rng(7)
    lo, added = 0, False
    n = len(rows["ts_ns"])
    while lo < n:
        hi = min(lo + int(rng.integers(1, 3000)), n)
        shuffled = lo + rng.permutation(hi - lo)
        batch = {k: v[shuffled] for k, v in rows.items()}
        if not added and (batch["cache_id"] >= late_cache).any():
            live.update_caches(reader.meta["caches"])  # discovered with this batch
            added = True
        live.feed(batch)
        lo = hi
    got = _metrics(live.close(reader.meta))
    want = _metrics(compute_metrics(r) for r in replay(reader, select("all", {})).runs)
    assert live.late == 0
    assert live.events == n
    assert got == want


def test_rows_behind_the_window_are_late_and_clamped(trace_builder):
    """A row older than what was already replayed is counted, never lost or reordered."""
    b = trace_builder()
    b.cache()
    b.mkdir(0, 10)
    for i in range(4):
        b.alloc(1_000_000_000 * (i + 1), 0x1000 + 64 * i, 10)
    reader = open_trace(b.write(end_ns=10_000_000_000))
    rows = _rows(reader)
    live = WhatIf(reader.meta, select("current", {}), DEFAULT_ERA, window_ns=0)
    # the mkdir, then the second allocation arrives after the third was replayed
    for i in [0, 1, 3, 2, 4]:
        live.feed({k: v[i:i + 1] for k, v in rows.items()})
    (m,) = live.close(reader.meta)
    assert live.late == 1
    assert m.allocs == 4 and m.objects_live_end == 4
    assert m.out_of_order_events == 0


def test_sparkline_peaks_per_cell_on_a_zero_based_scale():
    sec = 1_000_000_000
    points = [(0, 0), (100 * sec, 10), (200 * sec, 20), (300 * sec, 5)]
    assert sparkline(points, 300 * sec, 300 * sec, width=3) == "▁▅█"
    # empty cells hold the value before them; nothing before the first point is drawn
    assert sparkline([(200 * sec, 4)], 300 * sec, 300 * sec, width=3) == "  █"
    assert sparkline([(0, 0), (300 * sec, 0)], 300 * sec, 300 * sec, width=3) == "▁▁▁"
    assert history_span_ns([(290 * sec, 1)], 300 * sec) == 10 * sec
    assert history_span_ns([(0, 1)], 600 * sec) == 300 * sec


def _tap_all(live: LiveWhatIf, rows: dict[str, np.ndarray], size: int) -> None:
    for lo in range(0, len(rows["ts_ns"]), size):
        live.tap({k: v[lo:lo + size] for k, v in rows.items()})


def test_the_child_process_gives_the_replays_metrics():
    """The whole path beside a recorder: spawn, meta at attach, taps, close with the
    sealed meta; the panel's snapshot arrives on the way."""
    reader = open_trace("fixtures/steady")
    rows = _rows(reader)
    live = LiveWhatIf("all", {}, DEFAULT_ERA)
    live.start()
    live.begin(reader.meta)
    _tap_all(live, rows, 5000)
    final = live.close(reader.meta)
    want = _metrics(compute_metrics(r) for r in replay(reader, select("all", {})).runs)
    assert final.exact and final.events == len(rows["ts_ns"])
    assert [{k: m[k] for k in want[0]} for m in final.strategies] == want


def test_a_feed_that_falls_behind_skips_slab_rows_and_says_so():
    """Over the bound nothing waits: ALLOC/FREE rows are skipped and counted, memcg life
    cycle rows still arrive (every offline is replayed)."""
    reader = open_trace("fixtures/default")
    rows = _rows(reader)
    live = LiveWhatIf("current", {}, DEFAULT_ERA, max_rows=2000)
    live.start()
    live.begin(reader.meta)
    _tap_all(live, rows, 1000)
    final = live.close(reader.meta)
    slab = np.isin(rows["kind"], [EventKind.ALLOC, EventKind.FREE])
    (m,) = final.strategies
    assert final.skipped > 0 and not final.exact
    assert final.events + final.skipped == len(rows["ts_ns"])
    assert final.skipped <= int(slab.sum())
    assert m["memcg_offlines"] == int((rows["kind"] == EventKind.MEMCG_OFFLINE).sum())


@pytest.mark.parametrize(("args", "says"), [
    (["record", "-o", "{tmp}/t", "--live-json", "{tmp}/l.json"], "--live-json needs --live"),
    (["record", "-o", "{tmp}/t", "--live", "--strategy", "nope"], "nope"),
    (["record", "-o", "{tmp}/t", "--live", "--era", "2.6"], "unknown SLUB era"),
    (["top", "--what-if", "--strategy", "nope"], "nope"),
])
def test_what_if_misuse_is_one_line_before_any_work(capsys, tmp_path, args, says):
    rc, _, err = run_cli(capsys, *(a.format(tmp=tmp_path) for a in args))
    assert rc == 2, err
    assert says in err and len(err.strip().splitlines()) <= 2, err
    assert not (tmp_path / "t").exists()
