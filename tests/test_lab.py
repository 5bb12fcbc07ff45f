"""The VM lab on Debian's stock 6.1 kernel (QEMU TCG): the recorder paths this host lacks.

The host kernel has no kprobes and no fentry, so these paths run only in a guest: memcg
offline and free, kmem_cache_destroy and kmem_cache_free_bulk caught by fentry or kprobe,
cgroup v2 attribution through bpf_get_current_cgroup_id(). CI runs this lane for real;
with qemu, virtme-ng, busybox or the stock kernel missing it fails (exit 6 and one line),
it never skips. The failure paths (no qemu, no image, no boot) cost seconds.
"""

import os
import re
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest

from kmemtrace.lab import LabError
from kmemtrace.lab.build import apply_patches
from kmemtrace.lab.images import patch_entries
from kmemtrace.lab.vm import WATCHDOG_MARK
from kmemtrace.trace.reader import open_trace
from kmemtrace.trace.schema import EventKind, LostReason, OfflineSource
from lab.memcg_churn import parse as parse_churn

from conftest import assert_loss_is_the_counted_residue

# A guest boot takes ~100 s here; a fixture may boot twice (see stock_trace).
pytestmark = [pytest.mark.root, pytest.mark.timeout(1500)]

REPO = Path(__file__).resolve().parents[1]
CHURN = REPO / "lab" / "churn.sh"
N_FILES = 300
ENV = {**os.environ, "COLUMNS": "300"}


def lab(*args, timeout=900, env=ENV) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "kmemtrace", "lab", *args],
                          capture_output=True, text=True, env=env, timeout=timeout)


MEMCG_CHURN = REPO / "lab" / "memcg_churn.py"
CHURN_N, CHURN_EVERY = 50, 25  # memcgs per phase (burst, loop); a task in every 25th


@pytest.fixture(scope="module", params=["auto", "kprobe"])
def stock_trace(request, tmp_path_factory):
    """One guest boot per lifecycle mode: auto picks fentry on 6.1, then forced kprobes.

    The workload: churn.sh in the recorder's memcg, then memcg_churn.py making memcgs at the
    guest's cgroup root (outside that memcg), which the recorder follows its tasks into.
    """
    base = tmp_path_factory.mktemp(f"lab-{request.param}")
    workload = (f"/bin/bash {CHURN} {N_FILES} && /usr/bin/python3 {MEMCG_CHURN} "
                f"/sys/fs/cgroup {CHURN_N} {CHURN_EVERY}")
    # One CI run saw this guest still running after 900 s (it takes ~100 s): a hang whose
    # cause is not known. The guest's watchdog (at 420 - 105 s) dumps its tasks and the
    # recorder's stacks; a hang is retried once, and the dump is shown as a warning.
    for attempt in (1, 2):
        out = base / f"trace{attempt}"
        res = lab("run", "--kernel", "stock", "-o", str(out), "--lifecycle", request.param,
                  "--grace", "5s", "--timeout", "420s", "--", "/bin/bash", "-c", workload,
                  timeout=600)
        if res.returncode == 0 or not hung(res):
            break
        warnings.warn(f"lab guest run {attempt} ({request.param}) hung:\n"
                      f"{guest_failure(res, out)}", stacklevel=1)
    assert res.returncode == 0, guest_failure(res, out)
    return request.param, open_trace(out), res


def hung(res: subprocess.CompletedProcess) -> bool:
    return "still running after" in res.stderr or "did not finish within" in res.stderr


def guest_failure(res: subprocess.CompletedProcess, out: Path) -> str:
    """What a failed guest run said: its stderr's end and, after a hang, the watchdog's dump."""
    console = out.with_name(out.name + ".console.log")
    text = console.read_text(errors="replace") if console.exists() else ""
    at = text.rfind(WATCHDOG_MARK)  # the last: the first is the command line
    return res.stderr[-2000:] + ("\n" + text[at:at + 8000] if at >= 0 else "")


def churned(trace) -> dict[str, list[int]]:
    """The ids memcg_churn.py printed (on the guest console)."""
    made = parse_churn(Path(trace.meta["lab"]["console"]).read_text(errors="replace"))
    assert len(made["made"]) == 2 * CHURN_N, "the console lost some of the workload's lines"
    return made


def test_trace_says_it_was_emulated(stock_trace):
    _, trace, _ = stock_trace
    meta = trace.meta
    assert meta["complete"]
    assert_loss_is_the_counted_residue(trace)  # a TCG guest nests frees under RCU too
    assert meta["kernel"]["emulated_vm"] is True
    assert meta["kernel"]["release"] == Path(meta["lab"]["image"]).name.removeprefix("vmlinuz-")
    assert meta["lab"]["kernel"] == "stock" and meta["lab"]["patches"] == []
    assert Path(meta["lab"]["console"]).is_file()


def test_lifecycle_probes_by_mode(stock_trace):
    mode, trace, _ = stock_trace
    plan = {p["probe"]: p for p in trace.meta["attach_plan"]}
    want = "fentry" if mode == "auto" else "kprobe"
    for func in ("mem_cgroup_css_offline", "mem_cgroup_css_free", "kmem_cache_destroy"):
        assert (plan[func]["type"], plan[func]["status"]) == (want, "attached"), plan[func]
    # the verifier refuses a fentry read of `void **p`: kprobe in both modes
    assert (plan["kmem_cache_free_bulk"]["type"], plan["kmem_cache_free_bulk"]["status"]) == (
        "kprobe", "attached")
    assert not any(p["type"] == "tracepoint" and p["probe"].startswith("memcg:")
                   for p in plan.values())  # a stock kernel has no lab/patches tracepoints


def _workload(trace):
    meta = trace.meta
    memcg = next(m for m in meta["memcgs"] if m["path"].startswith("/kmemtrace-"))
    return memcg, trace.to_pandas()


def test_offline_comes_from_the_probe_not_rmdir(stock_trace):
    _, trace, _ = stock_trace
    memcg, df = _workload(trace)
    offline = df[df.kind == EventKind.MEMCG_OFFLINE]
    mine = offline[offline.memcg_id == memcg["id"]]
    assert len(mine) == 1 and (offline.aux == OfflineSource.KPROBE).all()
    allocs = df[(df.kind == EventKind.ALLOC) & (df.memcg_id == memcg["id"])]
    assert allocs.ts_ns.max() < mine.ts_ns.iloc[0]


def test_cgroup_v2_attribution(stock_trace):
    _, trace, _ = stock_trace
    memcg, df = _workload(trace)
    assert trace.meta["kernel"]["cgroup"] == "v2"
    assert "-DKMT_CGROUP_V2" in trace.meta["record"]["cflags"]
    allocs = df[df.kind == EventKind.ALLOC]
    followed = {memcg["id"], *churned(trace)["made"]}
    assert len(allocs) and allocs.memcg_id.isin(followed).all()  # the subtree filter
    names = [c["name"] for c in trace.meta["caches"]]
    by_cache = allocs[allocs.cache_id >= 0].cache_id.map(lambda i: names[i]).value_counts()
    # SLAB_ACCOUNT caches (no __GFP_ACCOUNT at the call): one dentry per file at least
    assert by_cache.get("dentry", 0) >= N_FILES, by_cache.head(8).to_dict()


def test_alloc_free_counts_match(stock_trace):
    """Every file was deleted: its inode and its dentry were freed within the recording.

    A FREE carries the cache of the live ALLOC it ends, so counts compare per cache. Each
    file has one shmem inode (the guest's /tmp is an overlay on tmpfs), all freed; the
    directory's inode may still wait for RCU after the grace period, and other dentries
    (lookups of the programs the script runs) stay cached, so those are bounds.
    """
    _, trace, _ = stock_trace
    _, df = _workload(trace)
    allocs = df[df.kind == EventKind.ALLOC]  # memcg_churn.py's tmpfs files are freed too
    frees = df[df.kind == EventKind.FREE]
    names = [c["name"] for c in trace.meta["caches"]]
    inode, dentry = names.index("shmem_inode_cache"), names.index("dentry")
    n_inode, n_freed = (allocs.cache_id == inode).sum(), (frees.cache_id == inode).sum()
    assert n_inode > N_FILES and N_FILES <= n_freed <= n_inode
    assert (frees.cache_id == dentry).sum() >= N_FILES
    # only objects allocated in the trace, but for ALLOCs the kernel skipped as NESTED
    nested = trace.meta["lost"]["by_reason"].get("NESTED", 0)
    assert (~frees.ptr.isin(allocs.ptr)).sum() <= nested


def test_cache_destroy_on_module_unload(stock_trace):
    _, trace, _ = stock_trace
    _, df = _workload(trace)
    created = df[df.kind == EventKind.CACHE_CREATE]
    destroyed = df[df.kind == EventKind.CACHE_DESTROY]
    names = [c["name"] for c in trace.meta["caches"]]
    iso = destroyed[destroyed.cache_id.map(lambda i: i >= 0 and names[i] == "isofs_inode_cache")]
    assert len(iso) == 1
    assert iso.ptr.iloc[0] in set(created.ptr)  # modprobe created it in the same recording


# --- memcg life-cycles on cgroup v2: lab/memcg_churn.py at the guest's cgroup root ----------


def assert_every_memcg_followed(trace, made) -> None:
    """Every MKDIR and OFFLINE (and css free of each memcg no task entered: nothing pins it)
    is in the trace, or the shortfall in LOST; tasks moved in had their ALLOCs recorded."""
    df = trace.to_pandas()
    ids = np.array(made["made"], np.uint64)
    by_reason = trace.meta["lost"]["by_reason"]
    lost = sum(int(by_reason.get(r.name, 0))
               for r in (LostReason.LIFECYCLE_RING, LostReason.LIFECYCLE_MAP))
    never_tasked = np.setdiff1d(ids, np.array(made["tasked"], np.uint64))
    for kind, want in ((EventKind.MEMCG_MKDIR, ids), (EventKind.MEMCG_OFFLINE, ids),
                       (EventKind.MEMCG_RELEASE, never_tasked)):
        seen = df.memcg_id[df.kind == kind].to_numpy()
        missing = np.setdiff1d(want, seen)
        assert len(missing) <= lost and len(missing) == 0, (kind.name, len(missing), lost)
    assert (df.aux[df.kind == EventKind.MEMCG_OFFLINE] == OfflineSource.KPROBE).all()
    allocs = df.memcg_id[df.kind == EventKind.ALLOC].value_counts()
    assert all(allocs.get(m, 0) >= 40 for m in made["tasked"])  # socket pairs and files


def test_memcgs_the_workload_makes_are_followed_on_v2(stock_trace):
    _, trace, _ = stock_trace
    assert trace.meta["lab"]["mode"] == "in-memcg"
    assert trace.meta["lab"]["workdir"] == {"path": "/tmp/kmemtrace-work", "fs": "tmpfs"}
    assert trace.meta["record"]["follow_tasks"] is True
    assert trace.meta["record"]["lifecycle_scope"] == "subtree"
    assert_every_memcg_followed(trace, churned(trace))


# --- failure paths: one clear line, non-zero exit, console kept ------------------------------

def test_no_kernel_image(tmp_path):
    res = lab("run", "--kernel", str(tmp_path / "bzImage"), "-o", str(tmp_path / "t"),
              "--", "true")
    assert res.returncode == LabError.exit_code
    assert "no kernel image there" in res.stderr


def test_no_qemu(tmp_path):
    """A PATH with busybox but no qemu: the check names the package to install."""
    (tmp_path / "bin").mkdir()
    (tmp_path / "bin" / "busybox").symlink_to("/usr/bin/busybox")
    res = lab("run", "-o", str(tmp_path / "t"), "--", "true",
              env={**ENV, "PATH": str(tmp_path / "bin")})
    assert res.returncode == LabError.exit_code
    assert "qemu-system-x86_64 not found" in res.stderr and "qemu-system-x86" in res.stderr


def test_guest_not_up_within_boot_timeout(tmp_path):
    res = lab("run", "--boot-timeout", "1s", "-o", str(tmp_path / "t"), "--", "true")
    assert res.returncode == LabError.exit_code
    assert "did not boot within 1 s" in res.stderr
    console = tmp_path / "t.console.log"
    assert console.read_text().startswith("# ") and str(console) in res.stderr
    assert not (tmp_path / "t").exists()


def test_hung_guest_command_dumps_its_state(tmp_path):
    """A guest run that outlives the watchdog (timeout 120 s: at 90 s) leaves its tasks, the
    kernel's blocked-task stacks and the recorder's Python stacks in the console, and the
    run fails with one line that says so, not a bare "did not finish".

    At 90 s the recorder may still be compiling (under TCG 60-90 s after a 15 s boot) or
    recording beside the command: either is a hang to the watchdog, and the stacks must
    come out of both (CI caught it inside the fentry check, whose silenced stderr once
    swallowed them: tests/test_record_checks.py has that case on the host)."""
    out = tmp_path / "t"
    res = lab("run", "--timeout", "120s", "-o", str(out), "--", "sleep", "1000", timeout=600)
    assert res.returncode == LabError.exit_code, res.stderr[-2000:]
    assert "still running after 90 s" in res.stderr, res.stderr[-2000:]
    console = out.with_name("t.console.log").read_text(errors="replace")
    dump = console[console.rindex(WATCHDOG_MARK):]  # the last: the first is the command line
    assert re.search(r"^ *\d+ +\d+ +\S+ +\S+ +[\d:]+ \S+python\S* -m kmemtrace record ",
                     dump, re.M)  # ps: the recorder's row
    assert "Show Blocked State" in dump  # sysrq w
    assert "Current thread 0x" in dump  # faulthandler: the recorder's stacks
    assert not out.exists()


def test_image_that_is_not_a_kernel(tmp_path):
    bogus = tmp_path / "bzImage"
    bogus.write_bytes(b"not a kernel\n" * 100)
    res = lab("run", "--kernel", str(bogus), "--boot-timeout", "120s",
              "-o", str(tmp_path / "t"), "--", "true")
    assert res.returncode == LabError.exit_code
    assert "failed to boot" in res.stderr and "last " in res.stderr


def test_patch_that_does_not_apply(tmp_path):
    """The real patch(1) on a tiny tree: a hunk whose context is absent is refused whole."""
    tree = tmp_path / "tree"
    (tree / "mm").mkdir(parents=True)
    (tree / "mm" / "slab_common.c").write_text("int unrelated;\n")
    patch = REPO / "lab" / "patches" / "0001-mm-memcg-slab-lifecycle-tracepoints.patch"
    with pytest.raises(LabError, match="does not apply to tree"):
        apply_patches(lambda _line: None, tree, [patch], patch_entries([patch]))
    assert (tree / "mm" / "slab_common.c").read_text() == "int unrelated;\n"
    assert not (tree / "include").exists()
