"""`kmemtrace record` on the real kernel (root). CI runs these; they fail, never skip.

The workload creates N tmpfs files and unlinks half, in a memcg that `record --in-memcg`
makes: each file is at least one accounted shmem inode, dentry and file, so the counts
are known without trusting the recorder.
"""

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from analyses.which_way import parking
from kmemtrace.cli.record import loss_sentence
from kmemtrace.trace.reader import open_trace
from kmemtrace.trace.schema import (
    GFP_ACCOUNT,
    GFP_RECLAIMABLE,
    SAMPLE_HAS_CPU_FIELDS,
    EventKind,
    OfflineSource,
    PressureKind,
)

from conftest import assert_loss_is_the_counted_residue, wait_for_line

pytestmark = pytest.mark.root

N_FILES = 2000
N_LONG_NAMES = 200
WORKLOAD = """
import os, sys, tempfile
n = int(sys.argv[1]); d = tempfile.mkdtemp(dir="/dev/shm", prefix="kmt-test-")
for i in range(n):
    with open(f"{d}/f{i}", "w") as fh:
        fh.write("x")
for i in range(0, n, 2):
    os.unlink(f"{d}/f{i}")
for i in range(int(sys.argv[2]) if len(sys.argv) > 2 else 0):  # names past the dentry's
    open(f"{d}/{'n' * 100}{i}", "w").close()  # inline room: a kmalloc each
thp = [ln for ln in open("/proc/self/status") if ln.startswith("THP_enabled:")]
print("settings", os.nice(0), *(ln.split()[1] for ln in thp))
print(d)
"""
ENV = {**os.environ, "COLUMNS": "300"}  # one error line must stay one line


def kmemtrace(*args, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "kmemtrace", *args], capture_output=True,
                          text=True, env=ENV, timeout=180, **kw)


@pytest.fixture(scope="module")
def in_memcg_trace(tmp_path_factory) -> tuple[Path, subprocess.CompletedProcess]:
    out = tmp_path_factory.mktemp("rec") / "trace"
    script = out.parent / "workload.py"
    script.write_text(WORKLOAD)
    res = kmemtrace("record", "-o", str(out), "--in-memcg", "--grace", "1s", "--",
                    "/usr/bin/python3", str(script), str(N_FILES), str(N_LONG_NAMES))
    shm = res.stdout.strip().splitlines()[-1] if res.stdout.strip() else ""
    if shm.startswith("/dev/shm/kmt-test-"):
        shutil.rmtree(shm, ignore_errors=True)
    assert res.returncode == 0, res.stderr
    return out, res


def test_in_memcg_trace_holds_the_workload(in_memcg_trace):
    out, res = in_memcg_trace
    trace = open_trace(out)
    meta = trace.meta
    assert meta["complete"]
    assert_loss_is_the_counted_residue(trace)
    assert meta["kernel"]["btf"] and meta["kernel"]["cgroup"] in ("v1", "v2")
    plan = {p["probe"]: p for p in meta["attach_plan"]}
    assert plan["kmem:kmem_cache_alloc"]["status"] == "attached"
    df = trace.to_pandas()
    # meta also lists other recorders' memcgs that existed at start: ours has its MKDIR here
    created = set(df.memcg_id[df.kind == EventKind.MEMCG_MKDIR].tolist())
    memcg = next(m for m in meta["memcgs"]
                 if m["path"].startswith("/kmemtrace-") and m["id"] in created)

    allocs = df[(df.kind == EventKind.ALLOC) & (df.memcg_id == memcg["id"])]
    assert len(allocs) >= N_FILES
    assert ((allocs.gfp.to_numpy() & GFP_ACCOUNT) != 0).all()
    names = np.array([c["name"] for c in meta["caches"]])
    assert (allocs.cache_id >= 0).mean() > 0.99
    by_cache = allocs[allocs.cache_id >= 0].cache_id.map(lambda i: names[i]).value_counts()
    assert by_cache.get("shmem_inode_cache", 0) >= N_FILES  # one inode per file
    assert by_cache.get("dentry", 0) >= N_FILES
    sizes = {c["name"]: c["size"] for c in meta["caches"]}
    inodes = allocs[allocs.cache_id.map(lambda i: names[i]) == "shmem_inode_cache"]
    assert (inodes.bytes == sizes["shmem_inode_cache"]).all()

    frees = df[df.kind == EventKind.FREE]
    freed = frees[frees.ptr.isin(allocs.ptr)]
    assert len(freed) >= N_FILES // 2  # the unlinked half, at least
    first_alloc = allocs.groupby("ptr").ts_ns.min()
    assert (freed.ts_ns.to_numpy() >= first_alloc.loc[freed.ptr].to_numpy()).all()

    mkdir = df[(df.kind == EventKind.MEMCG_MKDIR) & (df.memcg_id == memcg["id"])]
    offline = df[(df.kind == EventKind.MEMCG_OFFLINE) & (df.memcg_id == memcg["id"])]
    assert len(mkdir) == 1 and len(offline) == 1
    assert mkdir.aux.iloc[0] == memcg["parent"] and mkdir.aux2.iloc[0] == memcg["level"]
    assert offline.aux.iloc[0] in (OfflineSource.CGROUP_RMDIR, OfflineSource.KPROBE)
    assert mkdir.ts_ns.iloc[0] < allocs.ts_ns.min() <= allocs.ts_ns.max() < offline.ts_ns.iloc[0]
    assert meta["clock"]["start_ns"] < mkdir.ts_ns.iloc[0] < meta["clock"]["end_ns"]
    samples = df[df.kind == EventKind.SLAB_SAMPLE]
    assert len(samples) and (samples.cache_id >= 0).all() and (samples.aux > 0).any()
    # each cache's row has its own stamp (a round's rows shared one before), and the first
    # round says what the CPUs hold: some CPU holds a slab of some cache, never more slabs
    # than the cache has (read a few microseconds apart, so allow what churn moves)
    assert samples.ts_ns.nunique() > len(samples) // 2
    held = samples[samples.gfp == SAMPLE_HAS_CPU_FIELDS]
    assert held.cache_id.nunique() > samples.cache_id.nunique() // 2
    assert (held.bytes > 0).any() and (held.pid >= 0).all()
    assert ((held.bytes + held.pid) <= held.aux + 8).mean() > 0.95
    # the first round's slabs per CPU partial list (slabs_cpu_partial), read with its row:
    # on no CPU more than the row's cpu_slabs, some cache's list on some CPU, and what is
    # left of cpu_slabs, the active slabs, at most one a CPU (allowing what churn moves)
    first = held.drop_duplicates("cache_id").set_index("cache_id").bytes
    split = {c["id"]: c["cpu_partial_start"] for c in meta["caches"]
             if "cpu_partial_start" in c}
    assert len(split) >= len(first) // 2 and any(sum(v) for v in split.values())
    assert all(len(v) <= meta["ncpus"] for v in split.values())
    active = [first[c] - sum(v) for c, v in split.items() if c in first.index]
    assert np.mean([0 <= a <= meta["ncpus"] for a in active]) > 0.95
    assert loss_sentence(meta["lost"]) in res.stderr


def test_reclaimable_kmallocs_are_filed_where_kmalloc_type_puts_them(in_memcg_trace):
    """A dentry name past the inline room is ``kmalloc(GFP_KERNEL_ACCOUNT |
    __GFP_RECLAIMABLE)`` (``__d_alloc``), which the kernel serves from ``kmalloc-rcl-<n>``
    (``kmalloc_type()``: reclaimable before accounted). Filed by ``__GFP_ACCOUNT`` alone,
    they went to ``kmalloc-cg-<n>``, and the model put them on slabs the kernel never
    had."""
    out, _ = in_memcg_trace
    trace = open_trace(out)
    df = trace.to_pandas([EventKind.ALLOC])
    names = np.array([c["name"] for c in trace.meta["caches"]])
    ours = {m["id"] for m in trace.meta["memcgs"] if m["path"].startswith("/kmemtrace-")}
    rcl = df[df.memcg_id.isin(ours) & ((df.gfp.to_numpy() & GFP_RECLAIMABLE) != 0)]
    assert len(rcl) >= N_LONG_NAMES
    filed = rcl.cache_id.map(lambda i: names[i] if i >= 0 else "none").value_counts()
    assert all(n.startswith("kmalloc-rcl-") for n in filed.index), filed.to_dict()


def test_in_memcg_command_does_not_inherit_the_recorders_settings(in_memcg_trace):
    """The recorder runs at nice -10 with transparent huge pages off (record/runtime.py);
    the command it starts must run as it would without it, like this test process."""
    _, res = in_memcg_trace
    settings = next(ln.split()[1:] for ln in res.stdout.splitlines()
                    if ln.startswith("settings "))
    own = [str(os.nice(0))] + [ln.split()[1] for ln in Path("/proc/self/status").read_text()
                               .splitlines() if ln.startswith("THP_enabled:")]
    assert settings == own


def test_replay_runs_on_a_recorded_trace(in_memcg_trace):
    out, _ = in_memcg_trace
    res = kmemtrace("replay", str(out), "--strategy", "all")
    assert res.returncode == 0, res.stderr


def test_counts_agree_with_bpftrace(tmp_path):
    """Same workload pid, same window: bpftrace's accounted allocs vs the trace's ALLOCs."""
    memcg = Path("/sys/fs/cgroup/memory") / f"kmt-xcheck-{os.getpid()}"
    memcg.mkdir()
    script = tmp_path / "workload.py"
    script.write_text("import sys; sys.stdin.readline()\n" + WORKLOAD)
    work = subprocess.Popen(["/usr/bin/python3", str(script), "4000"], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True)
    (memcg / "cgroup.procs").write_text(str(work.pid))
    out = tmp_path / "trace"
    rec = subprocess.Popen([sys.executable, "-m", "kmemtrace", "record", "-o", str(out),
                            "--cgroup", memcg.name], stderr=subprocess.PIPE, text=True, env=ENV)
    bt = subprocess.Popen(
        ["bpftrace", "-e",
         f"tracepoint:kmem:kmem_cache_alloc /pid == {work.pid} && args->accounted/ "
         "{ @cache = count(); } "
         f"tracepoint:kmem:kmalloc /pid == {work.pid} && (args->gfp_flags & {GFP_ACCOUNT})/ "
         "{ @kmalloc = count(); }"],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        wait_for_line(rec.stderr, "recording to", 60)
        wait_for_line(bt.stdout, "Attaching", 60)
        time.sleep(1.0)  # bpftrace prints before its probes are live
        work.stdin.write("go\n")
        work.stdin.close()
        shm = work.stdout.read().strip()
        work.wait(60)
        time.sleep(0.5)
    finally:
        for p in (bt, rec):
            p.send_signal(signal.SIGINT)
        bt_out = bt.communicate(timeout=60)[0]
        rec_err = rec.communicate(timeout=60)[1]
        if work.poll() is None:
            work.kill()
        memcg.rmdir()
        shutil.rmtree(shm, ignore_errors=True) if shm.startswith("/dev/shm/") else None
    assert rec.returncode == 0, rec_err
    counts = dict(line.split(": ") for line in bt_out.splitlines() if line.startswith("@"))
    expected = int(counts["@cache"]) + int(counts["@kmalloc"])
    df = open_trace(out).to_pandas()
    got = int(((df.kind == EventKind.ALLOC) & (df.pid == work.pid)).sum())
    assert expected > 4000
    assert abs(got - expected) <= 0.01 * expected, (got, expected)


def test_perf_buffer_transport_records(tmp_path):
    out = tmp_path / "trace"
    script = tmp_path / "workload.py"
    script.write_text(WORKLOAD)
    res = kmemtrace("record", "-o", str(out), "--transport", "perf", "--in-memcg",
                    "--grace", "0.5s", "--", "/usr/bin/python3", str(script), "200")
    shutil.rmtree(res.stdout.strip(), ignore_errors=True)
    assert res.returncode == 0, res.stderr
    meta = open_trace(out).meta
    assert meta["record"]["transport"] == "perf"
    assert meta["counts"]["ALLOC"] >= 200 and meta["counts"]["MEMCG_OFFLINE"] == 1


def _assert_clean_failure(res: subprocess.CompletedProcess, out: Path, words: str) -> None:
    lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
    assert res.returncode != 0
    assert lines and lines[0].startswith("kmemtrace:") and words in lines[0], res.stderr
    assert "Traceback" not in res.stderr and len(lines) <= 2  # the error and its tip
    assert not out.exists()


def test_non_root_fails_cleanly(tmp_path):
    out = tmp_path / "trace"
    tmp_path.chmod(0o777)
    res = subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups",
                          sys.executable, "-m", "kmemtrace", "record", "-o", str(out)],
                         capture_output=True, text=True, env=ENV, timeout=60)
    _assert_clean_failure(res, out, "root")


def _in_private_mounts(shell: str, out: Path) -> subprocess.CompletedProcess:
    """Run the CLI in a private mount namespace where ``shell`` hid something for real."""
    cmd = f"{shell} && exec {sys.executable} -m kmemtrace record -o {out} --duration 1s"
    return subprocess.run(["unshare", "--mount", "--propagation", "private", "sh", "-c", cmd],
                          capture_output=True, text=True, env=ENV, timeout=60)


def test_missing_bcc_fails_cleanly(tmp_path):
    out = tmp_path / "trace"
    res = _in_private_mounts("mount -t tmpfs none /usr/lib/python3/dist-packages/bcc", out)
    _assert_clean_failure(res, out, "BCC")


PRESSURE_WORKLOAD = """
import os, sys
memcg = next(line.split(":", 2)[2].strip() for line in open("/proc/self/cgroup")
             if ":memory:" in line)
path = sys.argv[1]
with open(path, "wb") as fh:  # page cache charged to this memcg
    fh.write(os.urandom(1 << 20) * 32)
    fh.flush()
    os.fsync(fh.fileno())
# A limit below the usage reclaims right away (mem_cgroup_resize_max): memcg reclaim,
# shrinkers included, in this memcg only.
with open(f"/sys/fs/cgroup/memory{memcg}/memory.limit_in_bytes", "w") as fh:
    fh.write(str(8 << 20))
os.unlink(path)
print(os.getpid())
"""


def test_reclaim_is_recorded_as_pressure(tmp_path):
    # Reclaim in the command's own memcg (a limit set below its page cache) must show up
    # as PRESSURE rows of that process: memcg reclaim and the shrinkers it runs.
    out = tmp_path / "trace"
    script = tmp_path / "pressure.py"
    script.write_text(PRESSURE_WORKLOAD)
    res = kmemtrace("record", "-o", str(out), "--in-memcg", "--grace", "0.5s", "--",
                    "/usr/bin/python3", str(script), str(Path("/var/tmp") / f"kmt-p-{os.getpid()}"))
    assert res.returncode == 0, res.stderr
    pid = int(res.stdout.split()[-1])
    df = open_trace(out).to_pandas([EventKind.PRESSURE])
    mine = df[df.pid == pid]
    assert set(mine.aux) >= {PressureKind.MEMCG_RECLAIM, PressureKind.SHRINK_SLAB}, df


def test_clock_starts_at_attach(tmp_path):
    # Events flow from the moment the probes attach; the start stamp must not wait for
    # the slow sysfs reads after it (over 1 s on a busy machine made a trace unreadable:
    # "clock.start_ns is more than 1 s after the first event"). Before the fix the gap
    # was 50-90 ms on this machine when idle; after it, a few ms.
    out = tmp_path / "trace"
    res = kmemtrace("record", "-o", str(out), "--duration", "1s")
    assert res.returncode == 0, res.stderr
    meta = open_trace(out).meta
    first = min(p["ts_min"] for p in meta["parts"] if p["rows"])
    assert meta["clock"]["start_ns"] - first < 40_000_000


MQUEUES = 64
MQ = """
import ctypes, os, sys
libc = ctypes.CDLL(None, use_errno=True)
libc.mq_open.argtypes = [ctypes.c_char_p, ctypes.c_int, ctypes.c_uint, ctypes.c_void_p]
names = [f"/kmt-test-{sys.argv[3]}-{i}".encode() for i in range(int(sys.argv[2]))]
attr = (ctypes.c_long * 8)(0, 1, 64)  # flags, maxmsg, msgsize: tiny, under RLIMIT_MSGQUEUE
for name in names:
    if sys.argv[1] == "open":
        fd = libc.mq_open(name, os.O_CREAT | os.O_RDWR, 0o600, attr)
        assert fd >= 0, ctypes.get_errno()
        os.close(fd)
    else:
        libc.mq_unlink(name)
"""


def test_frees_name_a_cache_that_only_frees_while_recording(tmp_path):
    # POSIX message queues made before the recording and unlinked during it: their
    # mqueue_inode_cache objects (a cache SLUB does not merge, and that nothing else uses)
    # are freed by kmem_cache_free with no allocation of that cache in the trace. The free
    # must still name its cache (it was registered only at a first allocation: frees of
    # such caches, e.g. expiring TIME_WAIT sockets, came out as "cache unknown").
    if not Path("/sys/kernel/slab/mqueue_inode_cache").is_dir():
        raise AssertionError("this kernel has no mqueue_inode_cache: no POSIX mqueues")
    script = tmp_path / "mq.py"
    script.write_text(MQ)
    tag = str(os.getpid())
    opened = subprocess.run(["/usr/bin/python3", str(script), "open", str(MQUEUES), tag])
    assert opened.returncode == 0
    out = tmp_path / "trace"
    res = kmemtrace("record", "-o", str(out), "--all-objects", "--in-memcg", "--grace", "1s",
                    "--", "/usr/bin/python3", str(script), "unlink", str(MQUEUES), tag)
    assert res.returncode == 0, res.stderr
    trace = open_trace(out)
    cid = next(c["id"] for c in trace.meta["caches"] if c["name"] == "mqueue_inode_cache")
    df = trace.to_pandas([EventKind.ALLOC, EventKind.FREE])
    mine = df[df.cache_id == cid]
    assert len(mine[mine.kind == EventKind.FREE]) >= MQUEUES
    assert not (mine.kind == EventKind.ALLOC).any()  # the cache only freed: the case


def test_the_recorders_own_start_up_leaves_no_object_live(tmp_path):
    """Every program is verified before any is attached, and the alloc handlers are attached
    after the free handlers: the verifier allocates and frees accounted kmalloc memory in
    the recorder's own process, and when alloc handlers went first, a whole-system
    recording held 95-190 such ALLOCs with no FREE, counted as FREE_UNSEEN when their
    addresses came back (ftrace saw each one freed, by free_verifier_state, do_check_common,
    krealloc). kmalloc-cg objects are freed by kfree in the task, never by an RCU callback,
    so none of the recorder's may be left live (docs/recording.md, "Frees no probe sees")."""
    out = tmp_path / "trace"
    rec = subprocess.Popen([sys.executable, "-m", "kmemtrace", "record", "-o", str(out),
                            "--duration", "2s"], stderr=subprocess.PIPE, text=True, env=ENV)
    err = rec.communicate(timeout=180)[1]
    assert rec.returncode == 0, err
    trace = open_trace(out)
    df = trace.to_pandas(kinds=[EventKind.ALLOC, EventKind.FREE])
    kmalloc_cg = [c["id"] for c in trace.caches if c["name"].startswith("kmalloc-cg-")]
    df = df.sort_values(["ptr", "ts_ns"], kind="stable")
    again = ((df.kind.to_numpy()[1:] == EventKind.ALLOC)
             & (df.kind.to_numpy()[:-1] == EventKind.ALLOC)
             & (df.ptr.to_numpy()[1:] == df.ptr.to_numpy()[:-1]))
    left = df.iloc[:-1][again]
    ours = left[(left.pid == rec.pid) & left.cache_id.isin(kmalloc_cg)]
    assert len(ours) == 0, ours
    assert (df[df.pid == rec.pid].kind == EventKind.ALLOC).sum() > 0  # it did allocate


@pytest.mark.parametrize("shrink", [False, True])
def test_shrink_at_start_frees_what_the_cpus_parked_before_the_first_sample(tmp_path, shrink):
    """``dnotify_struct`` filled to 20 slabs from CPU 0 and emptied: the kernel keeps 7
    empty slabs (5 on the node list, 2 on CPU 0) that ``objects`` reads as 256 live
    (analyses/which_way/parking.py). The first sample sees them all without
    ``--shrink-at-start``, and with it none: the cache was shrunk right before its row was
    read, so its ``objects`` are the live ones, which the replay's start takes."""
    _, after = parking.workload(2560)
    assert after["slabs"] >= 7 and after["objects_partial"] == 0
    out = tmp_path / "t"
    res = kmemtrace("record", "-o", str(out), "--duration", "2s",
                    *(["--shrink-at-start"] if shrink else []))
    assert res.returncode == 0, res.stderr[-2000:]
    trace = open_trace(out)
    caches = trace.meta["caches"]
    cid = next(c["id"] for c in caches if c["name"] == parking.CACHE)
    df = trace.to_pandas([EventKind.SLAB_SAMPLE])
    first = df[df.cache_id == cid].sort_values("ts_ns").iloc[0]
    assert first.gfp == SAMPLE_HAS_CPU_FIELDS
    shrunk = trace.meta["record"]["shrunk_at_start"]
    if shrink:
        assert (first.aux, first.aux2, first.bytes) == (0, 0, 0)  # slabs, objects, cpu_slabs
        assert len(caches) - 5 <= shrunk <= len(caches)
    else:
        assert first.aux >= 7 and first.aux2 >= 256 and shrunk is None
