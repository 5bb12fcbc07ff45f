"""``kmemtrace compare``: the test statistics by hand, then synth seeds end to end."""

import json
import math
import shutil
import subprocess
import sys
from itertools import combinations
from pathlib import Path

import numpy as np
import pytest

from kmemtrace.cli.compare import split_sides
from kmemtrace.errors import UsageError
from kmemtrace.report.compare import (
    benjamini_hochberg,
    mann_whitney_p,
    midranks,
    ratio,
)
from kmemtrace.report.text import WIDTH
from kmemtrace.synth import synthesize, write_synthesis
from kmemtrace.trace.meta import write_meta_atomic

KMEMTRACE = Path(sys.executable).with_name("kmemtrace")
SEEDS_PER_SIDE = 4  # the fewest at which one Mann–Whitney row can reach p < 0.05


def test_midranks_share_ties():
    assert midranks(np.array([3.0, 1.0, 3.0, np.inf, np.inf])).tolist() == [2.5, 1, 2.5, 4.5,
                                                                            4.5]


def test_exact_p_of_separated_samples_is_two_splits_out_of_all():
    a, b = np.array([1.0, 2, 3, 4]), np.array([5.0, 6, 7, 8])
    assert mann_whitney_p(a, b) == pytest.approx(2 / math.comb(8, 4))
    assert mann_whitney_p(b, a) == pytest.approx(2 / math.comb(8, 4))
    assert mann_whitney_p(np.array([1.0, 1]), np.array([1.0, 1])) == 1.0


def test_normal_approximation_is_close_to_the_exact_p():
    rng = np.random.default_rng(7)
    a, b = rng.normal(0, 1, 10).round(1), rng.normal(0.8, 1, 10).round(1)
    ranks = midranks(np.concatenate([a, b]))
    mean = 10 * 21 / 2
    dist = np.array([abs(ranks[list(c)].sum() - mean) for c in combinations(range(20), 10)])
    exact = np.mean(dist >= abs(ranks[:10].sum() - mean) - 1e-9)
    assert mann_whitney_p(a, b) == pytest.approx(exact, abs=0.02)


def test_benjamini_hochberg_by_hand():
    # m=4, q=5%: thresholds 1.25%, 2.5%, 3.75%, 5%; only 1% is under its own.
    assert benjamini_hochberg(np.array([0.01, 0.04, 0.03, 0.5]), 0.05).tolist() == [
        True, False, False, False]
    # Step-up: 3% at rank 3 (<= 3.75%) carries 2% at rank 2 (> 2.5%) with it.
    assert benjamini_hochberg(np.array([0.03, 0.02, 0.001, 0.9]), 0.05).tolist() == [
        True, True, True, False]


def test_ratio_edge_cases():
    assert ratio(2.0, 3.0) == 1.5
    assert ratio(0.0, 0.0) is None  # printed as '–', not as 1
    assert ratio(0.0, 5.0) == math.inf
    assert ratio(None, 1.0) is None
    assert ratio(math.inf, math.inf) is None


@pytest.fixture(scope="module")
def traces(tmp_path_factory) -> dict[str, list[Path]]:
    root = tmp_path_factory.mktemp("compare")
    out = {}
    for side, workload, seeds in (("a", "container-churn", range(1, 5)),
                                  ("b", "container-churn", range(11, 15)),
                                  ("other", "long-tail", range(1, 5))):
        out[side] = []
        for seed in seeds:
            synthesis, params = synthesize(workload, seed=seed, n_events=4000, raw_params={})
            path = root / f"{workload}-{seed}"
            write_synthesis(path, synthesis, workload=workload, seed=seed, params=params)
            out[side].append(path)
    return out


def compare(a: list[Path], b: list[Path], tmp_path: Path) -> tuple[str, dict]:
    out = tmp_path / "cmp.json"
    done = subprocess.run([str(KMEMTRACE), "compare", "--format", "text", "--json", str(out),
                           *map(str, a), "--", *map(str, b)],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert max(len(line) for line in done.stdout.splitlines()) <= WIDTH
    return done.stdout, json.loads(out.read_text())


def test_seeds_of_one_workload_do_not_differ(traces, tmp_path):
    text, doc = compare(traces["a"], traces["b"], tmp_path)
    assert "no significant difference" in text
    assert not any(r["significant"] for r in doc["rows"])
    assert doc["a"] == [str(p) for p in traces["a"]]
    assert doc["b"] == [str(p) for p in traces["b"]]


def test_different_workloads_differ(traces, tmp_path):
    text, doc = compare(traces["a"], traces["other"], tmp_path)
    flagged = [r for r in doc["rows"] if r["significant"]]
    assert len(flagged) > 10 and f"{len(flagged)} of the" in text
    for r in flagged:  # separated sides: every A value below every B value, or above
        a, b = r["a"], r["b"]
        assert max(a) < min(b) or min(a) > max(b), r


def test_one_trace_per_side_gives_values_but_no_verdict(traces, tmp_path):
    done = subprocess.run([str(KMEMTRACE), "compare", "--format", "text",
                           str(traces["a"][0]), str(traces["other"][0])],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "one trace per side" in done.stdout and "signif" not in done.stdout


def test_three_per_side_is_too_few_to_test_but_shows_effect_sizes(traces, tmp_path):
    """With 3 per side no p reaches 0.05, even for completely separated sides."""
    text, doc = compare(traces["a"][:3], traces["other"][:3], tmp_path)
    assert "too few traces per side to test (need ≥ 4)" in text
    assert "no significant difference" not in text and "signif" not in text
    assert doc["test"] is None and all(r["p"] is None for r in doc["rows"])
    numeric = [r for r in doc["rows"]
               if all(isinstance(v, int | float) for v in (*r["a"], *r["b"]))]
    separated = [r for r in numeric if max(r["a"]) < min(r["b"])]
    assert separated and all(r["delta"] == 1.0 for r in separated)
    assert "+1.00" in text


def test_zero_over_zero_is_a_dash(traces, tmp_path):
    text, doc = compare(traces["a"][:1], traces["a"][1:2], tmp_path)
    zero = next(r for r in doc["rows"] if r["a_median"] == 0 and r["b_median"] == 0)
    assert zero["ratio"] is None
    line = next(ln for ln in text.splitlines()
                if ln.split() == [zero["strategy"], "0", "0", "–"])
    assert line


def test_options_after_the_separator_are_options(traces, tmp_path):
    out = tmp_path / "after.json"
    done = subprocess.run([str(KMEMTRACE), "compare", str(traces["a"][0]), "--",
                           str(traces["b"][0]), "--format", "text", "--json", str(out),
                           "-s", "way1"], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    doc = json.loads(out.read_text())
    assert doc["b"] == [str(traces["b"][0])]
    assert {r["strategy"] for r in doc["rows"]} == {"way1"}


def test_three_traces_without_separator_is_a_usage_error():
    with pytest.raises(UsageError):
        split_sides([Path("a"), Path("b"), Path("c")], None)
    assert split_sides([Path("a"), Path("b"), Path("c")], 1) == ([Path("a"), Path("b")],
                                                                 [Path("c")])


def test_traces_from_an_emulated_vm_carry_the_warning(traces, tmp_path):
    vm = tmp_path / "vm-trace"
    shutil.copytree(traces["a"][0], vm)
    meta = json.loads((vm / "meta.json").read_text())
    meta["kernel"]["emulated_vm"] = True
    write_meta_atomic(vm, meta)
    text, _ = compare([traces["a"][1]], [vm], tmp_path)
    warned = [line for line in text.splitlines() if "emulated VM" in line]
    assert len(warned) == 1  # side B only
