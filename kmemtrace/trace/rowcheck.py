"""The checks every read of a part makes on its rows: cheap, and never skipped.

Why always: a replay that meets a row out of order, a cache id past the cache table or an
event kind it does not know used to clamp, skip or ignore it and print different numbers
with no warning. These are vectorised passes over three columns (a few ms per million
rows), so every reader runs them, and the first bad row is named by part and row.
"""

from pathlib import Path

import numpy as np

from kmemtrace.errors import TraceFormatError
from kmemtrace.trace.schema import EventKind

CHECKED = ("ts_ns", "kind", "cache_id")
_KINDS = np.array(sorted(int(k) for k in EventKind), dtype=np.int64)


def _row_error(path: Path, row: int, what: str) -> TraceFormatError:
    return TraceFormatError(f"{path.name} row {row}: {what}; the part is damaged or was "
                            "written out of contract (see docs/trace-format.md)")


def check_rows(path: Path, part: dict, cols: dict[str, np.ndarray], n_caches: int) -> None:
    """Raise naming the first row that breaks the format's ordering or id rules."""
    ts = cols["ts_ns"]
    if len(ts) == 0:
        return
    back = np.flatnonzero(ts[1:] < ts[:-1])
    if len(back):
        i = int(back[0]) + 1
        raise _row_error(path, i, f"ts_ns {int(ts[i])} is before row {i - 1}'s "
                                  f"{int(ts[i - 1])} (rows are sorted by time)")
    if int(ts[0]) != part["ts_min"] or int(ts[-1]) != part["ts_max"]:
        raise TraceFormatError(
            f"{path.name}: rows span {int(ts[0])}..{int(ts[-1])} ns but meta.json says "
            f"{part['ts_min']}..{part['ts_max']}; the part was replaced or damaged")
    kind = cols["kind"]
    unknown = np.flatnonzero(~np.isin(kind, _KINDS))
    if len(unknown):
        i = int(unknown[0])
        raise _row_error(path, i, f"unknown event kind {int(kind[i])}")
    cache = cols["cache_id"]
    outside = np.flatnonzero((cache < -1) | (cache >= n_caches))
    if len(outside):
        i = int(outside[0])
        raise _row_error(path, i, f"cache_id {int(cache[i])} is not in meta.json's "
                                  f"{n_caches} caches")
