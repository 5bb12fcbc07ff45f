"""The which-way study end to end on the fixtures (no recording, small sizes).

Keeps ``python -m analyses.which_way`` from rotting: every strategy, every published-figure
check and every figure the report names must be produced from a real replay.
"""

import re

from analyses.which_way.__main__ import main
from analyses.which_way.freecost import GEOMETRY, free_costs
from kmemtrace.strategies import REGISTRY


def test_study_runs_end_to_end_on_fixtures(tmp_path):
    out = tmp_path / "out"
    assert main(["--no-record", "--quick", "--runs", "1", "--out", str(out),
                 "--work", str(tmp_path / "work")]) == 0
    report = (out / "REPORT.md").read_text()
    for name in REGISTRY:
        assert f"| `{name}` |" in report, name
    assert "## Checks against published measurements" in report
    for heading in ("v5.9 obj_cgroup", "v5.3 kmem_cache reparenting", "Way #1 cost",
                    "kernel bugzilla 190841"):
        assert f"### {heading}" in report, heading
    assert "* **Verdict:**" in report
    figures = re.findall(r"!\[[^]]*\]\(([^)]+)\)", report)
    assert len(figures) >= 5
    for name in figures:
        png = out / name
        assert png.stat().st_size > 1000, name
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "bundled fixtures" in report  # it said where its traces came from


def test_davydov_benchmark_replay_separates_live_and_dead_frees():
    # Way #1 makes frees into a dead cache take the node lock when a slab un-fills or
    # empties, and return every emptied slab; a live cache parks them instead.
    free = free_costs(n=1_000)
    assert list(free["size"]) == sorted(GEOMETRY)
    assert (free.locks_per_1k_dead > free.locks_per_1k_live).all()
    assert (free.pages_freed_dead >= free.pages_freed_live).all()
