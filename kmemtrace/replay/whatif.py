"""What the recording did not hold, supplied on request: a bigger host, the kernel's start.

Two optional inputs of :func:`kmemtrace.replay.engine.replay`, both documented in
docs/replay.md:

* ``--cpus N`` (:func:`map_cpus`): the recording host had few CPUs, and per-CPU parking
  (cpu slab, cpu partial lists, objcg stocks) grows with CPUs. Each recorded CPU ``c`` is
  split into ``N // recorded`` CPUs and every task's events go to one of them by a hash of
  its pid: ``c + recorded * (hash(pid) % (N // recorded))``. Events that shared a CPU in
  the recording still share one when they came from the same task, and tasks are spread
  as a scheduler with more CPUs would spread them. With ``N`` equal to the recorded count
  the mapping is the identity; with fewer, ``c % N``.
* the kernel's state at the start (:func:`kernel_start`): the first ``/sys/kernel/slab``
  sample of each cache (taken right after attach) says how many slabs and objects it
  held. Without them the model starts empty, so its raw error against later samples is
  the whole pre-existing population. The prelude allocates, at the start time, slabs and
  objects of unknown owner (the root) to those counts, and gives the pointers that the
  trace frees without having allocated them to such objects of the same cache, so that
  their frees empty the slabs they were on. A free that names no cache (``kfree``) is
  given the cache whose allocations in the trace used the same slab page.
"""

import numpy as np

from kmemtrace.trace.reader import TraceReader
from kmemtrace.trace.schema import ROOT_MEMCG_ID, EventKind

PAGE = 4096
FAKE_BASE = 1 << 40  # user-space addresses: no kernel slab object has one


def map_cpus(cpu: np.ndarray, pid: np.ndarray, recorded: int, n: int) -> np.ndarray:
    """Recorded CPUs onto ``n`` CPUs (see the module docstring)."""
    cpu = cpu.astype(np.int64) % max(recorded, 1)
    if n <= recorded:
        return cpu % n
    fan = n // recorded
    # Knuth's multiplicative hash: consecutive pids (a fork burst) land far apart
    h = (pid.astype(np.uint64) * np.uint64(2654435761)) >> np.uint64(16)
    return cpu + recorded * (h % np.uint64(fan)).astype(np.int64)


def _first_samples(trace: TraceReader) -> dict[int, tuple[int, int]]:
    """cache id -> (slabs, objects) of its first SLAB_SAMPLE."""
    out: dict[int, tuple[int, int]] = {}
    for cols in trace.iter_parts(["kind", "cache_id", "aux", "aux2"]):
        sel = np.flatnonzero(cols["kind"] == EventKind.SLAB_SAMPLE)
        for i in sel:
            out.setdefault(int(cols["cache_id"][i]), (int(cols["aux"][i]), int(cols["aux2"][i])))
        if sel.size:
            break  # the first round is in the first part that has samples
    return out


def _preexisting_frees(trace: TraceReader, order: dict[int, int]) -> dict[int, np.ndarray]:
    """cache id -> pointers whose first event in the trace is a FREE."""
    ptrs, kinds, caches = [], [], []
    for cols in trace.iter_parts(["kind", "ptr", "cache_id"]):
        sel = (cols["kind"] == EventKind.ALLOC) | (cols["kind"] == EventKind.FREE)
        ptrs.append(cols["ptr"][sel].astype(np.uint64))
        kinds.append(cols["kind"][sel])
        caches.append(cols["cache_id"][sel].astype(np.int64))
    if not ptrs:
        return {}
    ptr, kind, cache = np.concatenate(ptrs), np.concatenate(kinds), np.concatenate(caches)
    by_ptr = np.argsort(ptr, kind="stable")
    first = np.ones(len(ptr), dtype=bool)
    first[1:] = ptr[by_ptr][1:] != ptr[by_ptr][:-1]
    idx = by_ptr[first]
    idx = idx[kind[idx] == EventKind.FREE]
    fptr, fcache = ptr[idx], cache[idx].copy()
    _cache_from_page(fptr, fcache, ptr[kind == EventKind.ALLOC], cache[kind == EventKind.ALLOC],
                     order)
    return {int(c): fptr[fcache == c] for c in np.unique(fcache) if c >= 0}


def _cache_from_page(fptr, fcache, aptr, acache, order: dict[int, int]) -> None:
    """Fill unknown caches of ``fptr`` from allocations on the same slab page (in place)."""
    for o in sorted(set(order.values())):
        unknown = np.flatnonzero(fcache < 0)
        if not unknown.size:
            return
        mask = np.uint64(~((PAGE << o) - 1) & 0xFFFFFFFFFFFFFFFF)
        of_order = np.isin(acache, [c for c, co in order.items() if co == o])
        base, owner = aptr[of_order] & mask, acache[of_order]
        keys, pos = np.unique(base, return_index=True)
        want = fptr[unknown] & mask
        j = np.searchsorted(keys, want).clip(max=max(len(keys) - 1, 0))
        hit = (keys[j] == want) if len(keys) else np.zeros(len(want), dtype=bool)
        fcache[unknown[hit]] = owner[pos[j[hit]]]


def kernel_start(trace: TraceReader, seed: int = 0) -> dict[str, np.ndarray] | None:
    """Prelude columns (ALLOCs then FREEs at the start time), or None without samples.

    Per cache with ``S`` slabs and ``O`` objects at the first sample and ``P`` pointers
    freed before being allocated: ``max(S * objs_per_slab, O, P)`` objects are allocated
    (the model fills slab after slab), then all but ``L`` are freed, evenly spaced, so that
    every slab keeps its share; the ``P`` pointers sit at random kept positions.
    ``O`` is not the live objects: ``objects`` in /sys/kernel/slab is the slabs' capacity
    minus the free slots of *node-partial* slabs only (``show_slab_objects``, SO_OBJECTS),
    so the free slots of the CPU slabs count as in use. Those are unknown; each CPU's slab
    is taken as half free: ``L = max(O - min(S, ncpus) * objs_per_slab / 2, P)``. Taking
    ``O`` as live made the small caches full at the start (2 slabs, ``O`` = their capacity),
    and their first allocations took the new slabs that made the +100 % of most of them.
    Slab ``k`` is filled and thinned on CPU ``k % ncpus``: a running kernel has a CPU slab
    on each CPU that allocated from the cache, and a prelude on CPU 0 alone left the other
    CPUs none, so their first allocations took new slabs the kernel never needed (2 slabs
    where the kernel had 1 for most small caches of a 2-CPU recording).
    """
    first = _first_samples(trace)
    if not first:
        return None
    geom = {c["id"]: c for c in trace.caches}
    order = {cid: int(c.get("order", 0)) for cid, c in geom.items()}
    pre = _preexisting_frees(trace, order)
    rng = np.random.default_rng(seed)
    ncpus = max(int(trace.meta.get("ncpus") or 1), 1)
    a_ptr, a_cache, a_cpu, f_ptr, f_cache, f_cpu = [], [], [], [], [], []
    for cid, (slabs, objects) in sorted(first.items()):
        if cid not in geom:
            continue
        real = pre.get(cid, np.zeros(0, np.uint64))
        per_slab = max(int(geom[cid]["objs_per_slab"]), 1)
        hidden = min(slabs, ncpus) * per_slab // 2
        keep = max(objects - hidden, len(real), 0)
        total = max(slabs * per_slab, keep)
        if not total:
            continue
        ptr = FAKE_BASE * (cid + 1) + np.arange(total, dtype=np.uint64)
        cpu = (np.arange(total) // per_slab) % ncpus
        kept = np.zeros(total, dtype=bool)
        kept[np.unique(np.linspace(0, total - 1, keep).round().astype(np.int64))] = True
        kept_pos = np.flatnonzero(kept)
        ptr[rng.choice(kept_pos, size=len(real), replace=False)] = real
        a_ptr.append(ptr)
        a_cache.append(np.full(total, cid, np.int64))
        a_cpu.append(cpu)
        f_ptr.append(ptr[~kept])
        f_cache.append(np.full(int((~kept).sum()), cid, np.int64))
        f_cpu.append(cpu[~kept])
    if not a_ptr:
        return None
    n_a, n_f = sum(map(len, a_ptr)), sum(map(len, f_ptr))
    n = n_a + n_f
    start = trace.start_ns
    return {
        "ts_ns": np.full(n, start, np.int64),
        "kind": np.r_[np.full(n_a, EventKind.ALLOC, np.uint8), np.full(n_f, EventKind.FREE,
                                                                       np.uint8)],
        "cpu": np.concatenate(a_cpu + f_cpu).astype(np.int32), "pid": np.zeros(n, np.int32),
        "ptr": np.concatenate(a_ptr + f_ptr), "cache_id": np.concatenate(a_cache + f_cache),
        "memcg_id": np.full(n, ROOT_MEMCG_ID, np.uint64), "gfp": np.zeros(n, np.uint32),
        "aux": np.zeros(n, np.int64), "aux2": np.zeros(n, np.int64),
        "ctx": np.zeros(n, np.uint8),
    }
