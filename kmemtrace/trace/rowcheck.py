"""The checks every read of a part makes on its rows: cheap, and never skipped.

Why always: a replay that meets a row out of order, a cache id past the cache table or an
event kind it does not know used to clamp, skip or ignore it and print different numbers
with no warning. These are vectorised passes over three columns (a few ms per million
rows), so every reader runs them, and the first bad row is named by part and row.

A part may be checked batch by batch (:class:`RowCheck`), so a reader that streams row
groups holds one batch, not the part; the order check then spans batch boundaries.
"""

from pathlib import Path

import numpy as np

from kmemtrace.errors import TraceFormatError
from kmemtrace.trace.schema import SAMPLE_HAS_CPU_FIELDS, EventKind

CHECKED = ("ts_ns", "kind", "cache_id")
# SLAB_SAMPLE's fields of what the CPUs hold, checked when a read asks for them (reading
# them on every read would cost the replay three more columns)
SAMPLE_CPU = ("gfp", "bytes", "pid")
_KINDS = np.array(sorted(int(k) for k in EventKind), dtype=np.int64)
assert np.array_equal(_KINDS, np.arange(_KINDS[0], _KINDS[-1] + 1))  # no gaps: see feed()


def _row_error(path: Path, row: int, what: str) -> TraceFormatError:
    return TraceFormatError(f"{path.name} row {row}: {what}; the part is damaged or was "
                            "written out of contract (see docs/trace-format.md)")


class RowCheck:
    """The checks of one part, fed its rows in order, one batch at a time."""

    def __init__(self, path: Path, part: dict, n_caches: int) -> None:
        self.path, self.part, self.n_caches = path, part, n_caches
        self.rows = 0
        self.first_ts: int | None = None
        self.last_ts: int | None = None

    def feed(self, cols: dict[str, np.ndarray]) -> None:
        """Check the next batch of rows (row numbers in errors count from the part's start)."""
        ts = cols["ts_ns"]
        if len(ts) == 0:
            return
        path, row0 = self.path, self.rows
        if self.last_ts is not None and int(ts[0]) < self.last_ts:
            raise _row_error(path, row0, f"ts_ns {int(ts[0])} is before row {row0 - 1}'s "
                                         f"{self.last_ts} (rows are sorted by time)")
        # The part's span first, batch by batch: a row outside it would otherwise reach the
        # replay before end() sees it (a timestamp near 2^62 makes Way #2's reaper tick
        # for ever), since batches are replayed as they are read.
        lo, hi = self.part["ts_min"], self.part["ts_max"]
        if int(ts[0]) < lo or int(ts[-1]) > hi:
            i = int(np.flatnonzero((ts < lo) | (ts > hi))[0])
            raise _row_error(path, row0 + i, f"ts_ns {int(ts[i])} is outside the part's "
                                             f"{lo}..{hi} in meta.json")
        back = np.flatnonzero(ts[1:] < ts[:-1])
        if len(back):
            i = int(back[0]) + 1
            raise _row_error(path, row0 + i, f"ts_ns {int(ts[i])} is before row "
                                             f"{row0 + i - 1}'s {int(ts[i - 1])} "
                                             "(rows are sorted by time)")
        kind = cols["kind"]
        # min/max first: two cheap passes clear a good batch; the row is searched for only
        # when one is bad (the kinds are 1..N without gaps, so a range holds them).
        if kind.min() < _KINDS[0] or kind.max() > _KINDS[-1]:
            i = int(np.flatnonzero(~np.isin(kind, _KINDS))[0])
            raise _row_error(path, row0 + i, f"unknown event kind {int(kind[i])}")
        cache = cols["cache_id"]
        if cache.min() < -1 or cache.max() >= self.n_caches:
            i = int(np.flatnonzero((cache < -1) | (cache >= self.n_caches))[0])
            raise _row_error(path, row0 + i, f"cache_id {int(cache[i])} is not in "
                                             f"meta.json's {self.n_caches} caches")
        if all(name in cols for name in SAMPLE_CPU):
            _check_sample_cpu(path, row0, kind, cols)
        if self.first_ts is None:
            self.first_ts = int(ts[0])
        self.last_ts = int(ts[-1])
        self.rows += len(ts)

    def end(self) -> None:
        """After the last batch: the rows span what meta.json says."""
        if self.first_ts is None:
            return
        part = self.part
        if self.first_ts != part["ts_min"] or self.last_ts != part["ts_max"]:
            raise TraceFormatError(
                f"{self.path.name}: rows span {self.first_ts}..{self.last_ts} ns but "
                f"meta.json says {part['ts_min']}..{part['ts_max']}; the part was replaced "
                "or damaged")


def _check_sample_cpu(path: Path, row0: int, kind: np.ndarray,
                      cols: dict[str, np.ndarray]) -> None:
    """A SLAB_SAMPLE flagged :data:`SAMPLE_HAS_CPU_FIELDS` in ``gfp`` has counts there:
    ``cpu_slabs`` (``bytes``) and ``partial`` (``pid``) never negative. Unflagged rows are
    not looked at: the replay reads those columns only under the flag."""
    flagged = (kind == EventKind.SLAB_SAMPLE) & (cols["gfp"] == SAMPLE_HAS_CPU_FIELDS)
    if not flagged.any():
        return
    cpu_slabs, partial = cols["bytes"], cols["pid"]
    bad = flagged & ((cpu_slabs < 0) | (partial < 0))
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise _row_error(path, row0 + i, f"SLAB_SAMPLE with CPU fields: cpu_slabs "
                                         f"{int(cpu_slabs[i])}, partial {int(partial[i])}")


def check_rows(path: Path, part: dict, cols: dict[str, np.ndarray], n_caches: int) -> None:
    """Raise naming the first row that breaks the format's ordering or id rules."""
    check = RowCheck(path, part, n_caches)
    check.feed(cols)
    check.end()
