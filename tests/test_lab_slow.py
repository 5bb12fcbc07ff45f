"""The patched-kernel lane: build lab/patches/0001 and record with its tracepoints.

Slow (a cold build is ~9 min on 2 cores; the tree is cached, so later runs take ~1-2 min
plus the guest), hence marked `slow` and excluded from the default run:
    .venv/bin/python -m pytest -m slow tests/test_lab_slow.py
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from kmemtrace.lab import LabError
from kmemtrace.lab.images import patch_digest, patch_entries, read_info
from kmemtrace.trace.reader import open_trace
from kmemtrace.trace.schema import EventKind, OfflineSource

pytestmark = [pytest.mark.slow, pytest.mark.root, pytest.mark.timeout(3600)]  # boots a VM under TCG

REPO = Path(__file__).resolve().parents[1]
PATCH = REPO / "lab" / "patches" / "0001-mm-memcg-slab-lifecycle-tracepoints.patch"
CHURN = REPO / "lab" / "churn.sh"
N_FILES = 300
ENV = {**os.environ, "COLUMNS": "300"}


def lab(*args, timeout=3600) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "kmemtrace", "lab", *args],
                          capture_output=True, text=True, env=ENV, timeout=timeout)


def test_a_patch_that_does_not_apply_is_refused(tmp_path):
    """Runs first, against the real cached tree: a hunk whose context is not in the file."""
    bad = tmp_path / "0001-other-kernel.patch"
    bad.write_text("--- a/mm/slab_common.c\n+++ b/mm/slab_common.c\n@@ -10,3 +10,4 @@\n"
                   " struct kmem_cache *kmem_cache_of_another_era;\n"
                   " static int no_such_function(void);\n"
                   " static int nor_this_one(void);\n"
                   "+int kmemtrace_never_applies;\n")
    res = lab("build", "--patch", str(bad))
    assert res.returncode == LabError.exit_code, res.stderr
    assert "0001-other-kernel.patch does not apply to linux-source-" in res.stderr


@pytest.fixture(scope="module")
def image(tmp_path_factory) -> Path:
    res = lab("build", "--patch", str(PATCH))
    assert res.returncode == 0, res.stderr[-3000:]
    print(res.stderr)  # the build's progress lines, for the record
    return Path(res.stdout.strip().splitlines()[-1])


def test_image_is_named_after_release_and_patch(image):
    info = read_info(image)
    entries = patch_entries([PATCH])
    assert info["patches"] == entries
    assert image.name == f"bzImage-{info['release']}-kmt-{patch_digest(entries)}"
    assert (image.with_name(image.name + ".modules") / "lib" / "modules" / info["release"]
            ).is_dir()


@pytest.fixture(scope="module")
def patched_trace(image, tmp_path_factory):
    out = tmp_path_factory.mktemp("lab-patched") / "trace"
    res = lab("run", "--kernel", str(image), "-o", str(out), "--grace", "2s", "--",
              "/bin/bash", str(CHURN), str(N_FILES), timeout=1200)
    assert res.returncode == 0, res.stderr[-3000:]
    print(res.stderr)
    return open_trace(out)


def test_recorder_prefers_the_patched_tracepoints(patched_trace):
    plan = {p["probe"]: p for p in patched_trace.meta["attach_plan"]}
    for probe, kind in (("memcg:mem_cgroup_css_offline", "tracepoint"),
                        ("memcg:mem_cgroup_css_free", "tracepoint"),
                        ("kmem:kmem_cache_destroy", "raw_tracepoint")):
        assert (plan[probe]["type"], plan[probe]["status"]) == (kind, "attached"), plan[probe]
    for func in ("mem_cgroup_css_offline", "mem_cgroup_css_free", "kmem_cache_destroy"):
        assert func not in plan  # the tracepoint replaced the fentry/kprobe row


def test_trace_names_the_patched_kernel(patched_trace, image):
    meta = patched_trace.meta
    info = read_info(image)
    assert meta["kernel"]["release"] == info["release"] and meta["kernel"]["emulated_vm"]
    assert meta["lab"]["patches"] == info["patches"]
    assert meta["lab"]["image"] == str(image)
    print(json.dumps(meta["lab"], indent=1))


def test_events_come_from_the_tracepoints(patched_trace):
    meta = patched_trace.meta
    memcg = next(m for m in meta["memcgs"] if m["path"].startswith("/kmemtrace-"))
    df = patched_trace.to_pandas()
    offline = df[df.kind == EventKind.MEMCG_OFFLINE]
    assert len(offline[offline.memcg_id == memcg["id"]]) == 1
    assert (offline.aux == OfflineSource.TRACEPOINT).all()
    allocs = df[(df.kind == EventKind.ALLOC) & (df.memcg_id == memcg["id"])]
    frees = df[df.kind == EventKind.FREE]
    names = [c["name"] for c in meta["caches"]]
    # one shmem inode per file (+ the directory, whose RCU free may land after the grace)
    inode = names.index("shmem_inode_cache")
    n_inode, n_freed = (allocs.cache_id == inode).sum(), (frees.cache_id == inode).sum()
    assert n_inode > N_FILES and N_FILES <= n_freed <= n_inode
    destroyed = df[df.kind == EventKind.CACHE_DESTROY]
    assert "isofs_inode_cache" in {names[i] for i in destroyed.cache_id if i >= 0}
    print({k: v for k, v in meta["counts"].items() if v})
