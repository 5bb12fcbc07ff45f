"""TraceWriter: columnar batches in, sealed Parquet parts out.

Why parts: a recording can end by Ctrl-C, SIGTERM, a full disk or a crash. Each part is
written to a hidden temporary file, fsync'ed and renamed into place, and meta.json is then
rewritten atomically to list it. Whatever happens, every part named in meta.json is whole,
and at most the rows not yet sealed are lost.

Why counts at sealing: ``meta["counts"]`` and ``meta["lost"]`` describe the sealed parts
only, so a recording killed with SIGKILL leaves a meta.json whose numbers match what can be
read. Rows that can never be sealed because writing failed (a full disk) are counted in
``lost`` as ``WRITE_FAILED`` instead (see :meth:`TraceWriter.abandon`).

Why a reorder window: records from different CPUs reach user space slightly out of
timestamp order. The writer keeps the newest ``reorder_window_ns`` of events back when it
seals a part, so parts are sorted by ``(ts_ns, seq)`` and consecutive parts do not overlap
in time. Readers then merge nothing.
"""

import hashlib
import os
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from kmemtrace.errors import TraceFormatError
from kmemtrace.trace.meta import write_meta_atomic
from kmemtrace.trace.schema import (
    ARROW_SCHEMA,
    COLUMNS,
    EVENTS_DIR,
    META_FILE,
    EventKind,
    LostReason,
)

DEFAULT_ROTATE_ROWS = 2_000_000
DEFAULT_REORDER_WINDOW_NS = 50_000_000  # 50 ms: far above ring-buffer commit skew


# Columns that are (nearly) sorted within a part: delta-encoded, a few bits per row.
DELTA_COLUMNS = ("ts_ns", "seq")
# Columns with few distinct values per row group, or values that recur (a freed pointer is
# soon allocated again): dictionary-encoded, RLE indices (see write_parquet for the figures).
DICTIONARY_COLUMNS = ("ptr", "memcg_id", "gfp", "pid", "ctx", "aux", "aux2")
# Min/max statistics are kept for the time column only: no reader prunes on the others.
STATISTICS_COLUMNS = ("ts_ns",)


def write_parquet(table: pa.Table, path: Path, compression: str) -> None:
    """One part, with a CRC32 per data page so that the reader notices flipped bits.

    Encodings, chosen per column by bytes AND CPU per row of the writer thread (the
    recorder's largest cost), measured one column at a time on 1.7 M-row parts of live
    recordings (``slab_hammer`` on both CPUs, ``record --all-objects``, zstd level 1,
    best of 2, ``time.thread_time_ns``), ``mix`` / ``eventfd``:

    - ``ts_ns``, ``seq``: DELTA_BINARY_PACKED (ts_ns 1.46 B and 11 ns on mix, against 2.03 B
      for BYTE_STREAM_SPLIT).
    - ``ptr``: dictionary. Pointers recur (the allocator hands a freed object out again), so
      on mix 1.07 B and 18 ns against 1.50 B and 17 ns with BYTE_STREAM_SPLIT, the largest
      single saving. When a row group holds more distinct pointers than the dictionary page
      (1 MiB) takes, Arrow falls back to plain values for the rest of the chunk (1.59 B).
    - ``memcg_id``, ``gfp``, ``pid``, ``ctx``, ``aux``, ``aux2``: dictionary; memcg_id
      0.06 B and 9 ns against 0.17 B and 10 ns, gfp 0.08 B against 0.17 B (+3 ns).
    - ``cpu``, ``kind``, ``cache_id``, ``bytes``: BYTE_STREAM_SPLIT (its bytes regrouped by
      significance), no dictionary: a dictionary saves 0.01-0.02 B there for 2-4 ns more.

    On mix that is 3.29 B and ~101 ns per row summed over the columns, against 3.93 B and
    ~100 ns with dictionaries for no column (the previous setting). zstd level 3 instead of
    1 would save another 0.05 B on ts_ns and 0.1 B on ptr for 2-5 ns each: not taken.
    Statistics for ``ts_ns`` only: 6-8 ns/row less. BYTE_STREAM_SPLIT of integers needs
    pyarrow >= 17 to read (pyproject.toml).
    """
    names = table.column_names
    pq.write_table(table, path, compression=compression, row_group_size=1 << 20,
                   write_page_checksum=True,
                   use_dictionary=[c for c in DICTIONARY_COLUMNS if c in names],
                   write_statistics=[c for c in STATISTICS_COLUMNS if c in names],
                   column_encoding={c: "DELTA_BINARY_PACKED" if c in DELTA_COLUMNS
                                    else "BYTE_STREAM_SPLIT"
                                    for c in names if c not in DICTIONARY_COLUMNS})


def part_digest(path: Path) -> dict:
    """What ``kmemtrace info --verify`` checks a sealed part against (see trace-format.md)."""
    with open(path, "rb") as fh:
        sha = hashlib.file_digest(fh, "sha256").hexdigest()
    return {"sha256": sha, "page_checksums": True}


class TraceWriter:
    """Append event batches; ``close()`` seals the trace. Also a context manager."""

    def __init__(
        self,
        trace_dir: str | Path,
        meta: dict,
        *,
        rotate_rows: int = DEFAULT_ROTATE_ROWS,
        reorder_window_ns: int = DEFAULT_REORDER_WINDOW_NS,
        compression: str = "zstd",
        overwrite: bool = False,
    ):
        self.dir = Path(trace_dir)
        if self.dir.exists() and any(self.dir.iterdir()) and not overwrite:
            raise TraceFormatError(
                f"{self.dir}: already exists and is not empty; choose another -o or pass --force"
            )
        (self.dir / EVENTS_DIR).mkdir(parents=True, exist_ok=True)
        for stale in (self.dir / EVENTS_DIR).glob("*.parquet"):
            stale.unlink()
        self.meta = meta
        self.meta["parts"] = []
        self.meta["complete"] = False
        self.rotate_rows = rotate_rows
        self.reorder_window_ns = reorder_window_ns
        self.compression = compression
        self._pending: list[dict[str, np.ndarray]] = []
        self._pending_rows = 0
        self._last_sealed_ts: int | None = None
        self.late_events = 0  # arrived after their time window was already sealed
        self.rows_written = 0
        self.bytes_written = 0
        self.error: str | None = None  # set by abandon(): nothing more reaches the disk
        self._closed = False
        write_meta_atomic(self.dir, self.meta)

    def append(self, columns: dict[str, np.ndarray]) -> None:
        """Queue one batch (every column of :data:`COLUMNS`, equal lengths)."""
        n = len(columns["ts_ns"])
        if n == 0:
            return
        batch = {}
        for name, dt in COLUMNS.items():
            col = columns.get(name)
            if col is None:
                raise ValueError(f"batch lacks column {name!r}")
            if len(col) != n:
                raise ValueError(f"column {name!r} has {len(col)} rows, expected {n}")
            batch[name] = np.asarray(col, dtype=dt)
        if self.error is not None:
            self._drop(batch)
            return
        self._pending.append(batch)
        self._pending_rows += n
        if self._pending_rows >= self.rotate_rows:
            self._seal(final=False)

    def _count(self, batch: dict[str, np.ndarray]) -> None:
        counts = np.bincount(batch["kind"])  # O(rows): np.unique sorts them
        for k in np.flatnonzero(counts).tolist():
            c = int(counts[k])
            name = EventKind(k).name if k in EventKind._value2member_map_ else f"KIND_{k}"
            self.meta["counts"][name] = self.meta["counts"].get(name, 0) + c
        lost = batch["kind"] == EventKind.LOST
        if lost.any():
            self.add_lost(batch["aux"][lost], batch["aux2"][lost])

    def add_lost(self, amounts: np.ndarray, reasons: np.ndarray) -> None:
        """Fold LOST amounts into meta["lost"] (the writer's LOST rows call this)."""
        by_reason = self.meta["lost"]["by_reason"]
        for amount, reason in zip(amounts.tolist(), reasons.tolist(), strict=True):
            known = reason in LostReason._value2member_map_
            key = LostReason(reason).name if known else str(reason)
            by_reason[key] = by_reason.get(key, 0) + amount
            self.meta["lost"]["total"] += amount

    def _seal(self, *, final: bool) -> None:
        if not self._pending:
            return
        cols = {name: np.concatenate([b[name] for b in self._pending]) for name in COLUMNS}
        order = np.lexsort((cols["seq"], cols["ts_ns"]))
        cols = {name: c[order] for name, c in cols.items()}
        if self._last_sealed_ts is not None:
            late = cols["ts_ns"] < self._last_sealed_ts
            if late.any():
                # Too late to sort in: keep the row at the window edge so order holds.
                self.late_events += int(late.sum())
                cols["ts_ns"][late] = self._last_sealed_ts
                order = np.lexsort((cols["seq"], cols["ts_ns"]))
                cols = {name: c[order] for name, c in cols.items()}
        rows = len(cols["ts_ns"])
        keep = rows
        if not final:
            cutoff = int(cols["ts_ns"][-1]) - self.reorder_window_ns
            keep = int(np.searchsorted(cols["ts_ns"], cutoff, side="right"))
        self._pending = [cols]  # until the part is on disk, all of it is still pending
        if keep == 0:
            return
        self._write_part({name: c[:keep] for name, c in cols.items()})
        self._pending = [{name: c[keep:] for name, c in cols.items()}] if keep < rows else []
        self._pending_rows = rows - keep
        self.meta["late_events"] = self.late_events
        write_meta_atomic(self.dir, self.meta)

    def _write_part(self, cols: dict[str, np.ndarray]) -> None:
        index = len(self.meta["parts"])
        name = f"part-{index:05d}.parquet"
        final_path = self.dir / EVENTS_DIR / name
        tmp_path = self.dir / EVENTS_DIR / f".{name}.tmp"
        table = pa.Table.from_arrays([pa.array(cols[n]) for n in COLUMNS], schema=ARROW_SCHEMA)
        try:
            write_parquet(table, tmp_path, self.compression)
            with open(tmp_path, "rb") as fh:
                os.fsync(fh.fileno())
            os.replace(tmp_path, final_path)
        except BaseException:
            tmp_path.unlink(missing_ok=True)  # give the space back: meta.json must still fit
            raise
        size = final_path.stat().st_size
        ts = cols["ts_ns"]
        self.meta["parts"].append(
            {"file": name, "rows": len(ts), "ts_min": int(ts[0]), "ts_max": int(ts[-1]),
             "bytes": size, **part_digest(final_path)}
        )
        self._count(cols)
        self._last_sealed_ts = int(ts[-1])
        self.rows_written += len(ts)
        self.bytes_written += size

    def _drop(self, batch: dict[str, np.ndarray]) -> None:
        """Count rows that will never reach the disk: LOST rows keep their amounts."""
        lost = batch["kind"] == EventKind.LOST
        if lost.any():
            self.add_lost(batch["aux"][lost], batch["aux2"][lost])
        dropped = int((~lost).sum())
        if dropped:
            self.add_lost(np.array([dropped]), np.array([LostReason.WRITE_FAILED]))

    def abandon(self, reason: str) -> None:
        """Writing failed (disk full, I/O error): stop writing, keep the sealed parts.

        Every row not yet sealed, and every row appended from now on, is counted as LOST
        ``WRITE_FAILED``; meta.json is rewritten (best effort: the failed part's temporary
        file is gone, so it usually fits) with ``complete: false`` and ``write_error``.
        """
        self.error = reason
        for batch in self._pending:
            self._drop(batch)
        self._pending, self._pending_rows = [], 0
        self.meta["write_error"] = reason
        self.meta["complete"] = False
        self._write_meta_best_effort()

    def _write_meta_best_effort(self) -> None:
        try:
            write_meta_atomic(self.dir, self.meta)
        except OSError:
            (self.dir / f".{META_FILE}.tmp").unlink(missing_ok=True)

    def flush(self) -> None:
        """Seal what is pending except the reorder window (for periodic durability)."""
        if self.error is None:
            self._seal(final=False)

    def close(self) -> None:
        """Seal every pending row and mark the trace complete (unless writing failed)."""
        if self._closed:
            return
        if self.error is not None:
            self.meta["late_events"] = self.late_events
            self._write_meta_best_effort()
            self._closed = True
            return
        self._seal(final=True)
        clock = self.meta.setdefault("clock", {})
        if self.meta["parts"]:
            if clock.get("start_ns") is None:
                clock["start_ns"] = self.meta["parts"][0]["ts_min"]
            if clock.get("end_ns") is None:
                clock["end_ns"] = self.meta["parts"][-1]["ts_max"]
        self.meta["late_events"] = self.late_events
        self.meta["complete"] = True
        write_meta_atomic(self.dir, self.meta)
        self._closed = True

    def __enter__(self) -> "TraceWriter":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
