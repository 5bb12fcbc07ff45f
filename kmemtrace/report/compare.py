"""Two sets of traces of one workload, metric by metric: is B different from A?

With one trace per side there is no estimate of run-to-run noise, so only the values and
their ratio are given. With several traces per side (e.g. several synth seeds, or several
recordings on a stock and on a patched kernel) each (metric, strategy) row gets a
two-sided Mann–Whitney U test: rank-based, so it assumes no distribution and is not
fooled by a "never" (inf) latency or by one outlier run. p is exact (all splits of the
pooled runs) for small samples, else the normal approximation with tie correction.

A comparison tests dozens of rows at once, so some would come out "significant" by luck
alone; the rows are therefore judged together with the Benjamini–Hochberg procedure at a
5% false discovery rate. Rows whose values are all equal carry no test and are left out
of that family. With 3 traces per side no two-sided Mann–Whitney p can go below 0.1, so
even complete separation would read "no difference": with fewer than
:data:`MIN_PER_SIDE` traces on a side there is no test, and each row shows its effect size
instead — Cliff's delta, the share of (A, B) pairs where B is larger minus the share
where it is smaller (+1: every B above every A; 0: no shift).
"""

import math
from dataclasses import dataclass, replace
from functools import cache
from itertools import combinations

import numpy as np

from kmemtrace.metrics import metric_fields
from kmemtrace.report.comparison import Comparison

FDR = 0.05
MIN_PER_SIDE = 4  # the fewest traces per side whose exact p can reach 0.05 (2/70 = 0.029)
EXACT_MAX_SPLITS = 20_000  # above this many splits, the normal approximation
TEST_NAME = (f"two-sided Mann–Whitney U per row, Benjamini–Hochberg at {FDR:.0%} false "
             "discovery rate over the rows that vary")


@dataclass(frozen=True)
class Row:
    """One metric of one strategy: each side's values, medians, ratio and the test."""

    metric: str
    strategy: str
    a: tuple  # per trace; None where the metric does not apply
    b: tuple
    a_median: float | None
    b_median: float | None
    ratio: float | None  # b_median / a_median; None when undefined (0/0 too)
    delta: float | None  # Cliff's delta of B against A; None with one trace on a side
    p: float | None  # None: not tested (one trace per side, or no values)
    significant: bool | None


@dataclass(frozen=True)
class SideBySide:
    """The rows of a comparison of side A with side B."""

    a: tuple[Comparison, ...]
    b: tuple[Comparison, ...]
    rows: tuple[Row, ...]

    @property
    def tested(self) -> bool:
        """Whether both sides have enough traces for a test that could reach p < 0.05."""
        return min(len(self.a), len(self.b)) >= MIN_PER_SIDE

    @property
    def several(self) -> bool:
        """Whether both sides have more than one trace (effect sizes are defined)."""
        return min(len(self.a), len(self.b)) >= 2

    @property
    def family(self) -> list[Row]:
        """The rows judged together: those that were tested and whose values vary."""
        return [r for r in self.rows if r.p is not None and _varies(r)]

    @property
    def significant(self) -> list[Row]:
        return [r for r in self.rows if r.significant]


def side_by_side(a: list[Comparison], b: list[Comparison]) -> SideBySide:
    """Rows for every metric and every strategy present on both sides."""
    strategies = [m.strategy for m in a[0].metrics]
    common = [s for s in strategies
              if all(s in {m.strategy for m in c.metrics} for c in (*a, *b))]
    rows = []
    tested = min(len(a), len(b)) >= MIN_PER_SIDE
    for name in metric_fields():
        for s in common:
            va = tuple(_value(c, s, name) for c in a)
            vb = tuple(_value(c, s, name) for c in b)
            rows.append(_row(name, s, va, vb, tested))
    return SideBySide(tuple(a), tuple(b), tuple(_judge(rows)))


def _value(cmp: Comparison, strategy: str, name: str):
    return next(getattr(m, name) for m in cmp.metrics if m.strategy == strategy)


def _row(name: str, strategy: str, va: tuple, vb: tuple, tested: bool) -> Row:
    xa = np.array([v for v in va if v is not None], dtype=float)
    xb = np.array([v for v in vb if v is not None], dtype=float)
    ma = float(np.median(xa)) if len(xa) else None
    mb = float(np.median(xb)) if len(xb) else None
    several = len(xa) >= 2 and len(xb) >= 2
    p = mann_whitney_p(xa, xb) if tested and several else None
    delta = cliffs_delta(xa, xb) if several else None
    return Row(name, strategy, va, vb, ma, mb, ratio(ma, mb), delta, p, None)


def ratio(a: float | None, b: float | None) -> float | None:
    """b / a; inf for 0 vs more; None when either is missing, both are 0 or both inf."""
    if a is None or b is None or (math.isinf(a) and math.isinf(b)) or (a == 0 and b == 0):
        return None
    if a == 0:
        return math.inf
    return b / a


def cliffs_delta(a: np.ndarray, b: np.ndarray) -> float:
    """P(B > A) - P(B < A) over all pairs: -1..+1, rank-based like the test."""
    above, below = b[None, :] > a[:, None], b[None, :] < a[:, None]  # inf ties with inf
    return float(above.mean() - below.mean())


def _varies(row: Row) -> bool:
    values = {v for v in (*row.a, *row.b) if v is not None}
    return len(values) > 1


def _judge(rows: list[Row]) -> list[Row]:
    """Mark the rows that survive Benjamini–Hochberg; untested rows stay None."""
    family = [i for i, r in enumerate(rows) if r.p is not None and _varies(r)]
    keep = benjamini_hochberg(np.array([rows[i].p for i in family]), FDR)
    verdict = dict(zip(family, keep, strict=True))
    return [replace(r, significant=bool(verdict.get(i, False)))
            if r.p is not None else r for i, r in enumerate(rows)]


def benjamini_hochberg(p: np.ndarray, q: float) -> np.ndarray:
    """Which hypotheses to reject: all up to the largest k with p_(k) <= k q / m."""
    m = len(p)
    reject = np.zeros(m, dtype=bool)
    if m == 0:
        return reject
    order = np.argsort(p, kind="stable")
    below = p[order] <= q * np.arange(1, m + 1) / m
    if below.any():
        k = int(np.nonzero(below)[0].max())
        reject[order[:k + 1]] = True
    return reject


def midranks(x: np.ndarray) -> np.ndarray:
    """Ranks 1..n, ties sharing the mean of their positions (inf ties with inf)."""
    _, inverse, counts = np.unique(x, return_inverse=True, return_counts=True)
    ends = np.cumsum(counts)
    return ((ends - counts + 1 + ends) / 2.0)[inverse]


@cache
def _splits(n: int, k: int) -> np.ndarray:
    return np.array(list(combinations(range(n), k)), dtype=np.int64)


def mann_whitney_p(a: np.ndarray, b: np.ndarray) -> float:
    """Two-sided p of the rank-sum of ``a`` against ``b``."""
    na, nb = len(a), len(b)
    ranks = midranks(np.concatenate([a, b]))
    n = na + nb
    expected = na * (n + 1) / 2.0
    observed = abs(ranks[:na].sum() - expected)
    if math.comb(n, na) <= EXACT_MAX_SPLITS:
        dist = np.abs(ranks[_splits(n, na)].sum(axis=1) - expected)
        return float(np.mean(dist >= observed - 1e-9))
    _, counts = np.unique(ranks, return_counts=True)
    var = na * nb / 12.0 * ((n + 1) - (counts ** 3 - counts).sum() / (n * (n - 1)))
    if var <= 0:
        return 1.0
    z = max(observed - 0.5, 0.0) / math.sqrt(var)  # continuity correction
    return float(math.erfc(z / math.sqrt(2)))
