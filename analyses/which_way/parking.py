"""``python -m analyses.which_way.parking``: where the kernel parks empty slabs, next to the
model (as root, on the live kernel).

Why: the calibration's worst caches (``bio-184``) sit above the kernel by slabs the model
holds empty, and the question was whether the model parks and discards empty slabs where
the kernel does. This fills and empties a cache from one CPU and reads
``/sys/kernel/slab/<cache>/`` before and after; the same sequence (N allocations, then N
frees in allocation order, all on CPU 0, from an empty cache) is replayed through the
model. The kernel's numbers are the independent count.

The cache is ``dnotify_struct`` (32-byte objects, 128 a slab: ``cpu_partial`` 120
objects, so ``DIV_ROUND_UP(2 * 120, 128)`` = 2 CPU partial slabs; ``min_partial`` 5),
unmerged and, on an idle host, empty: each ``fcntl(F_NOTIFY)`` on a directory fd is one
object, and closing the fd frees it on the closing CPU (``dnotify_flush``). On paper, by
the rules of mm/slub.c (v5.16-v6.18) for 20 slabs' worth (2 560 fds), slabs A1..A20,
A20 the CPU's active slab: the first free of each full slab parks it on CPU 0's partial
list (``__slab_free`` -> ``put_cpu_partial(s, slab, 1)``), where its other frees leave it,
empty (v6.8+ ``__slab_free``: ``if (prior && !on_node_partial) return``; frozen before);
the 3rd push finds 2 there and drains them (``__put_partials``), and an empty slab is
discarded only once the node list holds ``min_partial`` (``n->nr_partial >=
s->min_partial``): A2, A1, A4, A3, A6 go to the node list, A5 and every later drained pair
are discarded; A19 stays on the CPU partial list and A20 stays the active slab. 7 slabs,
all empty: 5 on the node list, 1 on CPU 0's partial list, 1 active. Only
``kmem_cache_shrink`` (the ``shrink`` file), cache destruction, CPU or memory hotplug
(``flush_all``) release them. (``RAWv6``, one raw ICMPv6 socket an object, 12 a slab, 4 CPU
partial slabs, gave the same agreement by hand: 240 sockets, +9 slabs, 5 on the node
list, 3 on CPU 0's partial list.)

The memcg the workload runs in (``i12c_parking`` under the v1 memory hierarchy) changes
nothing here on 6.x: its objects share the root cache (objcg); it is removed at the end.
"""

import fcntl
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from kmemtrace.replay.engine import replay
from kmemtrace.strategies import select
from kmemtrace.trace.meta import new_meta
from kmemtrace.trace.reader import TraceReader
from kmemtrace.trace.schema import EventKind, empty_columns
from kmemtrace.trace.writer import TraceWriter

CACHE = "dnotify_struct"
MEMCG = Path("/sys/fs/cgroup/memory/i12c_parking")
FIELDS = ("slabs", "objects", "partial", "cpu_slabs", "objects_partial")
ERAS = ("5.16", "6.8")


def read_slab(cache: str = CACHE) -> dict:
    """The sysfs counts (node totals) and the CPU partial slabs per CPU."""
    d = Path("/sys/kernel/slab") / cache
    out = {f: int((d / f).read_text().split()[0]) for f in FIELDS}
    cpu_partial = (d / "slabs_cpu_partial").read_text().split()
    out["cpu_partial_slabs"] = {int(w[1:w.index("=")]): int(w[w.index("(") + 1:-1])
                                for w in cpu_partial[1:]}
    return out


def workload(n: int) -> tuple[dict, dict]:
    """Take ``n`` dnotify registrations on CPU 0 in a memcg, close them in order; the
    sysfs counts before and after. The cache is shrunk first (``kmem_cache_shrink``: every
    CPU's slabs flushed, empty slabs discarded), so that a second run starts as the first
    did rather than from the slabs the first one parked."""
    (Path("/sys/kernel/slab") / CACHE / "shrink").write_text("1")
    os.sched_setaffinity(0, {0})
    resource.setrlimit(resource.RLIMIT_NOFILE, (n + 64, n + 64))
    MEMCG.mkdir(exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="i12c-parking-") as watched:
        try:
            (MEMCG / "cgroup.procs").write_text(str(os.getpid()))
            before = read_slab()
            fds = [os.open(watched, os.O_RDONLY | os.O_DIRECTORY) for _ in range(n)]
            for fd in fds:
                fcntl.fcntl(fd, fcntl.F_NOTIFY, fcntl.DN_MODIFY | fcntl.DN_MULTISHOT)
            filled = read_slab()
            for fd in fds:
                os.close(fd)
            time.sleep(0.5)
            after = read_slab()
        finally:
            (MEMCG.parent / "cgroup.procs").write_text(str(os.getpid()))
            MEMCG.rmdir()
    print(f"kernel filled: {filled}")
    return before, after


def model(n: int, era: str, geometry: dict) -> dict:
    """The same sequence through the model's SLUB (objcg, one root cache), then the
    sysfs read as a SLAB_SAMPLE row (which shrinks the cache first where ``geometry`` says
    ``shrunk_at_start``, as ``record --shrink-at-start`` did): slabs, node partial slabs,
    CPU 0's partial slabs, and whether CPU 0 holds an active slab."""
    from kmemtrace.model.state import I_NR_PARTIAL, I_NR_SLABS, P_ACTIVE, P_PSLABS
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "t"
        cols = empty_columns(2 * n + 1)
        cols["ts_ns"][:] = 1_000 + np.arange(2 * n + 1)
        cols["seq"][:] = np.arange(2 * n + 1)
        cols["kind"][:n], cols["kind"][n:] = EventKind.ALLOC, EventKind.FREE
        cols["kind"][-1] = EventKind.SLAB_SAMPLE
        ptr = (1 << 40) + 4096 * np.arange(n, dtype=np.uint64)
        cols["ptr"][:n], cols["ptr"][n:2 * n] = ptr, ptr
        cols["memcg_id"][:2 * n] = 1
        cols["cache_id"][:] = 0
        cols["cpu"][:] = 0
        cols["bytes"][:n] = geometry["size"]
        meta = new_meta("synth", ncpus=2)
        meta["caches"] = [{"id": 0, "name": CACHE, "accounted": False} | geometry]
        meta["clock"] = {"start_ns": 1_000, "end_ns": 1_000 + 2 * n + 1}
        with TraceWriter(path, meta) as writer:
            writer.append(cols)
        m = replay(TraceReader.open(path), select("objcg", {}), era=era).runs[0].model
    inst = int(m.inst_of[0, 0])
    return {"slabs": int(m.inst[I_NR_SLABS, inst]), "partial": int(m.inst[I_NR_PARTIAL, inst]),
            "cpu0_partial": int(m.pcpu[P_PSLABS, inst, 0]),
            "cpu0_active": int(m.pcpu[P_ACTIVE, inst, 0] >= 0)}


def geometry_of(cache: str = CACHE) -> dict:
    d = Path("/sys/kernel/slab") / cache
    size, per_slab, order, mp, cp = (int((d / f).read_text()) for f in (
        "slab_size", "objs_per_slab", "order", "min_partial", "cpu_partial"))
    return {"object_size": int((d / "object_size").read_text()), "size": size,
            "objs_per_slab": per_slab, "order": order, "min_partial": mp, "cpu_partial": cp}


def main(argv: list[str]) -> int:
    n = int(argv[0]) if argv else 2560
    geom = geometry_of()
    print(f"{os.uname().release}; load {os.getloadavg()}; {CACHE}: {geom}")
    before, after = workload(n)
    print(f"kernel before: {before}")
    print(f"kernel after:  {after}")
    print(f"kernel change: slabs {after['slabs'] - before['slabs']:+d}, node partial "
          f"{after['partial'] - before['partial']:+d} (objects on them "
          f"{after['objects_partial'] - before['objects_partial']:+d}), CPU 0 partial "
          f"{after['cpu_partial_slabs'].get(0, 0) - before['cpu_partial_slabs'].get(0, 0):+d}")
    for era in ERAS:
        print(f"model {era}:    {model(n, era, geom)}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
