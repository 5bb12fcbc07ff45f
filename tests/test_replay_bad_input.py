"""What real kernels produce and the replay must count, not crash on."""

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from kmemtrace.errors import KmemtraceError, TraceFormatError, UsageError
from kmemtrace.metrics import compute_metrics
from kmemtrace.model.state import (
    C_HASH_COUNT,
    H_KEY,
    MEMCG_MASK,
    NG,
    grow_memcgs,
    new_model,
)
from kmemtrace.replay.engine import replay
from kmemtrace.replay.loop import MAX_REAP_TICKS, check_reaper_ticks
from kmemtrace.replay.policy import PO_REAP_PERIOD_NS, new_policy
from kmemtrace.strategies import select
from kmemtrace.trace.reader import open_trace
from kmemtrace.trace.schema import ARROW_SCHEMA, EVENTS_DIR, EventKind

from conftest import SEC, run_cli


def _metrics(path, names="all"):
    return [compute_metrics(r) for r in replay(open_trace(path), select(names, {})).runs]


def test_free_of_a_never_allocated_pointer_is_counted(trace_builder):
    tb = trace_builder()
    tb.cache()
    tb.free(5, 0xabc)  # allocated before the recording began
    for m in _metrics(tb.write(end_ns=SEC)):
        assert m.frees_unknown == 1 and m.frees == 0, m.strategy


def test_double_free_counts_the_second_as_unknown(trace_builder):
    tb = trace_builder()
    tb.cache()
    tb.mkdir(0, 100)
    tb.alloc(1, 0xabc, 100)
    tb.free(2, 0xabc)
    tb.free(3, 0xabc)
    for m in _metrics(tb.write(end_ns=SEC)):
        assert (m.frees, m.frees_unknown, m.objects_live_end) == (1, 1, 0), m.strategy


def test_realloc_of_a_live_pointer_implies_the_missed_free(trace_builder):
    """kmem_cache_free_bulk and kfree_rcu batches emit no per-object tracepoint."""
    tb = trace_builder()
    tb.cache()
    tb.mkdir(0, 100)
    tb.alloc(1, 0xabc, 100)
    tb.alloc(2, 0xabc, 100)
    for m in _metrics(tb.write(end_ns=SEC)):
        assert (m.allocs, m.frees_implied, m.objects_live_end) == (2, 1, 1), m.strategy


def test_rows_out_of_order_inside_a_part_are_an_error_naming_part_and_row(trace_builder):
    tb = trace_builder()
    tb.cache()
    tb.mkdir(0, 100)
    tb.alloc(10, 0xabc, 100, cpu=0)
    tb.free(20, 0xabc, cpu=0)
    path = tb.write(end_ns=SEC)
    # Rewrite the part as a foreign writer might: CPU 1's event stamped earlier than
    # CPU 0's but stored after it. The format says sorted; clamping it changed the numbers.
    part = path / EVENTS_DIR / "part-00000.parquet"
    table = pq.read_table(part).to_pydict()
    table["ts_ns"][-1] = 5
    table["cpu"][-1] = 1
    pq.write_table(pa.Table.from_pydict(table, schema=ARROW_SCHEMA), part)
    with pytest.raises(TraceFormatError, match=r"part-00000.parquet row 2: ts_ns 5 is before"):
        _metrics(path)


def test_a_row_outside_its_part_span_is_refused_before_it_is_replayed(trace_builder):
    """A damaged timestamp near 2^62 in a part whose meta says otherwise: batches are
    replayed as they are read, so the span must be checked batch by batch. Checked only
    after the part's last batch, Way #2's reaper ticked towards 2^62 and never returned."""
    tb = trace_builder()
    tb.cache()
    tb.mkdir(0, 100)
    tb.alloc(10, 0xabc, 100)
    tb.free(20, 0xabc)
    path = tb.write(end_ns=SEC)
    reader = open_trace(path)
    reader.meta["parts"][0]["ts_max"] = 10  # the part's rows now reach past it
    batches = reader.iter_batches(batch_rows=1)
    next(batches), next(batches)
    with pytest.raises(TraceFormatError, match=r"part-00000.parquet row 2: ts_ns 20 is "
                                               r"outside the part's 0\.\.10"):
        next(batches)


def test_a_free_of_pointer_zero_finds_no_object(trace_builder):
    """Pointer 0 marks an empty slot of the live-object table: looked up, it must not
    \"find\" one (that freed a slot twice and let the table fill)."""
    tb = trace_builder()
    tb.cache()
    tb.mkdir(0, 100)
    tb.alloc(1, 0xabc, 100)
    tb.free(2, 0)
    for m in _metrics(tb.write(end_ns=SEC)):
        assert (m.frees, m.frees_unknown, m.objects_live_end) == (0, 1, 1), m.strategy


def test_events_before_the_clock_start_are_kept_in_order(trace_builder, capsys):
    """A recorder stamps its start after attaching: in-flight events come out earlier.

    Whole-system recordings showed 8.7k-59.5k out_of_order_events for exactly this.
    """
    tb = trace_builder()
    tb.cache()
    tb.mkdir(0, 100)
    tb.alloc(10, 0xabc, 100)
    tb.free(20_000_000, 0xabc)
    path = tb.write(end_ns=SEC, start_ns=15_000_000)
    for m in _metrics(path):
        assert (m.out_of_order_events, m.allocs, m.frees) == (0, 1, 1), m.strategy
    rc, out, _ = run_cli(capsys, "info", str(path))
    assert rc == 0 and "precede the clock start by 15.0 ms" in out


def test_events_long_before_the_clock_start_are_damage(trace_builder):
    tb = trace_builder()
    tb.cache()
    tb.mkdir(0, 100)
    with pytest.raises(TraceFormatError, match=r"clock\.start_ns: .* more than 1 s after"):
        _metrics(tb.write(end_ns=3 * SEC, start_ns=2 * SEC))


def test_lost_events_reach_the_metrics(trace_builder):
    tb = trace_builder()
    tb.cache()
    tb.event(5, EventKind.LOST, aux=7)  # 7 events dropped in the kernel
    for m in _metrics(tb.write(end_ns=SEC)):
        assert m.lost_events == 7, m.strategy


def test_allocation_from_an_unknown_cache_is_skipped_and_counted(trace_builder):
    tb = trace_builder()
    tb.cache()
    tb.event(5, EventKind.ALLOC, ptr=0xabc, memcg_id=100, cache_id=-1)
    for m in _metrics(tb.write(end_ns=SEC)):
        assert m.allocs_unknown_cache == 1 and m.allocs == 0, m.strategy


@pytest.mark.parametrize(("column", "value", "what"), [
    ("cache_id", 9, "cache_id 9 is not in meta.json's 1 caches"),
    ("cache_id", -2, "cache_id -2 is not in"),
    ("kind", 99, "unknown event kind 99"),
])
def test_ids_outside_the_contract_are_errors_naming_part_and_row(trace_builder, column, value,
                                                                 what):
    tb = trace_builder()
    tb.cache()
    tb.mkdir(1, 100)
    tb.alloc(5, 0xabc, 100)
    tb.free(6, 0xabc)
    tb.rows[1][column] = value
    with pytest.raises(TraceFormatError, match=f"part-00000.parquet row 1: {what}"):
        _metrics(tb.write(end_ns=SEC))


def test_events_after_the_clock_end_are_replayed_with_a_warning(trace_builder, capsys):
    tb = trace_builder()
    tb.cache()
    tb.mkdir(0, 100)
    tb.alloc(10, 0xabc, 100)
    tb.free(2 * SEC, 0xabc)
    path = tb.write(end_ns=SEC)
    assert open_trace(path).end_ns == 2 * SEC
    rc, _, err = run_cli(capsys, "replay", str(path), "--format", "text")
    assert rc == 0 and "warning:" in err and "events continue 1,000.0 ms after" in err


def test_loss_known_only_to_meta_is_reported(trace_builder):
    """A full disk: the rows that could not be written (WRITE_FAILED) have no LOST row in
    any sealed part, only meta's total; replay must not report fewer lost events."""
    import json

    tb = trace_builder()
    tb.cache()
    tb.alloc(10, 0x1000, 100)
    path = tb.write(end_ns=SEC)
    meta = json.loads((path / "meta.json").read_text())
    meta["complete"] = False
    meta["lost"] = {"total": 7, "by_reason": {"WRITE_FAILED": 7}}
    (path / "meta.json").write_text(json.dumps(meta))
    for m in _metrics(path):
        assert m.lost_events == 7, m.strategy


def test_kernel_addresses_a_byte_apart_stay_two_objects(trace_builder):
    """The object table keys pointers by their 64 bits in an int64: addresses with the top
    bit set, one apart, must not merge (a float64 comparison would merge them)."""
    tb = trace_builder()
    tb.cache()
    tb.mkdir(0, 100)
    base = 0xFFFF_8880_1234_5600
    tb.alloc(1, base, 100)
    tb.alloc(2, base + 1, 100)
    tb.free(3, base + 1)
    tb.free(4, base + 2)  # never allocated
    for m in _metrics(tb.write(end_ns=SEC)):
        assert (m.allocs, m.frees, m.frees_unknown, m.objects_live_end) == (2, 1, 1, 1), m


def test_more_memcgs_than_the_object_table_holds_is_one_clear_error():
    geom = np.ones((NG, 1), dtype=np.int64)
    model = new_model(geom, ncpu=1, n_samples=2)
    with pytest.raises(KmemtraceError, match="memcgs in one trace"):
        grow_memcgs(model, MEMCG_MASK + 2)



def test_a_reaper_that_would_tick_past_the_bound_is_refused_before_replaying(trace_builder,
                                                                             capsys):
    """A 1 ns reaper period over a 1 s trace is 10^9 ticks, ten times the bound: one line
    at once, instead of a lane ticking for minutes (or, with a damaged clock, for ever)."""
    tb = trace_builder()
    tb.cache()
    tb.mkdir(0, 100)
    tb.alloc(10, 0xabc, 100)
    path = tb.write(end_ns=SEC)
    rc, _, err = run_cli(capsys, "replay", str(path), "--strategy", "way2",
                         "--param", "period=1ns", "--format", "text")
    assert rc == UsageError.exit_code
    assert "way2: a reaper tick every 1 ns over the trace's 1 s is 1,000,000,000 ticks" in err
    assert len([line for line in err.splitlines() if line.startswith("kmemtrace: ")]) == 1


def test_the_reaper_tick_bound_is_exact():
    pol = new_policy()
    pol[PO_REAP_PERIOD_NS] = 10
    check_reaper_ticks("way2", pol, 10 * MAX_REAP_TICKS + 9)  # exactly the bound: allowed
    with pytest.raises(UsageError, match="100,000,001 ticks, more than 100,000,000"):
        check_reaper_ticks("way2", pol, 10 * (MAX_REAP_TICKS + 1))
    pol[PO_REAP_PERIOD_NS] = 0  # no reaper: no ticks whatever the span
    check_reaper_ticks("way2", pol, 1 << 60)


def test_the_object_count_matches_the_keys_held_whatever_the_pointers(trace_builder):
    """Allocations and frees of pointer 0, double frees, frees never allocated and
    re-allocations of live pointers: the count the loop keeps (and grows the table by) is
    the number of keys held, and at most half the table, so every probe meets an empty
    slot. (With a FREE of pointer 0 "finding" an empty slot, the count fell below it.)"""
    rng = np.random.default_rng(13)
    tb = trace_builder()
    tb.cache()
    tb.mkdir(0, 100)
    pool = [0, *(0xFFFF_8880_0000_0000 + 64 * int(p) for p in rng.choice(1 << 20, 3000))]
    for ts in range(1, 20_001):
        ptr = pool[int(rng.integers(len(pool)))]
        if rng.random() < 0.6:
            tb.alloc(ts, ptr, 100, cpu=int(rng.integers(2)))
        else:
            tb.free(ts, ptr, cpu=int(rng.integers(2)))
    result = replay(open_trace(tb.write(end_ns=SEC)), select("all", {}), batch_rows=4096)
    for run in result.runs:
        keys = run.model.hobj[:, H_KEY]
        held = int(np.count_nonzero(keys))
        assert run.model.ctr[C_HASH_COUNT] == held, run.strategy.name
        assert compute_metrics(run).objects_live_end == held, run.strategy.name
        assert 0 < 2 * held <= len(keys), run.strategy.name
