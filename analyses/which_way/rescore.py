"""Score recordings against kernel truth, and the same recordings read as an older sampler
wrote them: ``python -m analyses.which_way.rescore TRACE... [--ablate DIR]``.

Why: a sampler change (issue 12: each cache's row stamped at its own reads, and what the
CPUs hold read beside ``slabs``/``objects``) should be judged on one recording, not on two
recordings of a busy machine. ``--ablate DIR`` writes a copy of each trace into ``DIR``
with its SLAB_SAMPLE rows as the older sampler wrote them: the CPU fields zeroed (so the
prelude falls back to its estimate) and every row of a round stamped with the round's
first stamp (a round starts where the cache ids stop increasing), and scores it too.
Prints, per trace: the worst raw error per cache over all caches and over the traced ones
(:func:`analyses.which_way.calibrate.untraced`), the median over the caches that moved,
and the caches on both targets.
"""

import argparse
import shutil
import sys
from pathlib import Path

import numpy as np

from analyses.which_way.calibrate import Calibration, _calibration
from analyses.which_way.record import truth_path
from analyses.which_way.sweep import TraceSpec
from kmemtrace.trace.reader import TraceReader
from kmemtrace.trace.schema import COLUMNS, EventKind
from kmemtrace.trace.writer import TraceWriter

CPU_COLUMNS = ("gfp", "bytes", "pid", "ptr")


def round_starts(cache_id: np.ndarray) -> np.ndarray:
    """Per sample row (in trace order), the index of the first row of its round: a round
    reads the caches in increasing id order, so a round begins where the id does not
    increase."""
    new = np.r_[True, cache_id[1:] <= cache_id[:-1]]
    return np.flatnonzero(new)[np.cumsum(new) - 1]


def as_old_sampler(src: Path, dst: Path) -> None:
    """A copy of ``src`` whose SLAB_SAMPLE rows look as the older sampler wrote them (see
    the module docstring); every other row is unchanged."""
    trace = TraceReader.open(src)
    cols = {name: [] for name in COLUMNS}
    for part in trace.iter_parts(list(COLUMNS)):
        for name in COLUMNS:
            cols[name].append(part[name])
    cols = {name: np.concatenate(v) for name, v in cols.items()}
    sample = np.flatnonzero(cols["kind"] == EventKind.SLAB_SAMPLE)
    for name in CPU_COLUMNS:
        cols[name][sample] = 0
    ts = cols["ts_ns"][sample]
    cols["ts_ns"][sample] = ts[round_starts(cols["cache_id"][sample])]
    order = np.lexsort((cols["seq"], cols["ts_ns"]))
    cols = {name: c[order] for name, c in cols.items()}
    # the writer counts the rows (and the LOST rows' losses) again as it writes them
    meta = trace.meta | {"parts": [], "counts": {k.name: 0 for k in EventKind},
                         "lost": {"total": 0, "by_reason": {}}}
    if dst.exists():
        shutil.rmtree(dst)
    with TraceWriter(dst, meta) as writer:
        writer.append(cols)
    truth = truth_path(src)
    if truth.exists():
        shutil.copy(truth, truth_path(dst))


def summary(cal: Calibration) -> str:
    ok, n = cal.caches_on_target()
    worst = max((f for f in cal.seeded.caches if f.raw.worst_pct is not None),
                key=lambda f: abs(f.raw.worst_pct))
    traced = ("-" if cal.traced_worst_pct is None
              else f"{cal.traced_worst_pct:+.1f} % ({cal.traced_worst_cache})")
    return (f"worst per cache {worst.raw.worst_pct:+.1f} % ({worst.name}); traced worst "
            f"{traced}; median over {cal.n_moved} moved caches {cal.moved.median_pct:.2f} %; "
            f"on both targets {ok}/{n}")


def score(path: Path, group: str, run: int) -> Calibration | None:
    return _calibration(TraceSpec(group, "real", run, path))


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(prog="python -m analyses.which_way.rescore",
                                 description=__doc__)
    ap.add_argument("traces", type=Path, nargs="+")
    ap.add_argument("--ablate", type=Path, default=None,
                    help="also score a copy, written here, as the older sampler wrote it")
    ap.add_argument("--run", type=int, default=1,
                    help="run number (0 adds a replay started empty; default 1)")
    args = ap.parse_args(argv)
    for path in args.traces:
        group = path.name.split("-")[0]
        cal = score(path, group, args.run)
        print(f"{path}: {summary(cal) if cal else 'no samples'}", flush=True)
        if args.ablate:
            args.ablate.mkdir(parents=True, exist_ok=True)
            copy = args.ablate / path.name
            as_old_sampler(path, copy)
            cal = score(copy, group, args.run)
            print(f"{copy} (old sampler): {summary(cal) if cal else 'no samples'}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
