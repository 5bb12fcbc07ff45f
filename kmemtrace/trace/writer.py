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


# How each column is stored: (encoding, codec); "dictionary" means RLE_DICTIONARY. Chosen
# column by column for writer CPU first and bytes second (see write_parquet for figures).
COLUMN_STORAGE: dict[str, tuple[str, str]] = {
    "ts_ns": ("DELTA_BINARY_PACKED", "lz4_raw"),  # nearly sorted: a few bits per row
    "seq": ("DELTA_BINARY_PACKED", "lz4_raw"),
    "cpu": ("BYTE_STREAM_SPLIT", "lz4_raw"),
    "kind": ("BYTE_STREAM_SPLIT", "lz4_raw"),
    "ptr": ("dictionary", "zstd"),  # a freed object is soon handed out again
    "cache_id": ("BYTE_STREAM_SPLIT", "zstd"),
    "memcg_id": ("dictionary", "lz4_raw"),
    "bytes": ("BYTE_STREAM_SPLIT", "zstd"),
    "pid": ("BYTE_STREAM_SPLIT", "zstd"),
    "gfp": ("PLAIN", "zstd"),
    "aux": ("PLAIN", "zstd"),  # zero on every slab row: zstd takes it to nothing
    "aux2": ("PLAIN", "zstd"),
    "ctx": ("BYTE_STREAM_SPLIT", "zstd"),
}
DELTA_COLUMNS = tuple(c for c, (e, _) in COLUMN_STORAGE.items() if e == "DELTA_BINARY_PACKED")
DICTIONARY_COLUMNS = tuple(c for c, (e, _) in COLUMN_STORAGE.items() if e == "dictionary")
# Min/max statistics are kept for the time column only: no reader prunes on the others.
STATISTICS_COLUMNS = ("ts_ns",)


def write_parquet(table: pa.Table, path: Path, compression: str | None = None) -> None:
    """One part, with a CRC32 per data page so that the reader notices flipped bits.

    Encodings and codecs per column (:data:`COLUMN_STORAGE`), the writer thread being the
    recorder's largest cost: each column written alone with every encoding (dictionary,
    BYTE_STREAM_SPLIT, DELTA_BINARY_PACKED, PLAIN) and codec (zstd level 1, lz4_raw, none)
    on three 2 M-row parts of a live ``slab_hammer mix`` recording, best of 3,
    ``time.thread_time_ns`` (2026-11-27, seventh pass in docs/recording.md). The choice
    per column, in ns and B per row against the previous one:

    - ``ts_ns``/``seq``: delta with lz4_raw, 8.5/6.1 ns for 1.61/0.34 B against zstd's
      10.1/7.5 ns for 1.54/0.32 B.
    - ``ptr``: dictionary with zstd (19 ns, 1.14 B) stays: BYTE_STREAM_SPLIT with lz4_raw
      saves 8 ns for +1.25 B, which the 6 B/event budget cannot take.
    - ``memcg_id``: dictionary with lz4_raw, 7.7 ns 0.08 B against 8.5 ns 0.06 B.
    - ``pid``, ``ctx``: BYTE_STREAM_SPLIT with zstd, 3.7/2.4 ns against a dictionary's
      6.9/4.6 ns, the same bytes (0.09/0.01 B).
    - ``gfp``: PLAIN with zstd, 5.4 ns 0.20 B against a dictionary's 9.3 ns 0.10 B.
    - ``aux``/``aux2`` (zero on slab rows): PLAIN with zstd, 3.1 ns against 4.1, 0 B.
    - ``cpu``/``kind``: BYTE_STREAM_SPLIT with lz4_raw, 2.4/2.3 ns 0.19/0.16 B against
      zstd's 3.4/3.5 ns 0.08/0.07 B; ``cache_id``/``bytes`` unchanged.

    Whole parts: 71-76 instead of 91-95 ns/row, 4.14 instead of 3.69 B/row. Global knobs
    moved nothing above the noise (±3 ns): no page checksums, 4 MiB data or dictionary
    pages, 2 M-row row groups, no statistics at all, the page index. ``compression``
    overrides every column's codec (tests, benchmarks). BYTE_STREAM_SPLIT of integers needs
    pyarrow >= 17 to read (pyproject.toml).
    """
    names = table.column_names
    storage = {c: COLUMN_STORAGE[c] for c in names}
    pq.write_table(table, path, row_group_size=1 << 20, write_page_checksum=True,
                   compression=compression or {c: z for c, (_, z) in storage.items()},
                   use_dictionary=[c for c, (e, _) in storage.items() if e == "dictionary"],
                   write_statistics=[c for c in STATISTICS_COLUMNS if c in names],
                   column_encoding={c: e for c, (e, _) in storage.items() if e != "dictionary"})


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
        compression: str | None = None,
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
        self._rows = _ColumnBuffers(rotate_rows)  # pending rows: arrival order, then sorted
        self._spare = _ColumnBuffers(rotate_rows)  # the sort's gather target, swapped in
        self._last_sealed_ts: int | None = None
        self.late_events = 0  # arrived after their time window was already sealed
        self.rows_written = 0
        self.bytes_written = 0
        self.error: str | None = None  # set by abandon(): nothing more reaches the disk
        self._closed = False
        write_meta_atomic(self.dir, self.meta)

    def append(self, columns: dict[str, np.ndarray]) -> None:
        """Queue one batch (every column of :data:`COLUMNS`, equal lengths). Its rows are
        copied into the writer's own buffers: the caller may reuse its arrays."""
        n = len(columns["ts_ns"])
        if n == 0:
            return
        for name in COLUMNS:
            col = columns.get(name)
            if col is None:
                raise ValueError(f"batch lacks column {name!r}")
            if len(col) != n:
                raise ValueError(f"column {name!r} has {len(col)} rows, expected {n}")
        if self.error is not None:
            self._drop({name: np.asarray(columns[name], dt) for name, dt in COLUMNS.items()})
            return
        self._rows.extend(columns)
        if self._rows.n >= self.rotate_rows:
            self._seal(final=False)

    @property
    def pending_rows(self) -> int:
        """Rows appended but not yet in a sealed part."""
        return self._rows.n

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
        """Sort the pending rows by (ts_ns, seq) and write all but the reorder window.

        The rows are sorted by a gather into the spare buffers, which then become the
        pending ones; what stays pending (the window) is copied back to the front of the
        other set. Both sets live as long as the writer, so a part costs no fresh memory
        (a fresh 2 M-row concatenate plus gather took ~60 000 minor faults per 4 M rows).
        """
        rows = self._rows.n
        if rows == 0:
            return
        cols = self._rows.view()
        if self._last_sealed_ts is not None:
            late = cols["ts_ns"] < self._last_sealed_ts
            if late.any():
                # Too late to sort in: keep the row at the window edge so order holds.
                self.late_events += int(late.sum())
                cols["ts_ns"][late] = self._last_sealed_ts
        order = np.lexsort((cols["seq"], cols["ts_ns"]))
        self._spare.gather(cols, order)
        self._rows, self._spare = self._spare, self._rows
        cols = self._rows.view()  # until the part is on disk, all of it is still pending
        keep = rows
        if not final:
            cutoff = int(cols["ts_ns"][-1]) - self.reorder_window_ns
            keep = int(np.searchsorted(cols["ts_ns"], cutoff, side="right"))
        if keep == 0:
            return
        self._write_part({name: c[:keep] for name, c in cols.items()})
        self._spare.n = 0
        self._spare.extend({name: c[keep:] for name, c in cols.items()})
        self._rows, self._spare = self._spare, self._rows
        self.meta["late_events"] = self.late_events
        write_meta_atomic(self.dir, self.meta)

    def _write_part(self, cols: dict[str, np.ndarray]) -> None:
        index = len(self.meta["parts"])
        name = f"part-{index:05d}.parquet"
        final_path = self.dir / EVENTS_DIR / name
        tmp_path = self.dir / EVENTS_DIR / f".{name}.tmp"
        # pa.array of a numpy view is zero-copy: the table reads the writer's buffers.
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
        if self._rows.n:
            self._drop(self._rows.view())
        self._rows.n = 0
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


class _ColumnBuffers:
    """One growable array per trace column; ``n`` rows are in use.

    Why: the writer's buffers are reused part after part, so their pages stay mapped and
    the steady state allocates nothing. They grow by doubling up to about one part (plus
    the reorder window), and past that only as far as a batch needs.
    """

    def __init__(self, part_rows: int):
        self.part_rows = part_rows
        self.n = 0
        self.cols = {name: np.empty(0, dt) for name, dt in COLUMNS.items()}

    def view(self) -> dict[str, np.ndarray]:
        return {name: c[:self.n] for name, c in self.cols.items()}

    def _reserve(self, rows: int) -> None:
        cap = len(self.cols["ts_ns"])
        if rows <= cap:
            return
        cap = max(rows, min(max(2 * cap, 1 << 16), self.part_rows + self.part_rows // 4))
        for name, old in self.cols.items():
            new = np.empty(cap, old.dtype)
            new[:self.n] = old[:self.n]
            self.cols[name] = new

    def extend(self, columns: dict[str, np.ndarray]) -> None:
        """Append a batch (converted to each column's type, as ``np.asarray`` would)."""
        k = len(columns["ts_ns"])
        self._reserve(self.n + k)
        for name, buf in self.cols.items():
            buf[self.n:self.n + k] = columns[name]
        self.n += k

    def gather(self, columns: dict[str, np.ndarray], order: np.ndarray) -> None:
        """Become ``columns`` taken in ``order`` (a permutation of their rows)."""
        self.n = 0
        self._reserve(len(order))
        for name, buf in self.cols.items():
            # mode="clip": with the default "raise", numpy gathers into a temporary first.
            np.take(columns[name], order, out=buf[:len(order)], mode="clip")
        self.n = len(order)
