"""Dying memcgs on cgroup v2 in the VM lab (stock 6.1 under TCG): the model against the
kernel's own ``nr_dying_descendants``. Minutes under TCG, hence `slow`:
    .venv/bin/python -m pytest -m slow tests/test_lab_dying_slow.py

lab/dying_v2.py removes 6 child memcgs whose jobs left files cached on ext4 (a RAM disk),
then deletes half of the files, then drops the page cache, then unmounts; between steps it
prints the parent's ``cgroup.stat`` ``nr_dying_descendants``. The whole guest is recorded
(mem_cgroup_css_offline/_free by fentry on 6.1, page cache by the filemap raw
tracepoints). The model (objcg + the recorded page cache) must count, at each step, the
dying memcgs the kernel counts; and each child's css free must follow its last page.
"""

from pathlib import Path

import numpy as np
import pytest
from test_lab import REPO, lab

from analyses.which_way.dying import dying_fit
from analyses.which_way.record import truth_path
from kmemtrace.replay.engine import replay
from kmemtrace.strategies import select
from kmemtrace.trace.reader import open_trace
from kmemtrace.trace.schema import EventKind
from lab.dying_v2 import parse

pytestmark = [pytest.mark.slow, pytest.mark.root, pytest.mark.timeout(3600)]  # boots a VM under TCG
DYING_V2 = REPO / "lab" / "dying_v2.py"
N = 6


@pytest.fixture(scope="module")
def lab_dying(tmp_path_factory):
    out = tmp_path_factory.mktemp("lab-dying") / "trace"
    res = lab("run", "--kernel", "stock", "-o", str(out), "--whole-guest", "--grace", "3s",
              "--", "/usr/bin/python3", str(DYING_V2), "/sys/fs/cgroup", str(N),
              timeout=3600)
    assert res.returncode == 0, res.stderr[-3000:]
    trace = open_trace(out)
    got = parse(Path(trace.meta["lab"]["console"]).read_text(errors="replace"))
    truth_path(out).write_text("ts_ns,memcgs,online,dying\n" + "".join(
        f"{ts},0,0,{n}\n" for ts, n in got["dying"]))
    result = replay(trace, select("objcg", {}), samples=200)
    return trace, got, dying_fit(trace, result, result.runs[0], truth_path(out))


def test_the_kernel_held_the_removed_memcgs_for_their_page_cache(lab_dying):
    trace, got, _ = lab_dying
    assert trace.meta["record"]["page_cache"] is True
    assert trace.meta["kernel"]["cgroup"] == "v2"
    counts = [n for _, n in got["dying"]]
    # start, removed, deleted-half, drop-caches, unmounted
    assert len(counts) == 5 and counts[0] == 0 and counts[1] == N and counts[-1] == 0


def test_the_model_counts_what_nr_dying_descendants_counts(lab_dying):
    _, got, fit = lab_dying
    d = fit.over_time
    assert list(d.kernel_rows) == [n for _, n in got["dying"]]  # css frees agree with stat
    assert list(d.model_rows) == list(d.kernel_rows)
    assert (d.model_slab_rows == 0).all()  # 6.1 reparents slab: it alone holds none
    assert fit.errors() == (0.0, 0.0)


def test_each_css_free_follows_its_last_cached_page(lab_dying):
    trace, got, fit = lab_dying
    df = trace.to_pandas()
    for memcg in got["made"]:
        me = df[df.memcg_id == memcg]
        pc = me[me.kind == EventKind.PAGE_CACHE]
        assert len(pc) and int(pc.aux.sum()) == 0, memcg
        last_page = int(pc.ts_ns.to_numpy()[np.flatnonzero(np.cumsum(pc.aux) == 0)[-1]])
        free = me.ts_ns[me.kind == EventKind.MEMCG_RELEASE].to_numpy()
        assert len(free) == 1 and free[0] > last_page, memcg
    m = fit.memcgs.set_index("memcg_id")
    assert ((m.kernel_free_s - m.model_free_s).abs() < 1.0 * 53).all()  # TCG: up to 53x
