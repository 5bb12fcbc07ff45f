"""The issue-16 scale in the VM lab: 1 000 memcgs in a burst and 1 000 in a loop on the stock
6.1's cgroup v2, recorded for the whole guest. Minutes under TCG, hence `slow`:
    .venv/bin/python -m pytest -m slow tests/test_lab_memcg_slow.py
"""

from pathlib import Path

import pytest
from test_lab import MEMCG_CHURN, assert_every_memcg_followed, lab

from kmemtrace.trace.reader import open_trace
from lab.memcg_churn import parse as parse_churn

pytestmark = [pytest.mark.slow, pytest.mark.root, pytest.mark.timeout(3600)]  # boots a VM under TCG
N, EVERY = 1000, 100


def test_whole_guest_records_every_memcg_of_a_thousand(tmp_path):
    out = tmp_path / "trace"
    res = lab("run", "--kernel", "stock", "-o", str(out), "--whole-guest", "--",
              "/usr/bin/python3", str(MEMCG_CHURN), "/sys/fs/cgroup", str(N), str(EVERY),
              timeout=3600)
    assert res.returncode == 0, res.stderr[-3000:]
    trace = open_trace(out)
    made = parse_churn(Path(trace.meta["lab"]["console"]).read_text(errors="replace"))
    assert len(made["made"]) == 2 * N
    assert trace.meta["lab"]["mode"] == "whole-guest"
    assert trace.meta["lab"]["workdir"]["fs"] == "tmpfs"
    assert trace.meta["record"]["lifecycle_scope"] == "all"
    assert_every_memcg_followed(trace, made)
