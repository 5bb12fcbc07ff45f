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
        start = self.meta.get("clock", {}).get("start_ns")
        if start is None:
            start = self.meta["parts"][0]["ts_min"] if self.meta["parts"] else 0
        return int(start)

    @property
    def end_ns(self) -> int:
        end = self.meta.get("clock", {}).get("end_ns")
        if end is None:
            end = self.meta["parts"][-1]["ts_max"] if self.meta["parts"] else self.start_ns
        return int(end)

    def _part_path(self, part: dict) -> Path:
        return self.path / EVENTS_DIR / part["file"]

    def _read_part(self, part: dict, columns: list[str] | None) -> pa.Table:
        path = self._part_path(part)
        if not path.exists():
            raise TraceFormatError(
                f"{path}: listed in meta.json but missing; the trace was moved incompletely"
            )
        v1 = self.meta["format_version"] == 1
        on_disk = V1_ARROW_SCHEMA if v1 else ARROW_SCHEMA
        wanted = None if columns is None else [c for c in columns if c in on_disk.names]
        try:
            table = pq.read_table(path, columns=wanted)
        except (pa.ArrowInvalid, OSError) as exc:
            raise TraceFormatError(
                f"{path}: damaged Parquet part ({str(exc).splitlines()[0]}); "
                "delete it from meta.json's parts to read the rest, or re-record"
            ) from None
        expected = on_disk if wanted is None else pa.schema([on_disk.field(c) for c in wanted])
        if not table.schema.equals(expected, check_metadata=False):
            raise TraceFormatError(
                f"{path}: columns {table.schema.names} do not match format "
                f"{self.meta['format_version']} (see docs/trace-format.md)"
            )
        if table.num_rows != part["rows"]:
            raise TraceFormatError(
                f"{path}: holds {table.num_rows} rows but meta.json says {part['rows']}; "
                "the part was replaced or truncated"
            )
        if v1 and (columns is None or "ctx" in columns):
            ctx = pa.array(np.full(table.num_rows, EventContext.UNKNOWN, np.uint8))
            table = table.append_column(ARROW_SCHEMA.field("ctx"), ctx)
        return table

    def iter_parts(self, columns: list[str] | None = None) -> Iterator[dict[str, np.ndarray]]:
        """Yield each part as ``{column: numpy array}``, in time order."""
        for col in columns or []:
            if col not in COLUMNS:
                raise TraceFormatError(f"unknown column {col!r}; columns are {list(COLUMNS)}")
        for part in self.meta["parts"]:
            table = self._read_part(part, columns)
            yield {name: table.column(name).to_numpy() for name in table.schema.names}

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


def open_trace(path: str | Path) -> TraceReader:
    """Open a trace directory, checking magic, format_version and the part list."""
    return TraceReader.open(path)
