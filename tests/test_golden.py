"""Golden metrics: every strategy on every committed fixture gives the committed numbers.

A change that moves them must regenerate them on purpose (tests/golden/update.py) and say
why; an accidental change to the model or a strategy fails here.
"""

import json
import math
from pathlib import Path

import pytest

from golden.update import FIXTURES, golden_metrics

GOLDEN = Path(__file__).parent / "golden"


def _same(a, b) -> bool:
    if isinstance(a, float) and isinstance(b, float):
        return math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-12)
    return a == b


@pytest.mark.parametrize("fixture", FIXTURES)
def test_fixture_metrics_match_golden(fixture):
    expected = json.loads((GOLDEN / f"{fixture}.json").read_text())
    actual = golden_metrics(fixture)
    assert set(actual) == set(expected)
    for strategy, metrics in expected.items():
        diffs = {k: (v, actual[strategy][k]) for k, v in metrics.items()
                 if not _same(v, actual[strategy][k])}
        assert not diffs, f"{fixture}/{strategy} moved (golden, now): {diffs}"
