"""The recording loop: compile and attach the BPF program, drain, convert, hand to the writer.

The BPF side hands over three streams: compact slab records (bulk-drained, see
:mod:`kmemtrace.record.ring`), rare cgroup records with paths (BCC's per-record
callback is fine at that rate) and compact page-cache records (bulk-drained like slab ones:
reading files makes them by the hundred thousand per second). This module turns them into
trace columns, keeps ``meta["caches"]``/``meta["memcgs"]`` up to date as new caches and
memcgs appear, samples ``/sys/kernel/slab`` periodically and, at the end, writes the
per-CPU loss counters. Writing happens on the other side of a bounded queue
(:mod:`kmemtrace.record.pipeline`), so sealing a part never pauses the draining.
"""

import contextlib
import ctypes
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from kmemtrace.errors import KernelSupportError, PermissionNeeded, UsageError
from kmemtrace.record import bccload, decode, headers, probes, runtime, sysfs
from kmemtrace.record.btf import STRUCT
from kmemtrace.record.events import CG_EVENT_DTYPE, EVENT_DTYPE, PC_EVENT_DTYPE, K
from kmemtrace.record.output import check_output
from kmemtrace.record.pipeline import NoWriter, WriterThread
from kmemtrace.record.sampler import SlabSampler
from kmemtrace.trace.meta import new_meta
from kmemtrace.trace.schema import (
    SAMPLE_COLUMNS,
    EventKind,
    LostReason,
    OfflineSource,
    empty_columns,
)
from kmemtrace.trace.writer import TraceWriter

BPF_SOURCE = probes.BPF_DIR / "kmemtrace.bpf.c"
RING_PAGES = 8192  # 32 MiB: ~0.5 s of the heaviest stream measured here
SINGLES_PAGES = 1024  # 4 MiB of events that could not be staged (nested, rare, bulk frees)
# A staged batch is handed over by the first event that finds it this old, and user space
# hands over whatever is this old every BATCH_FLUSH_INTERVAL_S on every CPU (idle CPUs).
# The flush costs an IPI per CPU: ~40 us of the drain thread's CPU each on this VM.
BATCH_AGE_NS = 20_000_000
BATCH_FLUSH_INTERVAL_S = 0.1
# Events of a quiet CPU reach user space up to ~BATCH_FLUSH_INTERVAL_S + a drain late: the
# writer keeps this much back to sort them in (its default is 50 ms).
REORDER_WINDOW_NS = 250_000_000
PERF_PAGES = 1024  # per CPU, fallback transport only
# The life-cycle ring: 8 MiB hold ~28 000 cgroup records (296 B + 8 B header), over 1 s of
# 10 000 memcg creations+removals per second (MKDIR, ATTACH, OFFLINE, RELEASE: ~2.5 records
# per creation or removal) should the drain loop stall that long.
CTL_RING_PAGES = 2048
CTL_PERF_PAGES = 256  # per CPU, fallback transport only
# Page-cache records (32 B + 8 B header): 8 MiB hold ~200 000, 0.4 s of reading uncached
# files at 2 GB/s in 4 KiB folios, should the drain loop stall that long.
PC_RING_PAGES = 2048
PC_PERF_PAGES = 256  # per CPU, fallback transport only
# Folios followed from insertion to removal: 2^18 (1 GiB of 4 KiB folios charged to non-root
# memcgs cached at once during the recording; ~20 MiB of map). Beyond: LOST PAGE_CACHE.
PC_MAX = 1 << 18
SUBTREE_MAX = 1 << 16  # recorded memcgs alive at once (each leaves at its last event)
FOLLOW_MAX = 1 << 16  # followed threads alive at once (each leaves at exit)
LIVE_MAX = 1 << 20  # live accounted objects tracked for free filtering
PRESSURE_GAP_NS = 10_000_000  # at most one PRESSURE row per kind, CPU and 10 ms
MAX_CACHES = 4096
DRAIN_INTERVAL_S = 0.02  # the ring holds ~0.4 s of 2 M events/s; each poll costs ~0.1 ms
FLUSH_INTERVAL_S = 10.0
DEFAULT_GFP_ACCOUNT_BIT = 22  # used only if BTF lacks ___GFP_ACCOUNT_BIT
LEGACY_SLAB_ACCOUNT = 0x04000000  # SLAB_ACCOUNT in v4.5-v6.7 include/linux/slab.h


# Free handlers with a twin program for frees nested in them (bpf/kmemtrace.bpf.c, KMT_TWIN):
# handler -> its slot in the BPF `rescued` array.
TWINS = {"kmt_cache_free": K["KMT_TP_CACHE_FREE"], "kmt_kfree": K["KMT_TP_KFREE"]}
TWIN_SUFFIX = "_nested"
# Handlers that put objects into the live map: attached after every free handler.
ALLOC_HANDLERS = {"kmt_cache_alloc", "kmt_kmalloc"}


def recursion_misses(prog_fd: int) -> int:
    """How often the kernel skipped this BPF program because it was already running on the
    CPU (``recursion_misses`` in the program fd's fdinfo, 5.12+; 0 where not reported)."""
    with open(f"/proc/self/fdinfo/{prog_fd}") as fh:
        for line in fh:
            if line.startswith("recursion_misses:"):
                return int(line.split()[1])
    return 0


RECORDER_NICE = -10


def raise_priority() -> None:
    """Run the recorder at nice -10: a workload that keeps every CPU busy must not starve the
    drain and the writer (measured: with both CPUs busy at nice 0 the ring and the writer
    queue overflowed, 39 % of events LOST). Their CPU time then shows up as the workload's
    slowdown, where benchmarks/record_overhead.py measures it. Linux nice values are per
    thread and inherited by new threads and children (``--in-memcg`` resets its command's)."""
    os.setpriority(os.PRIO_PROCESS, 0, RECORDER_NICE)


def now_ns() -> int:
    """CLOCK_MONOTONIC, the clock of bpf_ktime_get_ns()."""
    return time.clock_gettime_ns(time.CLOCK_MONOTONIC)


@dataclass
class RecordOptions:
    output: Path | None  # None: no trace is written (``top`` without --record-to)
    all_objects: bool = False
    cgroup: str | None = None  # memcg subtree path, relative to the memory hierarchy
    transport: str = "auto"  # auto | ringbuf | perf
    sample_interval_s: float = 1.0
    command: list[str] | None = None
    in_memcg: bool = False  # the subtree filter then follows the fresh memcg
    follow_tasks: bool = False  # the subtree follows its tasks into memcgs made elsewhere
    lifecycle: str = "auto"  # auto | kprobe | fentry: how lifecycle events are caught
    force: bool = False  # replace the trace already in ``output``
    page_cache: bool = True  # PAGE_CACHE rows, where the kernel has the probes
    shrink_at_start: bool = False  # shrink every cache right before its first sample


def require_root() -> None:
    if os.geteuid() != 0:
        raise PermissionNeeded(
            "recording needs root (loading BPF programs and writing cgroups)",
            tip="run it as: sudo kmemtrace record ...",
        )


def cflags(feats: probes.KernelFeatures, opts: RecordOptions, use_perf: bool,
           rows: list[probes.Probe]) -> list[str]:
    """Everything kernel-specific the BPF C needs, as -D macros (offsets from BTF).

    Self-attaching handlers (tracepoints of a patched kernel, fentry) are compiled only
    when the plan picked them: BCC would otherwise try to attach them on any kernel.
    """
    btf = feats.btf
    if btf is None:
        raise KernelSupportError("no kernel BTF: struct offsets unknown",
                                 tip="use a kernel with CONFIG_DEBUG_INFO_BTF=y")
    try:
        offs = {
            "KMT_OFF_CACHE_NAME": btf.offset("kmem_cache", "name"),
            "KMT_OFF_CACHE_SIZE": btf.offset("kmem_cache", "size"),
            "KMT_OFF_CACHE_FLAGS": btf.offset("kmem_cache", "flags"),
            "KMT_OFF_CACHE_OO": btf.offset("kmem_cache", "oo"),
            "KMT_OFF_CACHE_OBJECT_SIZE": btf.offset("kmem_cache", "object_size"),
            "KMT_OFF_TASK_CGROUPS": btf.offset("task_struct", "cgroups"),
            "KMT_OFF_TASK_TGID": btf.offset("task_struct", "tgid"),
            "KMT_OFF_CSSSET_SUBSYS": btf.offset("css_set", "subsys"),
            "KMT_OFF_CSS_CGROUP": btf.offset("cgroup_subsys_state", "cgroup"),
            "KMT_OFF_CGROUP_KN": btf.offset("cgroup", "kn"),
            "KMT_OFF_KN_ID": btf.offset("kernfs_node", "id"),
            "KMT_OFF_CGROUP_ROOT": btf.offset("cgroup", "root"),
            "KMT_OFF_CGROUP_LEVEL": btf.offset("cgroup", "level"),
            "KMT_OFF_CGROUP_SELF": btf.offset("cgroup", "self"),
            "KMT_OFF_CSS_PARENT": btf.offset("cgroup_subsys_state", "parent"),
            "KMT_OFF_ROOT_HIERARCHY_ID": btf.offset("cgroup_root", "hierarchy_id"),
        }
    except KeyError as exc:
        raise KernelSupportError(f"kernel BTF lacks a field the recorder reads: {exc}") from None
    memory_id = btf.enum_value("memory_cgrp_id")
    if memory_id is None:
        raise KernelSupportError("kernel BTF has no memory_cgrp_id: memcg not built in")
    gfp_bit = btf.enum_value("___GFP_ACCOUNT_BIT")
    slab_account_bit = btf.enum_value("_SLAB_ACCOUNT")
    # Before 6.8 slab flags are #defines, invisible in BTF; SLAB_ACCOUNT was 0x04000000 from
    # its introduction (4.5) on. Without it dentries and inodes (SLAB_ACCOUNT caches, no
    # __GFP_ACCOUNT) would be dropped as unaccounted: measured on 6.1 in the VM lab.
    slab_account = LEGACY_SLAB_ACCOUNT if slab_account_bit is None else 1 << slab_account_bit
    flags = [f"-I{probes.BPF_DIR}"] + [f"-D{k}={v}" for k, v in offs.items()] + [
        f"-DKMT_MEMORY_CGRP_ID={memory_id}",
        f"-DKMT_GFP_ACCOUNT={1 << (DEFAULT_GFP_ACCOUNT_BIT if gfp_bit is None else gfp_bit)}u",
        f"-DKMT_SLAB_ACCOUNT={slab_account}u",
        f"-DKMT_MEMCG_ROOT={feats.memcg_hierarchy}",
        f"-DKMT_RING_PAGES={RING_PAGES}",
        f"-DKMT_SINGLES_PAGES={SINGLES_PAGES}",
        f"-DKMT_BATCH_AGE_NS={BATCH_AGE_NS}ull",
        f"-DKMT_CTL_PAGES={CTL_RING_PAGES}",
        f"-DKMT_LIVE_MAX={LIVE_MAX}",
        f"-DKMT_MAX_CACHES={MAX_CACHES}",
    ]
    flags += context_flags(btf)
    task_btf = btf.enum_value("BPF_FUNC_get_current_task_btf")  # 5.11+
    if task_btf is not None:
        flags.append(f"-DKMT_TASK_BTF={task_btf}")
    if feats.cgroup == "v2":
        flags.append("-DKMT_CGROUP_V2")
    if opts.all_objects:
        flags.append("-DKMT_ALL_OBJECTS")
    if opts.cgroup is not None or opts.in_memcg:
        flags += ["-DKMT_FILTER_CGROUP", f"-DKMT_SUBTREE_MAX={SUBTREE_MAX}",
                  f"-DKMT_FOLLOW_MAX={FOLLOW_MAX}"]
        if opts.follow_tasks:
            missing = [tp for tp in probes.FOLLOW_TPS if not probes.tracefs_has(feats, tp)]
            if missing:
                raise KernelSupportError(f"--follow-tasks needs {', '.join(missing)}")
            flags.append("-DKMT_FOLLOW_TASKS")
    if probes.lifecycle_row(rows, "mem_cgroup_css_free") is not None:
        flags.append("-DKMT_MEMCG_FREE_PROBE")  # a memcg's last event is its css free
    if use_perf:
        flags.append("-DKMT_PERF")
    for event in probes.CGROUP_TPS:
        if (feats.tracefs / "events" / "cgroup" / event).is_dir():
            flags.append(f"-DKMT_TP_{event.upper()}")
    if probes.has_vmscan(feats):
        flags += ["-DKMT_TP_VMSCAN", f"-DKMT_PRESSURE_GAP_NS={PRESSURE_GAP_NS}ull"]
    if probes.page_cache_attached(rows):
        offs = probes.page_cache_offsets(btf)
        flags += ["-DKMT_PAGE_CACHE", f"-DKMT_PC_PAGES={PC_RING_PAGES}", f"-DKMT_PC_MAX={PC_MAX}"]
        flags += [f"-D{k}={v}" for k, v in offs.items()
                  if not any(f.startswith(f"-D{k}=") for f in flags)]
    flags += [f"-D{r.macro}" for r in rows if r.macro and r.status == "attached"]
    return flags


def context_flags(btf) -> list[str]:
    """-D macros of the event-context reader and of remote charging, or none of them.

    The preempt count is a per-CPU variable: ``__preempt_count``, or the ``preempt_count``
    member of ``pcpu_hot`` (x86 6.2-6.14). The BPF side finds this CPU's per-CPU area from its
    runqueue (``current->se.cfs_rq->rq``, group scheduling only), so every piece must be in
    BTF; if one is missing every event's context is recorded as unknown (docs/recording.md).
    """
    def off(struct: str, field: str) -> int | None:
        return btf.offset(struct, field) if btf.has_member(struct, field) else None

    preempt = btf.percpu_offset("__preempt_count")
    if preempt is None and btf.percpu_offset("pcpu_hot") is not None:
        member = off("pcpu_hot", "preempt_count")
        preempt = None if member is None else btf.percpu_offset("pcpu_hot") + member
    task_se, se_cfs = off("task_struct", "se"), off("sched_entity", "cfs_rq")
    found = {
        "KMT_PCPU_PREEMPT_COUNT": preempt,
        "KMT_PCPU_RUNQUEUES": btf.percpu_offset("runqueues"),
        "KMT_OFF_TASK_CFS_RQ": None if None in (task_se, se_cfs) else task_se + se_cfs,
        "KMT_OFF_CFS_RQ_RQ": off("cfs_rq", "rq"),
        "KMT_OFF_RQ_CPU": off("rq", "cpu"),
    }
    if None in found.values():
        return []
    remote = {
        "KMT_OFF_TASK_ACTIVE_MEMCG": off("task_struct", "active_memcg"),
        "KMT_PCPU_INT_ACTIVE_MEMCG": btf.percpu_offset("int_active_memcg"),
        "KMT_OFF_MEMCG_CSS": off("mem_cgroup", "css"),
    }
    if None not in remote.values():
        found.update(remote)
    return [f"-D{k}={v}" for k, v in found.items()]


def has_ringbuf(feats: probes.KernelFeatures) -> bool:
    """BPF ring buffers exist when the kernel has the map's helper (5.8+)."""
    return feats.btf is not None and feats.btf.find(STRUCT, "bpf_ringbuf") is not None


class Recorder:
    """One recording session; ``start()``, then ``run()`` as often as needed, ``stop()``."""

    def __init__(self, opts: RecordOptions, feats: probes.KernelFeatures, header_note: str):
        self.opts = opts
        self.feats = feats
        self.header_note = header_note
        self.bcc = bccload.load_bcc()
        probes.check_fentry(self.bcc, feats)
        self.plan = probes.plan(feats, opts.lifecycle)
        if not opts.page_cache:
            probes.leave_out_page_cache(self.plan)
        self.use_perf = opts.transport == "perf" or (
            opts.transport == "auto" and not has_ringbuf(feats))
        if opts.transport == "ringbuf" and not has_ringbuf(feats):
            raise KernelSupportError("this kernel has no BPF ring buffer; use --transport perf")
        self.cflags = cflags(feats, opts, self.use_perf, self.plan)
        # the twins need the context reader (bpf/kmemtrace.bpf.c, KMT_TWIN)
        self.twins = any(f.startswith("-DKMT_PCPU_PREEMPT_COUNT=") for f in self.cflags)
        self.page_cache = "-DKMT_PAGE_CACHE" in self.cflags
        self.pc_ring = None
        self.stop_requested = False
        self.seq = 0
        self.events = 0
        self.offline_source: OfflineSource | None = None  # None: cgroup_rmdir stands in
        self.memcg_free_probe = False  # else cgroup:cgroup_release marks MEMCG_RELEASE
        self.subtree_path: str | None = None
        self.flusher = None  # hands over the CPUs' staged batches (ring-buffer transport)
        self._cg_rows: list[tuple] = []
        # Called with every batch of trace columns, before it is queued for the writer:
        # `kmemtrace top` builds its view from the same rows a trace would hold.
        self.taps: list[Callable[[dict[str, np.ndarray]], None]] = []
        self._chunks = decode.ChunkPool()  # what slab spans are decoded into, reused
        self._ramp = np.arange(0, dtype=np.int64)  # 0, 1, 2...: seq without a fresh arange

    # --- set-up ---------------------------------------------------------------------------

    def start(self) -> None:
        """Compile, attach, open the trace. Nothing is written before this succeeds."""
        alloc = next(r for r in self.plan if r.probe == "kmem:kmem_cache_alloc")
        if alloc.status != "attached":
            raise KernelSupportError(f"cannot trace kmem:kmem_cache_alloc: {alloc.why}")
        try:
            self.bpf = self.bcc.BPF(src_file=str(BPF_SOURCE), cflags=self.cflags)
        except Exception as exc:  # BCC raises bare Exception on compile/load failure
            raise KernelSupportError(f"BPF program failed to compile or load: {exc}",
                                     tip="run `kmemtrace doctor`") from None
        self._attach()
        # The clock starts at attach: reading sysfs below takes over a second on a busy
        # machine, and events from then on are already in the ring.
        self.start_ns = now_ns()
        self._open_transports()
        self.caches = sysfs.read_caches()
        self.by_name = sysfs.name_index(self.caches)
        self.kmalloc_ids = decode.KmallocIds(
            {prefix: sysfs.kmalloc_sizes(self.caches, prefix) for prefix in decode.FAMILIES})
        self.xlate = np.full(1, -1, np.int32)
        self.memcgs = sysfs.memcg_tree(self.feats.memcg_root)
        self.memcg_by_path = {m["path"]: m for m in self.memcgs}
        if self.opts.cgroup is not None:
            self.set_subtree(self.opts.cgroup)
        meta = new_meta("record", command=self.opts.command)
        meta["kernel"] = self.feats.meta()
        meta["attach_plan"] = probes.plan_meta(self.plan)
        meta["caches"] = self.caches
        meta["memcgs"] = self.memcgs
        meta["record"] = {"all_objects": self.opts.all_objects, "cgroup": self.opts.cgroup,
                          "transport": "perf" if self.use_perf else "ringbuf",
                          "lifecycle": self.opts.lifecycle,
                          "follow_tasks": self.opts.follow_tasks,
                          # which memcgs' life-cycle rows the trace holds
                          "lifecycle_scope": ("subtree" if self.opts.cgroup is not None
                                              or self.opts.in_memcg else "all"),
                          # PAGE_CACHE rows: folios inserted during the recording, followed
                          # to their removal (docs/trace-format.md)
                          "page_cache": self.page_cache,
                          # --shrink-at-start: the caches shrunk before their first sample
                          "shrunk_at_start": 0 if self.opts.shrink_at_start else None,
                          "headers": self.header_note, "cflags": self.cflags,
                          "nested_rescued": 0, "recursion_misses": {}}
        meta["clock"]["start_ns"] = self.start_ns
        raise_priority()  # before the writer thread exists: it inherits the nice value
        if self.opts.output is None:
            self.writer = None
            self.pipeline = NoWriter(meta)
        else:
            self.writer = TraceWriter(self.opts.output, meta, overwrite=self.opts.force,
                                      reorder_window_ns=REORDER_WINDOW_NS)
            self.pipeline = WriterThread(self.writer)
        runtime.settle()
        self.sampler = SlabSampler(self.caches, self.opts.sample_interval_s,
                                   self.opts.shrink_at_start)
        self._samples_written = False
        self._next_batch_flush = 0.0
        self._next_flush = time.monotonic() + FLUSH_INTERVAL_S

    def _attach(self) -> None:
        """Load (verify) every program first, then attach the alloc handlers last.

        The verifier allocates and frees accounted memory for each program it checks, and
        an ALLOC recorded before the programs for its FREE were attached stays live in the
        trace for ever (LOST FREE_UNSEEN when its address comes back): a whole-system
        recording counted ~100-250 such ALLOCs of its own verifier at start-up.
        """
        rows = [row for row in self.plan if row.status == "attached"
                and row.type not in ("tracepoint", "fentry")]  # those attach themselves
        for row in rows:
            try:
                self._load(row)
            except Exception as exc:  # BCC: bare Exception
                row.status, row.why = "missing", f"load failed: {exc}"
        for row in sorted(rows, key=lambda r: r.fn in ALLOC_HANDLERS):
            if row.status != "attached":
                continue
            try:
                if row.type == "raw_tracepoint":
                    tp = row.probe.split(":")[1]
                    self.bpf.attach_raw_tracepoint(tp=tp, fn_name=row.fn)
                    if row.fn in TWINS and self.twins:
                        self._attach_twin(tp, row.fn + TWIN_SUFFIX)
                elif row.type == "kprobe":
                    self.bpf.attach_kprobe(event=row.probe, fn_name=row.fn)
                else:
                    self.bpf.attach_kretprobe(event=row.probe, fn_name=row.fn)
            except Exception as exc:  # BCC: bare Exception
                row.status, row.why = "missing", f"attach failed: {exc}"
        offline = probes.lifecycle_row(self.plan, "mem_cgroup_css_offline")
        if offline is not None:
            self.offline_source = (OfflineSource.TRACEPOINT if offline.type == "tracepoint"
                                   else OfflineSource.KPROBE)
        self.memcg_free_probe = probes.lifecycle_row(self.plan, "mem_cgroup_css_free") is not None
        for row in self.plan:
            if row.probe == "kmem:kmem_cache_alloc" and row.status != "attached":
                raise KernelSupportError(f"kmem:kmem_cache_alloc did not attach: {row.why}")

    def _load(self, row: probes.Probe) -> None:
        """Verify a row's program (and its twin); BCC's attach calls then reuse the load."""
        BPF = self.bcc.BPF
        kind = BPF.RAW_TRACEPOINT if row.type == "raw_tracepoint" else BPF.KPROBE
        self.bpf.load_func(row.fn.encode(), kind)
        if row.fn in TWINS and self.twins:
            self.bpf.load_func((row.fn + TWIN_SUFFIX).encode(), kind)

    def _attach_twin(self, tp: str, fn_name: str) -> None:
        """A second program on raw tracepoint ``tp``. BCC's attach_raw_tracepoint allows one
        per tracepoint, so attach through libbcc and file the link under a distinct key,
        which BCC's cleanup() closes like its own."""
        fn = self.bpf.load_func(fn_name.encode(), self.bcc.BPF.RAW_TRACEPOINT)
        fd = self.bcc.lib.bpf_attach_raw_tracepoint(fn.fd, tp.encode())
        if fd < 0:
            raise KernelSupportError(f"cannot attach {fn_name} to raw tracepoint {tp}")
        self.bpf.raw_tracepoint_fds[f"{tp}{TWIN_SUFFIX}".encode()] = fd

    def _open_transports(self) -> None:
        from kmemtrace.record.ring import BatchedRing, CpuFlusher, MmapRing, PerfTransport

        if self.use_perf:
            self.ring = PerfTransport(self.bpf["events"], EVENT_DTYPE, PERF_PAGES)
            self.ctl_perf_lost: dict[int, int] = {}

            def on_ctl_lost(*args):  # BCC passes (count) or (cpu, count)
                cpu = args[0] if len(args) > 1 else 0
                self.ctl_perf_lost[cpu] = self.ctl_perf_lost.get(cpu, 0) + args[-1]

            self.bpf["ctl"].open_perf_buffer(self._on_cg, page_cnt=CTL_PERF_PAGES,
                                             lost_cb=on_ctl_lost)
            if self.page_cache:
                self.pc_ring = PerfTransport(self.bpf["pcache"], PC_EVENT_DTYPE, PC_PERF_PAGES)
        else:
            page = os.sysconf("SC_PAGESIZE")
            self.ring = BatchedRing(self.bpf["events"].map_fd, RING_PAGES * page,
                                    self.bpf["singles"].map_fd, SINGLES_PAGES * page)
            flush = self.bpf.load_func(b"kmt_flush", self.bcc.BPF.RAW_TRACEPOINT)
            self.flusher = CpuFlusher(flush.fd)
            self.flusher.flush()  # fails here, before anything is written, if it cannot run
            self.bpf["ctl"].open_ring_buffer(self._on_cg)
            if self.page_cache:
                self.pc_ring = MmapRing(self.bpf["pcache"].map_fd, PC_RING_PAGES * page,
                                        PC_EVENT_DTYPE)

    def set_subtree(self, path: str) -> None:
        """Record only tasks in the memcg at ``path`` and its descendants."""
        path = "/" + path.strip("/") if path.strip("/") else "/"
        if path not in self.memcg_by_path:
            raise UsageError(f"--cgroup {path}: no such memcg under {self.feats.memcg_root}")
        self.subtree_path = path
        table = self.bpf["subtree"]
        for m in self.memcgs:
            if self._in_subtree(m["path"]):
                table[table.Key(m["id"])] = table.Leaf(1)
                if self.opts.follow_tasks:
                    self._follow_members(m["path"])

    def _follow_members(self, path: str) -> None:
        """Follow the threads already in memcg ``path`` (later ones arrive by fork/attach)."""
        folder = self.feats.memcg_root / path.lstrip("/")
        listing = folder / ("tasks" if self.feats.cgroup == "v1" else "cgroup.threads")
        try:
            tids = [int(t) for t in listing.read_text().split()]
        except OSError:
            return  # removed meanwhile: nothing to follow
        table = self.bpf["followed"]
        for tid in tids:
            table[table.Key(tid)] = table.Leaf(1)

    @contextlib.contextmanager
    def creating_memcg(self):
        """While inside, memcgs this thread creates join the subtree in the kernel, at mkdir.

        The recorder's own --in-memcg memcg is then in the trace from its MKDIR on, like any
        memcg a followed task creates.
        """
        table = self.bpf["followed"]
        key = table.Key(threading.get_native_id())  # the kernel's thread id
        table[key] = table.Leaf(1)
        try:
            yield
        finally:
            with contextlib.suppress(KeyError):
                del table[key]

    def _in_subtree(self, path: str) -> bool:
        sub = self.subtree_path
        return sub == "/" or path == sub or path.startswith(sub + "/")

    def add_memcg(self, memcg_id: int, path: str, level: int, parent: int | None = None) -> None:
        """Register a memcg in meta (from a MKDIR event, or one we just created ourselves).

        Subtree membership is not decided here: the kernel side did it at mkdir.
        """
        if path in self.memcg_by_path and self.memcg_by_path[path]["id"] == memcg_id:
            return
        if parent is None:
            parent_path = path.rsplit("/", 1)[0] or "/"
            parent = self.memcg_by_path.get(parent_path, {}).get("id", 0)
        entry = {"id": memcg_id, "parent": parent, "path": path, "level": level}
        self.memcgs.append(entry)
        self.memcg_by_path[path] = entry

    # --- the loop -------------------------------------------------------------------------

    def run(self, until, tick=None, tick_interval_s: float = 0.5) -> None:
        """Drain and write until ``until()`` is true or a stop was requested.

        ``tick()`` (live progress) is called every ``tick_interval_s``.
        """
        next_tick = time.monotonic()
        while not self.stopping and not until():
            self.poll()
            if tick is not None and time.monotonic() >= next_tick:
                tick()
                next_tick = time.monotonic() + tick_interval_s
            time.sleep(DRAIN_INTERVAL_S)
        self.poll()

    @property
    def stopping(self) -> bool:
        """A stop was requested (signal) or the writer failed (e.g. the disk is full)."""
        return self.stop_requested or self.pipeline.failed

    def poll(self) -> None:
        if self.use_perf:
            self.bpf.perf_buffer_poll(timeout=0)
        else:
            self.bpf.ring_buffer_consume()
        self._write_cg_rows()
        mono = time.monotonic()
        if self.flusher is not None and mono >= self._next_batch_flush:
            self.flusher.flush(BATCH_AGE_NS)
            self._next_batch_flush = mono + BATCH_FLUSH_INTERVAL_S
        if self.pc_ring is not None:
            pcs = self.pc_ring.drain()
            if len(pcs):
                self._write_page_cache(pcs)
        decoded = self.ring.drain_with(self._decode)
        if decoded is not None:
            self._append(*decoded)
        for rows in self.sampler.take():
            if not self._samples_written:  # the first round: each CPU's partial slabs then
                for c in self.caches:
                    if c["id"] in self.sampler.start_split:
                        c["cpu_partial_start"] = self.sampler.start_split[c["id"]]
                if self.sampler.shrunk is not None:
                    shrunk = set(self.sampler.shrunk)
                    for c in self.caches:
                        if c["id"] in shrunk:
                            c["shrunk_at_start"] = True
                    self.pipeline.meta["record"]["shrunk_at_start"] = len(shrunk)
                self._samples_written = True
            self._write_samples(rows)
        mono = time.monotonic()
        if mono >= self._next_flush:
            self.pipeline.flush()
            self._next_flush = mono + FLUSH_INTERVAL_S

    def _on_cg(self, *args) -> None:
        """BCC callback for cgroup records: (ctx, data, size) or (cpu, data, size)."""
        data = args[-2]  # perf pads the sample: read exactly one record
        ev = np.frombuffer(ctypes.string_at(data, CG_EVENT_DTYPE.itemsize), CG_EVENT_DTYPE)[0]
        kind, mid, level = int(ev["kind"]), int(ev["id"]), int(ev["level"])
        path = ev["path"].split(b"\0")[0].decode(errors="replace") or "/"
        ts, cpu, pid = int(ev["ts_ns"]), int(ev["cpu"]), int(ev["pid"])
        if kind == K["KMT_CG_MKDIR"]:
            parent = int(ev["parent"])
            self.add_memcg(mid, path, level, parent)
            self._cg_rows.append((ts, cpu, EventKind.MEMCG_MKDIR, mid, pid, parent, level))
        elif kind == K["KMT_CG_RMDIR"] and self.offline_source is None:
            self._cg_rows.append((ts, cpu, EventKind.MEMCG_OFFLINE, mid, 0,
                                  OfflineSource.CGROUP_RMDIR, 0))
        elif kind == K["KMT_CG_OFFLINE"]:
            self._cg_rows.append((ts, cpu, EventKind.MEMCG_OFFLINE, mid, 0,
                                  self.offline_source, 0))
        elif kind == K["KMT_CG_FREE"] or (kind == K["KMT_CG_RELEASE"]
                                          and not self.memcg_free_probe):
            self._cg_rows.append((ts, cpu, EventKind.MEMCG_RELEASE, mid, 0, 0, 0))
        elif kind == K["KMT_CG_ATTACH"]:
            self._cg_rows.append((ts, cpu, EventKind.ATTACH, mid, pid, 0, 0))
        elif kind == K["KMT_CG_PRESSURE"]:
            self._cg_rows.append((ts, cpu, EventKind.PRESSURE, mid, pid, level, 0))

    def _write_cg_rows(self) -> None:
        if not self._cg_rows:
            return
        rows, self._cg_rows = self._cg_rows, []
        cols = empty_columns(len(rows))
        for name, values in zip(("ts_ns", "cpu", "kind", "memcg_id", "pid", "aux", "aux2"),
                                zip(*rows, strict=True), strict=True):
            cols[name][:] = values
        self._append(cols)

    def _write_page_cache(self, recs: np.ndarray) -> None:
        cols = empty_columns(len(recs))
        cols["ts_ns"] = recs["ts_ns"].astype(np.int64)
        cols["cpu"] = recs["cpu"].astype(np.int32)
        cols["kind"][:] = EventKind.PAGE_CACHE
        cols["ptr"] = recs["folio"]
        cols["memcg_id"] = recs["memcg_id"]
        cols["aux"] = recs["pages"].astype(np.int64)
        self._append(cols)

    def _append(self, cols: dict[str, np.ndarray], chunk: decode.ColumnChunk | None = None) -> None:
        """Number the rows and queue them; ``chunk``: the pooled arrays they are views of
        (their ``seq`` is written in place, and the writer hands the chunk back)."""
        n = len(cols["ts_ns"])
        if chunk is None:
            cols["seq"] = np.arange(self.seq, self.seq + n, dtype=np.int64)
        else:
            if len(self._ramp) < n:
                self._ramp = np.arange(max(n, 2 * len(self._ramp)), dtype=np.int64)
            cols["seq"] = np.add(self._ramp[:n], self.seq, out=chunk.arrays["seq"][:n])
        self.seq += n
        for tap in self.taps:
            tap(cols)
        self.pipeline.put(cols, None if chunk is None else chunk.release)

    def _decode(self, pieces: list[np.ndarray]) -> tuple[dict[str, np.ndarray],
                                                          decode.ColumnChunk | None]:
        """Columns of a poll's slab records (views of the ring: decoding is their only copy),
        one piece after the other into one chunk, and the pool's chunk they live in. Taps
        may keep the arrays they are given (the live what-if queues them for its worker):
        with taps, every poll gets fresh arrays."""
        n = sum(p.size for p in pieces)
        self.events += n
        top = max(int(p["cache_idx"].max(initial=0)) for p in pieces)
        if top >= len(self.xlate):
            self._refresh_caches(top)
        pooled = None if self.taps else self._chunks.take(n)
        chunk = pooled or decode.ColumnChunk(n)
        offset = 0
        for recs in pieces:
            decode.columns(recs, self.xlate, self.kmalloc_ids, chunk, offset)
            offset += recs.size
        return chunk.columns(n), pooled

    def _refresh_caches(self, top: int) -> None:
        """Map BPF cache indices up to ``top`` to meta cache ids, adding caches created since
        start. The indices come from ``cache_by_idx``, which the BPF side never empties: a
        cache created and destroyed before this runs (a module loaded and unloaded while the
        drain was busy) is still named, from the geometry BPF read at its first sight."""
        table = self.bpf["cache_by_idx"]
        slab_account = next((int(f.split("=")[1].rstrip("u")) for f in self.cflags
                             if f.startswith("-DKMT_SLAB_ACCOUNT=")), 0)
        xlate = np.full(top + 1, -1, np.int32)
        xlate[: len(self.xlate)] = self.xlate
        for idx in range(len(self.xlate), min(top + 1, len(table))):
            entry = table[table.Key(idx)]
            if not entry.idx:
                continue  # a slot a racing CPU claimed and never filled: no record uses it
            name = entry.name.decode(errors="replace")
            cid = self.by_name.get(name)
            if cid is None and len(name) == K["KMT_CACHE_NAME_LEN"] - 1:  # truncated in BPF
                cid = next((c for n, c in self.by_name.items() if n.startswith(name)), None)
            if cid is None:
                cid = self._discover_cache(name)
            if cid is None:
                cid = self._add_gone_cache(name, entry)
            if cid is None:
                continue
            cache = self.caches[cid]
            if cache["sysfs"].startswith(":"):
                cache["name"] = name  # the kernel's own name for the merged cache
            if slab_account:
                cache["accounted"] = bool(entry.flags & slab_account)
            xlate[idx] = cid
        self.xlate = xlate

    def _add_gone_cache(self, name: str, entry) -> int | None:
        """A cache already gone from /sys/kernel/slab: its geometry as BPF read it (None
        if those reads failed: the records then keep cache id -1)."""
        if not (entry.oo & 0xFFFF and entry.size):
            return None
        cid = len(self.caches)
        self.caches.append({
            "id": cid, "name": name, "sysfs": name, "object_size": int(entry.object_size),
            "size": int(entry.size), "objs_per_slab": int(entry.oo & 0xFFFF),
            "order": int(entry.oo >> 16), "min_partial": None, "cpu_partial": None,
            "aliases": [], "accounted": False})
        self.by_name[name] = cid
        return cid

    def _discover_cache(self, name: str) -> int | None:
        link = sysfs.SLAB_ROOT / name
        if not link.exists():
            return None
        dirname = os.path.basename(os.path.realpath(link))
        if dirname in self.by_name:
            cid = self.by_name[dirname]
        else:
            cache = sysfs.read_cache(sysfs.SLAB_ROOT, dirname,
                                     sysfs.aliases_of(sysfs.SLAB_ROOT, dirname), len(self.caches))
            if cache is None:
                return None
            self.caches.append(cache)
            cid = cache["id"]
            for alias in (dirname, *cache["aliases"]):
                self.by_name.setdefault(alias, cid)
        self.by_name[name] = cid
        return cid

    def _write_samples(self, rows: list[tuple[int, ...]]) -> None:
        """One round of SLAB_SAMPLE rows, each with its own stamp (docs/trace-format.md)."""
        cols = empty_columns(len(rows))
        cols["kind"][:] = EventKind.SLAB_SAMPLE
        if rows:
            for name, values in zip(SAMPLE_COLUMNS, zip(*rows, strict=True), strict=True):
                cols[name][:] = values
        self._append(cols)

    # --- the end --------------------------------------------------------------------------

    def nested_lost(self) -> int:
        """Probe runs the kernel skipped as nested and no twin took over (LOST NESTED).

        Every loaded program's recursion_misses count, except the twins' own: a twin misses
        only when it nests in itself, and then the main program ran and saw the event. For
        a main free handler, the events its twin handled are subtracted. The count is of
        skipped probe runs, so it may include events the filter would have dropped anyway:
        an upper bound on lost trace rows, never an undercount.
        """
        rescued = self.bpf["rescued"]
        total = 0
        for name, misses in self.recursion_misses().items():
            if name.endswith(TWIN_SUFFIX):
                continue
            if name in TWINS and self.twins:
                misses -= sum(rescued.getvalue(rescued.Key(TWINS[name])))
            total += max(misses, 0)
        return total

    def recursion_misses(self) -> dict[str, int]:
        """Every loaded program's recursion_misses, by program name (kept in meta)."""
        return {(name.decode() if isinstance(name, bytes) else name): recursion_misses(fn.fd)
                for name, fn in self.bpf.funcs.items()}

    def rescued_total(self) -> int:
        """Nested frees the twin programs recorded (kept in meta: how much the twins save)."""
        table = self.bpf["rescued"]
        return sum(sum(table.getvalue(table.Key(slot))) for slot in TWINS.values())

    def lost_per_cpu(self) -> dict[tuple[int, int], int]:
        """(cpu, LostReason) -> count, from the BPF per-CPU array, the perf lost callback and
        the programs' recursion misses (cpu -1: the kernel counts those per program)."""
        out: dict[tuple[int, int], int] = {}
        table = self.bpf["lost"]
        for reason in (LostReason.RINGBUF_FULL, LostReason.LIVE_MAP_FULL,
                       LostReason.FREE_UNSEEN):
            for cpu, count in enumerate(table.getvalue(table.Key(int(reason)))):
                if count:
                    out[(cpu, int(reason))] = int(count)
        for cpu, count in getattr(self.ring, "lost_by_cpu", {}).items():
            out[(cpu, int(LostReason.PERF_LOST))] = count
        nested = self.nested_lost()
        if nested:
            out[(-1, int(LostReason.NESTED))] = nested
        out.update(self.lifecycle_lost_per_cpu())
        return out

    def lifecycle_lost_per_cpu(self) -> dict[tuple[int, int], int]:
        """(cpu, LostReason) -> count of memcg life-cycle and page-cache records dropped: the
        kernel's per-CPU ``lc_lost`` array (ring refused, subtree/followed map full, folio map
        full) and perf's lost callbacks."""
        out: dict[tuple[int, int], int] = {}
        table = self.bpf["lc_lost"]
        for index, reason in ((K["KMT_LC_LOST_RING"], LostReason.LIFECYCLE_RING),
                              (K["KMT_LC_LOST_MAP"], LostReason.LIFECYCLE_MAP),
                              (K["KMT_LC_LOST_PAGE_CACHE"], LostReason.PAGE_CACHE)):
            for cpu, count in enumerate(table.getvalue(table.Key(index))):
                if count:
                    out[(cpu, int(reason))] = int(count)
        for cpu, count in getattr(self, "ctl_perf_lost", {}).items():
            key = (cpu, int(LostReason.LIFECYCLE_RING))
            out[key] = out.get(key, 0) + count
        for cpu, count in getattr(self.pc_ring, "lost_by_cpu", {}).items():
            key = (cpu, int(LostReason.PAGE_CACHE))
            out[key] = out.get(key, 0) + count
        return out

    def _flush_all_batches(self, tries: int = 100) -> dict[tuple[int, int], int]:
        """Hand over every staged event once the slab programs are detached. A program that
        started before the detach may still be writing its buffer: try again while one is
        busy (1 ms apart). Returns what is still staged after that, (cpu, RINGBUF_FULL) ->
        events, to be counted LOST: never seen so far, but never hidden either."""
        if self.flusher is None:
            return {}
        for _ in range(tries):
            if self.flusher.flush(0) == 0:
                break
            time.sleep(0.001)
        left: dict[tuple[int, int], int] = {}
        table = self.bpf["stage"]
        for level in range(len(table)):
            for cpu, st in enumerate(table.getvalue(table.Key(level))):
                if st.b.count:
                    key = (cpu, int(LostReason.RINGBUF_FULL))
                    left[key] = left.get(key, 0) + int(st.b.count)
        return left

    def lost_total(self) -> int:
        return sum(self.lost_per_cpu().values()) + sum(self.pipeline.dropped.values())

    def stop(self) -> dict:
        """Final drain, LOST rows, seal. Returns the sealed meta.

        Raises KmemtraceError (one line) if the trace could not be written; the BPF
        programs are detached first either way.
        """
        # Stop the loss counters; twins first, else alone they would take every free as
        # nested and inflate `rescued` (which NESTED is reckoned from).
        links = sorted(self.bpf.raw_tracepoint_fds, key=lambda k: not k.endswith(
            TWIN_SUFFIX.encode()))
        for tp in links:
            self.bpf.detach_raw_tracepoint(tp)
        staged = self._flush_all_batches()
        self.sampler.close()
        self.poll()
        end = now_ns()
        lost = self.lost_per_cpu() | self.pipeline.lost_rows()
        for key, count in staged.items():
            lost[key] = lost.get(key, 0) + count
        if lost:
            cols = empty_columns(len(lost))
            cols["ts_ns"][:] = end
            cols["kind"][:] = EventKind.LOST
            for i, ((cpu, reason), count) in enumerate(sorted(lost.items())):
                cols["cpu"][i], cols["aux"][i], cols["aux2"][i] = cpu, count, reason
            self._append(cols)
        meta = self.pipeline.meta
        meta["clock"]["end_ns"] = end
        # keys made at start(): the writer thread may be serialising meta right now
        meta["record"]["nested_rescued"] = self.rescued_total()
        meta["record"]["recursion_misses"] = {
            k: v for k, v in self.recursion_misses().items() if v}
        try:
            return self.pipeline.close()
        finally:
            self.ring.close()
            if self.pc_ring is not None:
                self.pc_ring.close()
            self.bpf.cleanup()


def prepare(opts: RecordOptions) -> tuple[probes.KernelFeatures, str, str | None]:
    """Pre-flight in the order a user can fix things: root, output, tracefs, bcc, headers.

    Returns the features, the headers note, and a note if tracefs had to be mounted.
    """
    require_root()
    if opts.output is not None:
        check_output(opts.output, force=opts.force)
    mounted = probes.ensure_tracefs()
    feats = probes.detect()
    bccload.load_bcc()
    choice = headers.choose_headers()
    if choice is None:
        raise KernelSupportError(
            "no kernel headers installed: BCC cannot compile",
            tip="apt-get install linux-headers-amd64 (any version: offsets come from BTF)",
        )
    headers.apply(choice)
    return feats, choice.how, mounted
