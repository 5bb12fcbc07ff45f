"""Context read from sysfs and cgroupfs: slab geometry, merged-cache aliases, memcg tree.

SLUB merges caches of compatible geometry and flags: ``/sys/kernel/slab`` then has one real
directory (named ``:<flags>-<size>``) and a symlink per merged name (UNIX sockets land in
``signal_cache`` here). The trace keeps one entry per real cache with every alias, so a
report can say honestly which names share slabs. The flag letters of a merged cache's
directory include ``A`` for SLAB_ACCOUNT (mm/slub.c ``create_unique_id``).
"""

import os
import time
from pathlib import Path

SLAB_ROOT = Path("/sys/kernel/slab")
GEOMETRY = {"object_size": "object_size", "size": "slab_size",
            "objs_per_slab": "objs_per_slab", "order": "order",
            "min_partial": "min_partial", "cpu_partial": "cpu_partial"}


def _first_int(path: str | Path) -> int:
    """``/sys/kernel/slab/x/slabs`` reads ``'4017 N0=4017'``: take the leading number.

    One ``os.read`` (a sysfs attribute is at most a page), not ``Path.read_text``: path
    object, text wrapper and decoding took as long as the kernel's own work for the
    sampler's hundreds of reads a second (a round of two files per cache: 12.7 -> 6.9 ms
    of thread CPU, with the CPU fields 28.2 -> 14.0 ms; 236 caches, load ~4)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        return int(os.read(fd, 4096).split(None, 1)[0])
    finally:
        os.close(fd)


def read_caches(root: Path = SLAB_ROOT) -> list[dict]:
    """One dict per real cache directory, ids in sorted-directory order."""
    dirs: dict[str, list[str]] = {}
    links: list[tuple[str, str]] = []
    for entry in os.scandir(root):
        if entry.is_symlink():
            links.append((entry.name, os.path.basename(os.readlink(entry.path))))
        elif entry.is_dir():
            dirs[entry.name] = []
    for name, target in links:
        if target in dirs:
            dirs[target].append(name)
    caches = []
    for dirname in sorted(dirs):
        cache = read_cache(root, dirname, sorted(dirs[dirname]), len(caches))
        if cache is not None:
            caches.append(cache)
    return caches


def read_cache(root: Path, dirname: str, aliases: list[str], cache_id: int) -> dict | None:
    """One real cache directory as a trace cache entry (None if it vanished meanwhile)."""
    merged = dirname.startswith(":")
    cache = {"id": cache_id, "name": aliases[0] if merged and aliases else dirname,
             "sysfs": dirname}
    try:
        for key, fname in GEOMETRY.items():
            cache[key] = _first_int(root / dirname / fname)
    except (OSError, ValueError, IndexError):
        return None
    cache["aliases"] = aliases + ([dirname] if merged else [])
    cache["accounted"] = merged and "A" in dirname[1:].split("-")[0]
    return cache


def aliases_of(root: Path, dirname: str) -> list[str]:
    """Names whose symlink points at ``dirname`` (for a cache found after start-up)."""
    return sorted(e.name for e in os.scandir(root)
                  if e.is_symlink() and os.path.basename(os.readlink(e.path)) == dirname)


def name_index(caches: list[dict]) -> dict[str, int]:
    """Every name a cache is known by (its name, aliases, sysfs dir) -> cache id."""
    index = {}
    for c in caches:
        for name in (c["name"], c["sysfs"], *c["aliases"]):
            index.setdefault(name, c["id"])
    return index


def kmalloc_sizes(caches: list[dict], prefix: str) -> dict[int, int]:
    """object_size -> cache id for a kmalloc family (``kmalloc-``, ``kmalloc-cg-``,
    ``kmalloc-rcl-``, ``dma-kmalloc-``).

    Names look like kmalloc-96, kmalloc-1k, kmalloc-cg-8k; the size comes from sysfs, not
    from the name, and a merged kmalloc cache is found through its alias.
    """
    out = {}
    for c in caches:
        for name in (c["name"], *c["aliases"]):
            rest = name[len(prefix):] if name.startswith(prefix) else ""
            if rest and (rest[:-1] if rest.endswith("k") else rest).isdigit():
                out[c["object_size"]] = c["id"]
    return out


def sample_slabs(caches: list[dict], root: Path = SLAB_ROOT) -> list[tuple[int, int, int]]:
    """(cache id, slabs, objects) now, for caches still present."""
    out = []
    for c in caches:
        d = root / c["sysfs"]
        try:
            out.append((c["id"], _first_int(d / "slabs"), _first_int(d / "objects")))
        except (OSError, ValueError, IndexError):
            continue
    return out


CPU_FIELDS = ("cpu_slabs", "partial", "objects_partial")


def _cpu_partial(path: str) -> list[int]:
    """``slabs_cpu_partial`` reads ``'84(8) C0=21(2) C1=63(6)'``: per CPU, the slabs on its
    partial list (in parentheses; the object counts before them are estimates), CPUs not
    listed holding none."""
    fd = os.open(path, os.O_RDONLY)
    try:
        return _parse_cpu_partial(os.read(fd, 4096))
    finally:
        os.close(fd)


def _parse_cpu_partial(text: bytes) -> list[int]:
    items = text.split()[1:]
    split: list[int] = []
    for item in items:
        if item.startswith(b"C") and b"=" in item and b"(" in item:
            cpu = int(item[1:item.index(b"=")])
            split += [0] * (cpu + 1 - len(split))
            split[cpu] = int(item[item.index(b"(") + 1:item.index(b")")])
    return split


def sample_slab_rows(caches: list[dict], cpu_fields: bool, root: Path = SLAB_ROOT,
                     split: dict[int, list[int]] | None = None,
                     shrunk: list[int] | None = None) -> list[tuple[int, ...]]:
    """One row per cache still present: (CLOCK_MONOTONIC ns, cache id, slabs, objects,
    cpu_slabs, partial, objects_partial, 1), or with ``cpu_fields`` False the last four 0.
    With ``split`` (and ``cpu_fields``), the slabs on each CPU's partial list
    (``slabs_cpu_partial``) go there by cache id, read with the row: which CPU's partial
    list holds which starting slab decides when a list drains (``bio-184`` in a churn run:
    +11 % with every CPU partial slab of the start on CPU 0, +111 % shared round robin,
    −38 % on CPU 1). ``cpu_slabs`` itself is per node on 6.x (``'10 N0=10'``).

    Each row is stamped with the midpoint of *its own* reads, read back to back: a round
    over ~240 real caches takes 20-50 ms, and a churning cache (``bio-184``) has hundreds of
    objects in flight for a few ms, so the round's one start stamp put its rows up to the
    whole round away from the moment they describe. The three extra files say what the
    CPUs hold (mm/slub.c ``show_slab_objects``): ``cpu_slabs`` (SO_CPU) is, per CPU, 1 for
    its active slab plus the slab count of its CPU partial list; ``partial`` (SO_PARTIAL) the
    node-partial slabs; ``objects_partial`` (SO_PARTIAL|SO_OBJECTS) their live objects
    (``count_partial(n, count_inuse)``). ``objects`` (SO_ALL|SO_OBJECTS) is every slab's
    capacity minus the free slots of the node-partial ones, so CPU-held slabs count full.

    With ``shrunk`` (a list), each cache is shrunk right before its reads
    (:func:`_shrink_then_read`) and the ids of those that took it are appended: the row
    then finds almost nothing on the CPUs, and ``objects`` counts the live objects, not
    CPU-held capacity (``record --shrink-at-start``).
    """
    out = []
    clock, mono = time.clock_gettime_ns, time.CLOCK_MONOTONIC  # bpf_ktime_get_ns's clock
    names = ("slabs", "objects", *CPU_FIELDS) if cpu_fields else ("slabs", "objects")
    base = f"{root}/"
    for c in caches:
        d = f"{base}{c['sysfs']}/"
        try:
            if shrunk is not None:
                took, t0, t1, texts = _shrink_then_read(d, names, split is not None
                                                        and cpu_fields)
                if took:
                    shrunk.append(c["id"])
                vals = [int(t.split(None, 1)[0]) for t in texts[:len(names)]]
                per_cpu = _parse_cpu_partial(texts[-1]) if len(texts) > len(names) else []
            else:
                t0 = clock(mono)
                vals = [_first_int(d + name) for name in names]
                if split is not None and cpu_fields:
                    per_cpu = _cpu_partial(d + "slabs_cpu_partial")
                t1 = clock(mono)
        except (OSError, ValueError, IndexError):
            continue
        if split is not None and cpu_fields:
            split[c["id"]] = per_cpu
        out.append(((t0 + t1) // 2, c["id"], *vals, 1) if cpu_fields
                   else ((t0 + t1) // 2, c["id"], *vals, 0, 0, 0, 0))
    return out


def _shrink_then_read(d: str, names: tuple[str, ...], with_split: bool
                      ) -> tuple[bool, int, int, list[bytes]]:
    """Shrink cache directory ``d`` (its ``shrink`` file: ``kmem_cache_shrink`` flushes
    every CPU's slabs to the node list and frees every empty slab), then read ``names``
    (and ``slabs_cpu_partial``): (whether the kernel took the shrink, read start and end
    stamps, the texts).

    Every file is opened before the shrink: an open allocates (``names_cache``,
    ``filp``, ``seq_file``, ``lsm_file_cache``) and the close frees, so opened after it,
    the sampler's own reads took a fresh CPU slab of those caches that the row then
    counted (``names_cache``: 1 slab in the kernel at its first sample, where the model,
    shrinking at the row, had none)."""
    paths = [d + name for name in names] + ([d + "slabs_cpu_partial"] if with_split else [])
    fds: list[int] = []
    try:
        for path in paths:
            fds.append(os.open(path, os.O_RDONLY))
        took = False
        try:  # a refused shrink (read-only sysfs) still leaves the row to read
            shrink = os.open(d + "shrink", os.O_WRONLY)  # closed with the others, after
            fds.append(shrink)
            took = os.write(shrink, b"1") == 1
        except OSError:
            pass
        t0 = time.clock_gettime_ns(time.CLOCK_MONOTONIC)
        texts = [os.read(fd, 4096) for fd in fds[:len(paths)]]
        t1 = time.clock_gettime_ns(time.CLOCK_MONOTONIC)
    finally:
        for fd in fds:
            os.close(fd)
    return took, t0, t1, texts


def memcg_tree(mount: Path) -> list[dict]:
    """Every memcg directory: id = inode (= kernfs id), parent id, path, level."""
    out = []
    root_id = mount.stat().st_ino
    out.append({"id": root_id, "parent": 0, "path": "/", "level": 0})
    for dirpath, dirnames, _files in os.walk(mount):
        parent = os.stat(dirpath).st_ino
        for d in sorted(dirnames):
            full = Path(dirpath) / d
            try:
                ino = full.stat().st_ino
            except OSError:
                continue
            rel = "/" + str(full.relative_to(mount))
            out.append({"id": ino, "parent": parent, "path": rel, "level": rel.count("/")})
    return out
