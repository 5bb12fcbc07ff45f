"""The kernel's own counts, read beside the event stream: dying memcgs, memcg kmem, slabs.

``top`` shows what the probes saw next to what the kernel itself says, so a reader can tell
a gap in the stream (objects from before the start, lost events) from a kernel that holds
more than the stream explains.

Dying memcgs: cgroup v2 counts them, ``nr_dying_descendants`` in ``cgroup.stat``. cgroup v1
has no such file; the closest count is ``num_cgroups`` of the memory line in
``/proc/cgroups`` (``cgroup_root->nr_cgrps``) minus the memcg directories that exist. The
kernel decrements ``nr_cgrps`` in ``css_free_rwork_fn`` (kernel/cgroup/cgroup.c), when the
cgroup itself is freed, which is after its memory css is freed (the css holds the cgroup),
so the difference counts the cgroups removed whose memcg the kernel still holds: dying ones.
It is host-wide (the whole v1 memory hierarchy), whatever ``--cgroup`` says.
"""

import os
from dataclasses import dataclass
from pathlib import Path

PROC_CGROUPS = Path("/proc/cgroups")


@dataclass
class MemcgCounts:
    """Online and dying memcgs as the kernel counts them, and where the count came from."""

    online: int
    dying: int | None
    source: str


def online_dirs(mount: Path) -> int:
    """Memcg directories under ``mount``, itself included."""
    return 1 + sum(len(dirnames) for _dirpath, dirnames, _files in os.walk(mount))


def memcg_counts(cgroup: str, mount: Path, subtree: str | None = None,
                 proc_cgroups: Path = PROC_CGROUPS) -> MemcgCounts:
    """The kernel's count of online and dying memcgs (v2: under ``subtree``; v1: host-wide)."""
    if cgroup == "v2":
        where = mount / (subtree or "/").lstrip("/")
        stat = _keyed(where / "cgroup.stat")
        return MemcgCounts(online=1 + stat.get("nr_descendants", 0),
                           dying=stat.get("nr_dying_descendants"),
                           source=f"cgroup.stat nr_dying_descendants of {subtree or '/'}")
    online = online_dirs(mount)
    total = None
    for line in proc_cgroups.read_text().splitlines():
        fields = line.split()
        if fields and fields[0] == "memory":
            total = int(fields[2])
    dying = None if total is None else max(total - online, 0)
    return MemcgCounts(online=online, dying=dying,
                       source="v1: /proc/cgroups memory num_cgroups - memcg dirs, host-wide")


def kmem_bytes(cgroup: str, mount: Path, path: str) -> int | None:
    """The kernel's slab/kmem figure of an online memcg, None where it has none.

    v1: ``memory.kmem.usage_in_bytes`` (all kernel memory charged: slab, stacks, page
    tables); v2: ``slab`` in ``memory.stat`` (slab only).
    """
    folder = mount / path.lstrip("/")
    try:
        if cgroup == "v1":
            return int((folder / "memory.kmem.usage_in_bytes").read_text())
        return _keyed(folder / "memory.stat").get("slab")
    except (OSError, ValueError):
        return None


def kmem_source(cgroup: str) -> str:
    return "memory.kmem.usage_in_bytes" if cgroup == "v1" else "memory.stat slab"


def _keyed(path: Path) -> dict[str, int]:
    """A flat-keyed cgroup file (``key value`` lines); empty if it cannot be read."""
    try:
        text = path.read_text()
    except OSError:
        return {}
    out = {}
    for line in text.splitlines():
        key, _, value = line.partition(" ")
        if value.strip().lstrip("-").isdigit():
            out[key] = int(value)
    return out
