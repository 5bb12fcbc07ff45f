"""The trace contract: writer/reader round trip, rotation, reordering, damage, versions."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kmemtrace.errors import TraceFormatError
from kmemtrace.trace.meta import new_meta
from kmemtrace.trace.reader import TraceReader
from kmemtrace.trace.schema import COLUMNS, EventKind, LostReason, empty_columns
from kmemtrace.trace.writer import TraceWriter

DOC = Path(__file__).resolve().parents[1] / "docs" / "trace-format.md"


def batch(ts: np.ndarray, seq_start: int = 0) -> dict[str, np.ndarray]:
    """ALLOC rows at ``ts`` with distinct ptrs and consecutive seq."""
    cols = empty_columns(len(ts))
    cols["ts_ns"][:] = ts
    cols["seq"][:] = np.arange(seq_start, seq_start + len(ts))
    cols["kind"][:] = EventKind.ALLOC
    cols["ptr"][:] = 0x1000 + cols["seq"].astype(np.uint64) * 64
    cols["cpu"][:] = cols["seq"] % 3
    return cols


def read_all(path: Path) -> dict[str, np.ndarray]:
    parts = list(TraceReader.open(path).iter_parts())
    return {name: np.concatenate([p[name] for p in parts]) for name in COLUMNS}


def write(path: Path, batches: list[dict], **kw) -> TraceWriter:
    with TraceWriter(path, new_meta("test", ncpus=3), **kw) as writer:
        for b in batches:
            writer.append(b)
    return writer


def test_round_trip_keeps_every_column(tmp_path):
    rng = np.random.default_rng(7)
    cols = empty_columns(500)
    for name, dt in COLUMNS.items():
        info = np.iinfo(dt)
        cols[name] = rng.integers(info.min, info.max, size=500, dtype=dt, endpoint=True)
    cols["ts_ns"] = np.sort(rng.integers(0, 10**12, size=500))
    cols["seq"] = np.arange(500)
    cols["kind"] = rng.integers(1, 10, size=500).astype(np.uint8)  # LOST (10) tested apart
    cols["cache_id"][:] = -1  # with no cache table, -1 (unknown) is the only valid id
    write(tmp_path / "t", [cols])
    back = read_all(tmp_path / "t")
    for name, dt in COLUMNS.items():
        assert back[name].dtype == dt, name
        np.testing.assert_array_equal(back[name], cols[name], err_msg=name)
    reader = TraceReader.open(tmp_path / "t")
    assert reader.meta["complete"] is True
    assert reader.n_events == 500
    kinds, counts = np.unique(cols["kind"], return_counts=True)
    expected = {EventKind(k).name: int(c) for k, c in zip(kinds, counts, strict=True)}
    assert {k: v for k, v in reader.meta["counts"].items() if v} == expected


def test_lost_rows_are_totalled_by_reason(tmp_path):
    cols = batch(np.array([10, 20, 30]))
    cols["kind"][:] = EventKind.LOST
    cols["aux"][:] = [5, 7, 11]
    cols["aux2"][:] = [LostReason.RINGBUF_FULL, LostReason.LIVE_MAP_FULL,
                       LostReason.RINGBUF_FULL]
    write(tmp_path / "t", [cols])
    lost = TraceReader.open(tmp_path / "t").meta["lost"]
    assert lost == {"total": 23, "by_reason": {"RINGBUF_FULL": 16, "LIVE_MAP_FULL": 7}}


def test_rotation_gives_ordered_non_overlapping_parts(tmp_path):
    ts = np.arange(0, 10_000) * 1_000  # 10 ms of events, 1 µs apart
    batches = [batch(ts[i:i + 700], i) for i in range(0, len(ts), 700)]
    write(tmp_path / "t", batches, rotate_rows=2_000, reorder_window_ns=100_000)
    meta = TraceReader.open(tmp_path / "t").meta
    assert len(meta["parts"]) >= 4
    for prev, cur in zip(meta["parts"], meta["parts"][1:], strict=False):
        assert cur["ts_min"] >= prev["ts_max"]
    assert sum(p["rows"] for p in meta["parts"]) == len(ts)
    np.testing.assert_array_equal(read_all(tmp_path / "t")["ts_ns"], ts)


@settings(max_examples=25, deadline=None)
@given(st.lists(st.integers(0, 5_000), min_size=1, max_size=300), st.integers(1, 6))
def test_out_of_order_batches_come_out_sorted(tmp_path_factory, jitter, n_batches):
    """Rows shuffled within the reorder window are all sorted in, none is late."""
    ts = np.cumsum(np.array(jitter) + 1) * 10
    rng = np.random.default_rng(len(ts))
    order = np.argsort(ts + rng.integers(0, 10_000, size=len(ts)))  # skew < window
    cols = batch(ts[order])
    chunks = np.array_split(np.arange(len(ts)), n_batches)
    path = tmp_path_factory.mktemp("t") / "t"
    writer = write(path, [{k: v[c] for k, v in cols.items()} for c in chunks],
                   rotate_rows=50, reorder_window_ns=20_000)
    assert writer.late_events == 0
    back = read_all(path)
    assert np.all(np.diff(back["ts_ns"]) >= 0)
    np.testing.assert_array_equal(np.sort(back["ts_ns"]), np.sort(ts))


def test_too_late_row_is_counted_and_kept_in_order(tmp_path):
    path = tmp_path / "t"
    with TraceWriter(path, new_meta("test"), rotate_rows=100, reorder_window_ns=1_000) as w:
        w.append(batch(np.arange(200) * 1_000))  # seals a part up to ~198_000
        w.append(batch(np.array([5_000]), seq_start=200))  # far behind the sealed part
    meta = TraceReader.open(path).meta
    assert meta["late_events"] == 1
    back = read_all(path)
    assert len(back["ts_ns"]) == 201
    assert np.all(np.diff(back["ts_ns"]) >= 0)


def one_line_error(excinfo) -> str:
    message = str(excinfo.value)
    assert "\n" not in message
    return message


@pytest.fixture
def two_part_trace(tmp_path) -> Path:
    path = tmp_path / "t"
    ts = np.arange(4_000) * 1_000
    write(path, [batch(ts[i:i + 1_000], i) for i in range(0, 4_000, 1_000)], rotate_rows=1_000,
          reorder_window_ns=0)
    assert len(TraceReader.open(path).meta["parts"]) >= 2
    return path


def test_deleted_part_is_one_line_error_naming_it(two_part_trace):
    victim = two_part_trace / "events" / "part-00001.parquet"
    victim.unlink()
    with pytest.raises(TraceFormatError) as excinfo:
        read_all(two_part_trace)
    assert "part-00001.parquet" in one_line_error(excinfo)


@pytest.mark.parametrize("damage", ["truncate", "garbage"])
def test_damaged_part_is_one_line_error(two_part_trace, damage):
    victim = two_part_trace / "events" / "part-00000.parquet"
    data = victim.read_bytes()
    victim.write_bytes(data[: len(data) // 2] if damage == "truncate" else b"\x00" * len(data))
    with pytest.raises(TraceFormatError) as excinfo:
        read_all(two_part_trace)
    assert "part-00000.parquet" in one_line_error(excinfo)


def test_unknown_format_version_is_refused(two_part_trace):
    meta_path = two_part_trace / "meta.json"
    meta = json.loads(meta_path.read_text())
    meta["format_version"] = 99
    meta_path.write_text(json.dumps(meta))
    with pytest.raises(TraceFormatError) as excinfo:
        TraceReader.open(two_part_trace)
    assert "99" in one_line_error(excinfo)


def test_missing_path_is_refused(tmp_path):
    with pytest.raises(TraceFormatError) as excinfo:
        TraceReader.open(tmp_path / "nowhere")
    assert "nowhere" in one_line_error(excinfo)


def test_unsealed_trace_reads_its_sealed_parts(tmp_path):
    """A writer killed before close(): meta lists the flushed parts, complete is false."""
    path = tmp_path / "t"
    writer = TraceWriter(path, new_meta("test"), rotate_rows=1_000, reorder_window_ns=0)
    ts = np.arange(2_500) * 1_000
    for lo in range(0, 2_500, 500):
        writer.append(batch(ts[lo:lo + 500], lo))  # and never closed
    reader = TraceReader.open(path)
    assert reader.meta["complete"] is False
    sealed = reader.n_events
    assert 0 < sealed < 2_500
    assert len(read_all(path)["ts_ns"]) == sealed


def doc_example() -> str:
    blocks = re.findall(r"```python\n(.*?)```", DOC.read_text(), flags=re.S)
    assert len(blocks) == 1, "docs/trace-format.md should hold exactly one python example"
    return blocks[0]


def test_pyarrow_only_example_in_docs_writes_a_valid_trace(tmp_path):
    script = tmp_path / "example.py"
    script.write_text(doc_example())
    env = {**os.environ, "TRACE_DIR": str(tmp_path / "example-trace")}
    subprocess.run([sys.executable, "-I", str(script)], check=True, env=env, cwd=tmp_path)
    reader = TraceReader.open(tmp_path / "example-trace")
    df = reader.to_pandas()
    assert list(df["kind"]) == [EventKind.MEMCG_MKDIR, EventKind.ALLOC, EventKind.FREE]
    assert df["ptr"].iloc[1] == df["ptr"].iloc[2]
    assert reader.caches[0]["name"] == "dentry"


def test_format_1_trace_reads_with_unknown_context(tmp_path):
    """A v1 trace (no ``ctx`` column) still reads; its rows say 'context unknown'."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from kmemtrace.trace.schema import V1_ARROW_SCHEMA, V1_COLUMNS, EventContext

    write(tmp_path / "t", [batch(np.arange(100) * 1_000)])
    meta_path = tmp_path / "t" / "meta.json"
    meta = json.loads(meta_path.read_text())
    part = tmp_path / "t" / "events" / meta["parts"][0]["file"]
    table = pq.read_table(part)
    assert table.schema.names[-1] == "ctx"  # what this release writes
    pq.write_table(pa.Table.from_arrays([table.column(c) for c in V1_COLUMNS],
                                        schema=V1_ARROW_SCHEMA), part)
    meta["format_version"] = 1
    meta["parts"][0]["bytes"] = part.stat().st_size
    meta_path.write_text(json.dumps(meta))
    back = read_all(tmp_path / "t")
    assert len(back["ts_ns"]) == 100
    assert back["ctx"].dtype == np.uint8
    assert (back["ctx"] == EventContext.UNKNOWN).all()
    only = next(TraceReader.open(tmp_path / "t").iter_parts(["ts_ns", "ctx"]))
    assert set(only) == {"ts_ns", "ctx"} and (only["ctx"] == 0).all()


def test_sealed_parts_carry_their_digest_and_page_checksums(tmp_path):
    import hashlib

    import pyarrow.parquet as pq

    cols = empty_columns(100)
    cols["ts_ns"] = np.arange(100) * 10
    cols["seq"] = np.arange(100)
    cols["kind"][:] = 1
    write(tmp_path / "t", [cols])
    part = TraceReader.open(tmp_path / "t").meta["parts"][0]
    data = (tmp_path / "t" / "events" / part["file"]).read_bytes()
    assert part["sha256"] == hashlib.sha256(data).hexdigest()
    assert part["page_checksums"] is True
    chunk = pq.ParquetFile(tmp_path / "t" / "events" / part["file"]).metadata.row_group(0)
    chunk = chunk.column(0)  # ts_ns: flip a bit in the last byte of its page payload
    flipped = bytearray(data)
    start = chunk.dictionary_page_offset or chunk.data_page_offset
    flipped[start + chunk.total_compressed_size - 1] ^= 0x10
    (tmp_path / "flipped.parquet").write_bytes(flipped)
    with pytest.raises(OSError, match="CRC"):
        pq.read_table(tmp_path / "flipped.parquet", page_checksum_verification=True)


def test_recurring_pointers_are_dictionary_encoded_and_read_back(tmp_path):
    """Slab objects are handed out again soon after their free: ``ptr`` takes a dictionary
    (1.07 instead of 1.50 B/row on a live mix recording), the time columns stay delta-
    encoded, and a part written the previous way (BYTE_STREAM_SPLIT, no dictionary) reads
    back the same rows."""
    import pyarrow.parquet as pq

    from kmemtrace.trace.writer import DELTA_COLUMNS, DICTIONARY_COLUMNS

    rng = np.random.default_rng(3)
    cols = batch(np.arange(200_000) * 10)
    cols["ptr"] = np.uint64(0xffff888000000000) + rng.integers(0, 4096, 200_000, np.uint64) * 64
    cols["memcg_id"][:] = rng.integers(1, 5, 200_000)
    write(tmp_path / "t", [cols])
    part = TraceReader.open(tmp_path / "t").meta["parts"][0]
    path = tmp_path / "t" / "events" / part["file"]
    group = pq.ParquetFile(path).metadata.row_group(0)
    encodings = {group.column(i).path_in_schema: group.column(i).encodings
                 for i in range(group.num_columns)}
    for name in DICTIONARY_COLUMNS:
        assert "RLE_DICTIONARY" in encodings[name], (name, encodings[name])
    for name in DELTA_COLUMNS:
        assert "DELTA_BINARY_PACKED" in encodings[name], name
    assert "BYTE_STREAM_SPLIT" in encodings["cache_id"]
    codecs = {group.column(i).path_in_schema: group.column(i).compression
              for i in range(group.num_columns)}
    assert codecs["ptr"] == "ZSTD" and codecs["ts_ns"] == "LZ4", codecs  # pyarrow names LZ4_RAW so
    back = read_all(tmp_path / "t")
    np.testing.assert_array_equal(back["ptr"], cols["ptr"])
    np.testing.assert_array_equal(back["memcg_id"], cols["memcg_id"])
    old = pq.read_table(path)
    pq.write_table(old, path, use_dictionary=False,
                   column_encoding={c: "DELTA_BINARY_PACKED" if c in DELTA_COLUMNS
                                    else "BYTE_STREAM_SPLIT" for c in old.column_names})
    assert "BYTE_STREAM_SPLIT" in pq.ParquetFile(path).metadata.row_group(0).column(
        list(encodings).index("ptr")).encodings
    np.testing.assert_array_equal(next(pq.ParquetFile(path).iter_batches(
        columns=["ptr"], batch_size=1 << 20))["ptr"].to_numpy(), cols["ptr"])
