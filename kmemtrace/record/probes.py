"""Feature detection: what this kernel offers, and the attach plan built from it.

Every decision is made by looking (tracefs event directories, BTF prototypes, kallsyms,
mounts, a trial fentry load), never by parsing version strings. The plan is written into
the trace's meta so a reader knows which events could appear at all.
"""

import contextlib
import ctypes
import faulthandler
import os
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path

from kmemtrace.errors import KernelSupportError
from kmemtrace.record.btf import STRUCT, Btf
from kmemtrace.record.structsizes import read_struct_sizes

TRACEFS_CANDIDATES = (Path("/sys/kernel/tracing"), Path("/sys/kernel/debug/tracing"))
KPROBE_PMU = Path("/sys/bus/event_source/devices/kprobe")
KALLSYMS = Path("/proc/kallsyms")
BPF_DIR = Path(__file__).resolve().parents[2] / "bpf"

# Raw tracepoints and the TP_PROTO position of the argument each handler reads.
RAW_KMEM = {
    "kmem_cache_alloc": ("kmt_cache_alloc", {2: "struct kmem_cache *"}),
    "kmem_cache_free": ("kmt_cache_free", {2: "struct kmem_cache *"}),
    "kmalloc": ("kmt_kmalloc", {1: "void *", 3: "long unsigned int"}),
    "kfree": ("kmt_kfree", {1: "void *"}),
}
# cgroup:cgroup_mkdir is a raw tracepoint (its struct cgroup * gives the parent's id); these
# are tracefs tracepoints whose handlers attach themselves when compiled in (KMT_TP_<EVENT>).
CGROUP_TPS = ("cgroup_rmdir", "cgroup_release", "cgroup_attach_task")
# Memory pressure (PRESSURE rows): self-attaching tracefs handlers, compiled in as a set
# (KMT_TP_VMSCAN) when every one of them exists.
VMSCAN_TPS = ("mm_vmscan_kswapd_wake", "mm_vmscan_direct_reclaim_begin",
              "mm_vmscan_memcg_reclaim_begin", "mm_shrink_slab_start")
# Page-cache insertions and removals (PAGE_CACHE rows): raw tracepoints whose folio the
# handlers read through BTF offsets (page_cache_offsets).
PAGE_CACHE_TPS = {"mm_filemap_add_to_page_cache": "kmt_pc_add",
                  "mm_filemap_delete_from_page_cache": "kmt_pc_delete"}
# With --follow-tasks: forks extend the followed tasks, exits shrink them.
FOLLOW_TPS = ("sched:sched_process_fork", "sched:sched_process_exit")
CACHE_CREATE_CANDIDATES = ("__kmem_cache_create_args", "kmem_cache_create_usercopy",
                           "kmem_cache_create")


@dataclass(frozen=True)
class Lifecycle:
    """A lifecycle event upstream has no tracepoint for, and the ways to catch it.

    ``tracepoint`` is the event that lab/patches adds (a patched kernel); without it the
    kernel function is probed by fentry or kprobe; ``macro`` names the -D switch that
    compiles the tracepoint or fentry handler (both attach themselves when loaded).
    """

    func: str
    handler: str  # kprobe handler; the raw tracepoint one is handler + "_tp"
    macro: str
    tracepoint: str | None = None
    tp_type: str = "tracepoint"
    fentry: bool = True  # False: the verifier refuses the fentry handler's argument reads


LIFECYCLE = (
    Lifecycle("mem_cgroup_css_offline", "kmt_memcg_offline", "KMT_MEMCG_OFFLINE",
              "memcg:mem_cgroup_css_offline"),
    Lifecycle("mem_cgroup_css_free", "kmt_memcg_free", "KMT_MEMCG_FREE",
              "memcg:mem_cgroup_css_free"),
    Lifecycle("kmem_cache_destroy", "kmt_cache_destroy", "KMT_CACHE_DESTROY",
              "kmem:kmem_cache_destroy", "raw_tracepoint"),
    # 6.1 rejects reading `void **p` in fentry ("arg2 type PTR is not a struct"): kprobe only.
    Lifecycle("kmem_cache_free_bulk", "kmt_free_bulk", "KMT_FREE_BULK", fentry=False),
)
# Preference order of each --lifecycle mode; the first kind that works is attached.
LIFECYCLE_MODES = {"auto": ("tracepoint", "fentry", "kprobe"), "fentry": ("fentry", "kprobe"),
                   "kprobe": ("kprobe",)}


@dataclass
class Probe:
    """One row of the attach plan (``meta["attach_plan"]``)."""

    probe: str
    type: str  # raw_tracepoint | tracepoint | fentry | kprobe | kretprobe
    status: str  # attached | missing
    why: str
    fn: str = field(default="", repr=False)
    macro: str = field(default="", repr=False)  # -D switch of a self-attaching handler


@dataclass
class KernelFeatures:
    release: str
    tracefs: Path | None
    btf: Btf | None
    cgroup: str  # v1 | v2
    memcg_root: Path
    memcg_hierarchy: int  # `root` in cgroup tracepoints for the memory hierarchy
    kprobes: bool
    fentry: bool | None = None  # None until checked with a trial load
    emulated_vm: bool = False
    ksyms: frozenset[str] = frozenset()

    def meta(self) -> dict:
        return {"release": self.release, "btf": self.btf is not None, "cgroup": self.cgroup,
                "kprobes": self.kprobes, "fentry": bool(self.fentry),
                "emulated_vm": self.emulated_vm, "struct_sizes": read_struct_sizes(self.btf)}


def find_tracefs() -> Path | None:
    for path in TRACEFS_CANDIDATES:
        try:
            if (path / "events").is_dir():
                return path
        except PermissionError:  # mounted, but only root may look inside
            return path
    return None


def ensure_tracefs() -> str | None:
    """Mount tracefs if it is not mounted (recording runs as root); say so, or None.

    tracefs is where tracepoints are named and BCC attaches them; a system that simply did
    not mount it (minimal containers, some initramfs setups) needs one mount(2), not a fix
    the user has to look up.
    """
    if find_tracefs() is not None:
        return None
    target = TRACEFS_CANDIDATES[0]
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.mount(b"nodev", str(target).encode(), b"tracefs", 0, None) != 0:
        err = ctypes.get_errno()
        raise KernelSupportError(f"tracefs is not mounted and mounting it at {target} failed: "
                                 f"{os.strerror(err)}",
                                 tip=f"mount -t tracefs nodev {target}")
    if find_tracefs() is None:
        raise KernelSupportError(f"mounted tracefs at {target} but it has no events/ "
                                 "directory: this kernel lacks tracepoints (CONFIG_TRACING)")
    return f"tracefs was not mounted: mounted it at {target} (mount -t tracefs nodev {target})"


def memcg_mount(mounts_file: Path = Path("/proc/mounts")) -> tuple[str, Path] | None:
    """("v1", mountpoint) for a v1 memory hierarchy, ("v2", mountpoint) if v2 has memory."""
    v2 = None
    for line in mounts_file.read_text().splitlines():
        parts = line.split()
        if len(parts) < 4:
            continue
        mnt, fstype, opts = Path(parts[1]), parts[2], parts[3].split(",")
        if fstype == "cgroup" and "memory" in opts:
            return "v1", mnt
        if fstype == "cgroup2" and v2 is None:
            controllers = mnt / "cgroup.controllers"
            if controllers.exists() and "memory" in controllers.read_text().split():
                v2 = mnt
    return ("v2", v2) if v2 else None


def memory_hierarchy_id(proc_cgroups: Path = Path("/proc/cgroups")) -> int:
    """Hierarchy id of the memory controller (0 = the v2 unified hierarchy)."""
    for line in proc_cgroups.read_text().splitlines():
        parts = line.split()
        if parts and parts[0] == "memory":
            return int(parts[1])
    raise KernelSupportError("/proc/cgroups lists no memory controller",
                             tip="boot a kernel with CONFIG_MEMCG=y")


def _ksyms(names: set[str]) -> frozenset[str]:
    found = set()
    try:
        with open(KALLSYMS) as fh:
            for line in fh:
                sym = line.split()[2]
                if sym in names:
                    found.add(sym)
    except OSError:
        pass
    return frozenset(found)


def detect(*, need_btf: bool = True) -> KernelFeatures:
    """Look at the running kernel; raise KernelSupportError for what recording cannot lack."""
    tracefs = find_tracefs()
    if tracefs is None:
        raise KernelSupportError(
            "tracefs is not mounted (no /sys/kernel/tracing/events)",
            tip="mount -t tracefs nodev /sys/kernel/tracing",
        )
    mount = memcg_mount()
    if mount is None:
        raise KernelSupportError(
            "no memory cgroup controller is mounted (v1 'memory' or v2 with memory enabled)",
            tip="mount -t cgroup -o memory none /sys/fs/cgroup/memory",
        )
    cgroup, root = mount
    btf = Btf.from_file() if need_btf else None
    wanted = {lc.func for lc in LIFECYCLE} | set(CACHE_CREATE_CANDIDATES) | {
        "bpf_trampoline_link_prog"}
    return KernelFeatures(
        release=os.uname().release,
        tracefs=tracefs,
        btf=btf,
        cgroup=cgroup,
        memcg_root=root,
        memcg_hierarchy=memory_hierarchy_id() if cgroup == "v1" else 0,
        kprobes=KPROBE_PMU.exists() or (tracefs / "kprobe_events").exists(),
        emulated_vm=_emulated(),
        ksyms=_ksyms(wanted),
    )


def _emulated() -> bool:
    """True under full emulation (QEMU TCG), where timings are not the hardware's."""
    try:
        cpuinfo = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "QEMU Virtual CPU" in cpuinfo or "TCG" in cpuinfo


@contextlib.contextmanager
def _quiet_stderr():
    """fd 2 to /dev/null while libbpf prints what the caller says better, but not the
    fault handler's: a compile that hangs (tens of seconds under TCG) still dumps its
    Python stacks where the lab's watchdog (SIGABRT) and the user look for them."""
    saved = os.dup(2)
    dumping = faulthandler.is_enabled()
    try:
        if dumping:
            faulthandler.enable(file=saved)
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), 2)
            yield
    finally:
        os.dup2(saved, 2)
        if dumping:
            faulthandler.enable(file=sys.stderr)
        os.close(saved)


def check_fentry(bcc, feats: KernelFeatures) -> bool:
    """Try loading a trivial fentry program: the only reliable test."""
    if feats.btf is None or "bpf_trampoline_link_prog" not in feats.ksyms:
        feats.fentry = False
        return False
    try:
        with _quiet_stderr():  # libbpf prints the refusal itself; the plan says it better
            probe = bcc.BPF(src_file=str(BPF_DIR / "fentry_check.bpf.c"))
    except Exception:  # BCC raises bare Exception for load/attach failures
        feats.fentry = False
        return False
    probe.cleanup()
    feats.fentry = True
    return True


def plan(feats: KernelFeatures, lifecycle: str = "auto") -> list[Probe]:
    """Every probe kmemtrace would like, each marked attachable or missing with a reason.

    Lifecycle events take the first that works of: the patched kernel's tracepoint, fentry,
    kprobe (``lifecycle`` = "kprobe" or "fentry" forces one kind, to test both paths).
    """
    rows: list[Probe] = []
    for event, (fn, expect) in RAW_KMEM.items():
        rows.append(_raw_tp_row(feats, "kmem", event, fn, expect))
    rows.append(_raw_tp_row(feats, "cgroup", "cgroup_mkdir", "kmt_cgroup_mkdir",
                            {0: "struct cgroup *", 1: "char *"}))
    for event in CGROUP_TPS:
        present = tracefs_has(feats, f"cgroup:{event}")
        rows.append(Probe(f"cgroup:{event}", "tracepoint", "attached" if present else "missing",
                          "tracefs format" if present else "tracepoint not in tracefs"))
    vmscan = has_vmscan(feats)
    for event in VMSCAN_TPS:
        rows.append(Probe(f"vmscan:{event}", "tracepoint", "attached" if vmscan else "missing",
                          "tracefs format" if vmscan else "not every vmscan tracepoint in "
                          "tracefs: no PRESSURE rows"))
    for event, fn in PAGE_CACHE_TPS.items():
        rows.append(_page_cache_row(feats, event, fn))
    for lc in LIFECYCLE:
        rows.append(_lifecycle_row(feats, lc, lifecycle))
    creator = next((f for f in CACHE_CREATE_CANDIDATES if f in feats.ksyms), None)
    rows.append(_kprobe_row(feats, creator or "kmem_cache_create", "kmt_cache_create_ret",
                            "kretprobe"))
    return rows


def has_vmscan(feats: KernelFeatures) -> bool:
    return all(tracefs_has(feats, f"vmscan:{event}") for event in VMSCAN_TPS)


def tracefs_has(feats: KernelFeatures, probe: str) -> bool:
    system, event = probe.split(":")
    return (feats.tracefs / "events" / system / event).is_dir()


def _raw_tp_row(feats, system: str, event: str, fn: str, expect: dict[int, str]) -> Probe:
    """A raw tracepoint whose TP_PROTO argument types are checked against BTF."""
    params = feats.btf.raw_tracepoint_params(event) if feats.btf else None
    if params is None:
        return Probe(f"{system}:{event}", "raw_tracepoint", "missing",
                     "no btf_trace_ prototype in BTF: raw tracepoint absent", fn)
    bad = [f"arg{i} is {params[i] if i < len(params) else 'absent'}, want {want}"
           for i, want in expect.items() if i >= len(params) or params[i] != want]
    return Probe(f"{system}:{event}", "raw_tracepoint", "missing" if bad else "attached",
                 "; ".join(bad) or "TP_PROTO checked against BTF", fn)


def page_cache_offsets(btf: Btf | None) -> dict[str, int] | None:
    """-D values the page-cache handlers need, from BTF; None if any is missing.

    ``mapping``/``index``: where the folio sits in the page cache, the key a removal pairs
    with its insertion by (kept when compaction migrates the folio to a copy).

    ``folio_nr_pages()``: 1 unless PG_head is set, else ``_nr_pages`` (6.10+) or
    ``_folio_nr_pages`` (5.18-6.9, 64-bit). ``memcg_data``: a ``struct mem_cgroup *`` with
    flag bits below ``__NR_MEMCG_DATA_FLAGS``; MEMCG_DATA_KMEM marks an objcg (kmem page).
    """
    if btf is None or btf.find(STRUCT, "folio") is None:
        return None
    nr_field = next((f for f in ("_nr_pages", "_folio_nr_pages") if btf.has_member("folio", f)),
                    None)
    head, kmem = btf.enum_value("PG_head"), btf.enum_value("MEMCG_DATA_KMEM")
    nr_flags = btf.enum_value("__NR_MEMCG_DATA_FLAGS")
    if (nr_field is None or None in (head, kmem, nr_flags)
            or not all(btf.has_member("folio", f)
                       for f in ("flags", "memcg_data", "mapping", "index"))
            or not btf.has_member("mem_cgroup", "css")):
        return None
    return {"KMT_OFF_FOLIO_FLAGS": btf.offset("folio", "flags"),
            "KMT_OFF_FOLIO_MEMCG_DATA": btf.offset("folio", "memcg_data"),
            "KMT_OFF_FOLIO_NR_PAGES": btf.offset("folio", nr_field),
            "KMT_OFF_FOLIO_MAPPING": btf.offset("folio", "mapping"),
            "KMT_OFF_FOLIO_INDEX": btf.offset("folio", "index"),
            "KMT_OFF_MEMCG_CSS": btf.offset("mem_cgroup", "css"),
            "KMT_PG_HEAD": head, "KMT_MEMCG_DATA_KMEM": kmem,
            "KMT_MEMCG_DATA_FLAGS_MASK": nr_flags - 1}


def _page_cache_row(feats: KernelFeatures, event: str, fn: str) -> Probe:
    row = _raw_tp_row(feats, "filemap", event, fn, {0: "struct folio *"})
    if row.status == "attached" and page_cache_offsets(feats.btf) is None:
        row.status, row.why = "missing", "BTF lacks a folio or memcg field the handler reads"
    return row


def leave_out_page_cache(rows: list[Probe]) -> None:
    """``record --no-page-cache``: the page-cache probes stay detached, and the plan says so."""
    names = {f"filemap:{event}" for event in PAGE_CACHE_TPS}
    for row in rows:
        if row.probe in names:
            row.status, row.why = "missing", "not asked for (--no-page-cache)"


def page_cache_attached(rows: list[Probe]) -> bool:
    """Both page-cache probes can attach: PAGE_CACHE rows are recorded."""
    names = {f"filemap:{event}" for event in PAGE_CACHE_TPS}
    return sum(r.probe in names and r.status == "attached" for r in rows) == len(names)


def _lifecycle_row(feats: KernelFeatures, lc: Lifecycle, mode: str) -> Probe:
    for kind in LIFECYCLE_MODES[mode]:
        if kind == "tracepoint" and lc.tracepoint and tracefs_has(feats, lc.tracepoint):
            if lc.tp_type == "tracepoint":
                return Probe(lc.tracepoint, "tracepoint", "attached",
                             "tracefs format (patched kernel)", macro=lc.macro + "_TP")
            system, event = lc.tracepoint.split(":")
            row = _raw_tp_row(feats, system, event, lc.handler + "_tp",
                              {0: "struct kmem_cache *"})
            if row.status == "attached":
                return row
        if kind == "fentry" and lc.fentry and feats.fentry and lc.func in feats.ksyms:
            return Probe(lc.func, "fentry", "attached", "BTF + trial fentry load",
                         macro=lc.macro + "_FENTRY")
    return _kprobe_row(feats, lc.func, lc.handler, "kprobe")


def _kprobe_row(feats: KernelFeatures, func: str, fn: str, kind: str) -> Probe:
    if not feats.kprobes:
        return Probe(func, kind, "missing", "kernel has no kprobes (CONFIG_KPROBES off)", fn)
    if func not in feats.ksyms:
        return Probe(func, kind, "missing", "symbol not in /proc/kallsyms", fn)
    return Probe(func, kind, "attached", "kallsyms", fn)


def plan_meta(rows: list[Probe]) -> list[dict]:
    return [{k: v for k, v in asdict(r).items() if k not in ("fn", "macro")} for r in rows]


def lifecycle_row(rows: list[Probe], func: str) -> Probe | None:
    """The attached row that catches ``func``'s event (tracepoint, fentry or kprobe)."""
    lc = next(lc for lc in LIFECYCLE if lc.func == func)
    return next((r for r in rows if r.status == "attached"
                 and r.probe in (lc.func, lc.tracepoint)), None)


def offline_source_note(rows: list[Probe]) -> str:
    """How MEMCG_OFFLINE is produced under this plan (for the one-line summary)."""
    row = lifecycle_row(rows, "mem_cgroup_css_offline")
    return f"{row.type} {row.probe}" if row else "cgroup:cgroup_rmdir"
