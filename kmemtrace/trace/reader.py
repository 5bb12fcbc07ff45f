"""TraceReader: stream a trace's parts in time order, one part in memory at a time.

Only the parts listed in meta.json are read (a part being written when a recording died
is not listed). A listed part that is missing, truncated or has the wrong columns stops
the read with one sentence naming the file.
"""

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from kmemtrace.errors import TraceFormatError
from kmemtrace.trace.meta import load_meta
from kmemtrace.trace.rowcheck import CHECKED, RowCheck
from kmemtrace.trace.schema import (
    ARROW_SCHEMA,
    COLUMNS,
    EVENTS_DIR,
    V1_ARROW_SCHEMA,
    EventContext,
    EventKind,
)


@dataclass
class TraceReader:
    """An opened trace: its meta plus a way to stream its events."""

    path: Path
    meta: dict = field(repr=False)

    @classmethod
    def open(cls, path: str | Path) -> "TraceReader":
        path = Path(path)
        return cls(path=path, meta=load_meta(path))

    @property
    def n_events(self) -> int:
        return sum(p["rows"] for p in self.meta["parts"])

    @property
    def caches(self) -> list[dict]:
        return self.meta["caches"]

    @property
    def start_ns(self) -> int:
        """Where the replay's clock starts: ``clock.start_ns``, or the first event if earlier.

        A recorder reads the clock after its probes are attached, so the events already in
        flight carry earlier stamps. They are real events and are kept; starting the clock
        at them keeps them in order (they used to count as out of order).
        """
        first = next((p["ts_min"] for p in self.meta["parts"] if p["rows"]), None)
        start = self.meta["clock"].get("start_ns")
        if start is None:
            return int(first or 0)
        return int(start if first is None else min(start, first))

    @property
    def early_events_ns(self) -> int:
        """How far the first event precedes ``clock.start_ns`` (0 if it does not)."""
        start = self.meta["clock"].get("start_ns")
        return 0 if start is None else int(start) - self.start_ns

    @property
    def end_ns(self) -> int:
        """``clock.end_ns``, or the last event if later (then :meth:`warnings` says so)."""
        last = self._last_event_ns()
        end = self.meta["clock"].get("end_ns")
        if end is None:
            return self.start_ns if last is None else last
        return int(end if last is None else max(end, last))

    def _last_event_ns(self) -> int | None:
        return next((p["ts_max"] for p in reversed(self.meta["parts"]) if p["rows"]), None)

    def warnings(self) -> list[str]:
        """What a reader of the results must know: the trace is readable but not whole."""
        out = []
        parts, meta = self.meta["parts"], self.meta
        if not meta["complete"]:
            why = (f"writing it failed: {meta['write_error']}" if meta.get("write_error")
                   else "the recorder was killed or crashed")
            out.append(f"trace is incomplete ({why}): only its {len(parts)} sealed parts "
                       "are read, and events lost after the last one are not counted")
        if self.n_events == 0:
            out.append("the trace holds no events")
        counted = sum(meta["counts"].values())
        if meta["complete"] and meta["counts"] and counted != self.n_events:
            out.append(f"meta.json counts {counted:,} events but its parts hold "
                       f"{self.n_events:,}")
        clock = meta["clock"]
        last = self._last_event_ns()
        if clock.get("end_ns") is not None and last is not None and last > clock["end_ns"]:
            out.append(f"events continue {(last - clock['end_ns']) / 1e6:,.1f} ms after "
                       "meta.json's clock.end_ns; the replay runs to the last event")
        if clock.get("start_ns") is None or clock.get("end_ns") is None:
            out.append("meta.json clock lacks start_ns or end_ns: the trace is taken to span "
                       "its first to last event")
        return out

    def _part_path(self, part: dict) -> Path:
        return self.path / EVENTS_DIR / part["file"]

    def _open_part(self, part: dict, columns: list[str] | None):
        """The part's Parquet file and the columns to read, its schema and size checked."""
        path = self._part_path(part)
        if not path.exists():
            raise TraceFormatError(
                f"{path}: listed in meta.json but missing; the trace was moved incompletely"
            )
        on_disk = V1_ARROW_SCHEMA if self.meta["format_version"] == 1 else ARROW_SCHEMA
        try:
            pfile = pq.ParquetFile(path, page_checksum_verification=True)
        except (pa.ArrowException, OSError) as exc:
            raise _damaged(path, exc) from None
        if not pfile.schema_arrow.equals(on_disk, check_metadata=False):
            raise TraceFormatError(
                f"{path}: columns {pfile.schema_arrow.names} do not match format "
                f"{self.meta['format_version']} (see docs/trace-format.md)"
            )
        if pfile.metadata.num_rows != part["rows"]:
            raise TraceFormatError(
                f"{path}: holds {pfile.metadata.num_rows} rows but meta.json says "
                f"{part['rows']}; the part was replaced or truncated"
            )
        # The checked columns are always read: checking is cheap, a wrong answer is not.
        wanted = None if columns is None else [
            c for c in on_disk.names if c in columns or c in CHECKED]
        return path, pfile, wanted

    def _part_batches(self, part: dict, columns: list[str] | None, batch_rows: int | None,
                      use_threads: bool = True) -> Iterator[dict[str, np.ndarray]]:
        """One part's rows, a row group (or ``batch_rows`` rows) at a time, checked."""
        path, pfile, wanted = self._open_part(part, columns)
        add_ctx = self.meta["format_version"] == 1 and (columns is None or "ctx" in columns)
        check = RowCheck(path, part, len(self.caches))
        if batch_rows is None:
            batches = (pfile.read_row_group(i, columns=wanted, use_threads=use_threads)
                       for i in range(pfile.num_row_groups))
        else:
            batches = pfile.iter_batches(batch_size=batch_rows, columns=wanted,
                                         use_threads=use_threads)
        while True:
            try:
                batch = next(batches, None)
            except (pa.ArrowException, OSError) as exc:
                raise _damaged(path, exc) from None
            if batch is None:
                break
            cols = {name: batch.column(name).to_numpy() for name in batch.schema.names}
            check.feed(cols)
            if add_ctx:
                cols["ctx"] = np.full(batch.num_rows, EventContext.UNKNOWN, np.uint8)
            yield {name: col for name, col in cols.items()
                   if columns is None or name in columns}
        check.end()

    def iter_batches(self, columns: list[str] | None = None, batch_rows: int | None = None,
                     *, use_threads: bool = True) -> Iterator[dict[str, np.ndarray]]:
        """Yield the trace as ``{column: numpy array}`` batches, in time order.

        A batch is one Parquet row group (the writer's are 1 Mi rows), or ``batch_rows``
        rows: memory holds one batch, however long the trace or its parts.
        ``use_threads=False`` decodes on the calling thread only: for a caller whose other
        threads already use every CPU (the replay), where Arrow's pool would only compete
        with them and costs ~25 % more CPU per row."""
        _check_columns(columns)
        for part in self.meta["parts"]:
            yield from self._part_batches(part, columns, batch_rows, use_threads)

    def iter_parts(self, columns: list[str] | None = None) -> Iterator[dict[str, np.ndarray]]:
        """Yield each part as ``{column: numpy array}``, in time order."""
        _check_columns(columns)
        for part in self.meta["parts"]:
            batches = list(self._part_batches(part, columns, None))
            if len(batches) == 1:
                yield batches[0]
            elif batches:
                yield {name: np.concatenate([b[name] for b in batches]) for name in batches[0]}
            else:
                yield {name: np.zeros(0, dtype=COLUMNS[name]) for name in
                       (columns if columns is not None else COLUMNS)}

    def to_pandas(self, kinds: list[EventKind] | None = None) -> pd.DataFrame:
        """The whole trace as one DataFrame (small traces, analyses and tests)."""
        frames = []
        for cols in self.iter_parts():
            df = pd.DataFrame(cols)
            if kinds is not None:
                df = df[df["kind"].isin([int(k) for k in kinds])]
            frames.append(df)
        if not frames:
            return pd.DataFrame({n: np.zeros(0, dtype=dt) for n, dt in COLUMNS.items()})
        return pd.concat(frames, ignore_index=True)


def _check_columns(columns: list[str] | None) -> None:
    for col in columns or []:
        if col not in COLUMNS:
            raise TraceFormatError(f"unknown column {col!r}; columns are {list(COLUMNS)}")


def _damaged(path: Path, exc: Exception) -> TraceFormatError:
    return TraceFormatError(
        f"{path}: damaged Parquet part ({str(exc).splitlines()[0]}); "
        "delete it from meta.json's parts to read the rest, or re-record")


def open_trace(path: str | Path) -> TraceReader:
    """Open a trace directory, checking magic, format_version and the part list."""
    return TraceReader.open(path)
