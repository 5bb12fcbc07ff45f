"""``kmemtrace validate``: errors against hand-made SLAB_SAMPLE counts, computed by hand."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from kmemtrace.metrics import slab_samples
from kmemtrace.replay.engine import replay
from kmemtrace.report.text import WIDTH
from kmemtrace.report.validate import validate
from kmemtrace.strategies import select
from kmemtrace.trace.reader import open_trace
from kmemtrace.trace.schema import EventKind

from conftest import SEC

KMEMTRACE = Path(sys.executable).with_name("kmemtrace")
FIXTURE = Path(__file__).parent.parent / "fixtures" / "default"


@pytest.fixture
def sampled(trace_builder) -> Path:
    """4 objects per slab, 2 pages per slab; the kernel reports 4, 5, 4 slabs."""
    tb = trace_builder()
    tb.cache("dentry", objs_per_slab=4, order=1)
    idle = tb.cache("filp", objs_per_slab=4)
    tb.caches[idle]["aliases"] = ["filp", "pid", ":0000256"]
    tb.mkdir(0, 100)
    ptr = iter(range(0x1000, 0x10000, 0x40))
    for i in range(6):  # 6 objects: 2 slabs in the model
        tb.alloc(10 + i, next(ptr), 100)
    tb.event(1 * SEC, EventKind.SLAB_SAMPLE, cache_id=0, aux=4, aux2=30)
    tb.event(1 * SEC + 1, EventKind.SLAB_SAMPLE, cache_id=idle, aux=9, aux2=30)
    for i in range(2):  # 8: still 2 slabs
        tb.alloc(SEC + 10 + i, next(ptr), 100)
    tb.event(2 * SEC, EventKind.SLAB_SAMPLE, cache_id=0, aux=5, aux2=35)
    tb.alloc(2 * SEC + 10, next(ptr), 100)  # 9: a third slab
    tb.event(3 * SEC, EventKind.SLAB_SAMPLE, cache_id=0, aux=4, aux2=31)
    tb.event(3 * SEC + 5, EventKind.SLAB_SAMPLE, cache_id=0, aux=0, aux2=0)  # no ratio
    return tb.write(end_ns=4 * SEC)


def test_errors_match_the_hand_computation(sampled):
    trace = open_trace(sampled)
    run = replay(trace, select("objcg", {})).runs[0]
    v = validate(slab_samples(run), trace.caches, trace.start_ns, "objcg")
    (fit,) = v.caches
    assert fit.kernel_pages.tolist() == [8, 10, 8, 0]
    assert fit.model_pages.tolist() == [4, 4, 6, 6]
    # raw: (4-8)/8, (4-10)/10, (6-8)/8; the kernel's 0 has no relative error.
    assert (v.raw.median_pct, v.raw.worst_pct, v.raw.n) == pytest.approx((50.0, -60.0, 3))
    # baseline: offset 8-4=4, so 8 vs 10 and 10 vs 8 after the first sample.
    assert (v.corrected.median_pct, v.corrected.worst_pct, v.corrected.n) == pytest.approx(
        (22.5, 25.0, 2))
    assert v.untouched == ("filp",)
    assert v.total_kernel_pages.tolist() == [8, 10, 8, 0]
    assert v.total_model_pages.tolist() == [8, 8, 10, 10]


def test_cli_prints_both_errors_within_72_columns(sampled, tmp_path):
    out = tmp_path / "v.json"
    done = subprocess.run([str(KMEMTRACE), "validate", str(sampled), "--json", str(out)],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert max(len(line) for line in done.stdout.splitlines()) <= WIDTH
    assert "median 50%, worst -60% (n=3)" in done.stdout
    assert "median 22.5%, worst +25% (n=2)" in done.stdout
    doc = json.loads(out.read_text())
    assert doc["strategy"] == "objcg" and doc["samples"] == 5
    assert doc["corrected"] == {"median_pct": 22.5, "worst_pct": 25.0, "n": 2}
    assert doc["untouched"] == ["filp"]


def test_a_trace_without_samples_says_so():
    done = subprocess.run([str(KMEMTRACE), "validate", str(FIXTURE)], capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "no SLAB_SAMPLE events" in done.stdout
