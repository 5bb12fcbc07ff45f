"""Checks on ``record -o``, made before anything is compiled, attached or created.

A recording costs a BPF compile and maybe a workload run; a path that cannot hold the trace
must fail first, in one line. Only the trace directory itself (and ``events/`` inside it) is
ever created: a missing parent is a typo more often than a wish, so it is reported, not made.
"""

import contextlib
import os
from pathlib import Path

from kmemtrace.errors import UsageError
from kmemtrace.trace.schema import META_FILE

# Filesystems that exist but cannot hold a trace's files (their files are kernel objects).
PSEUDO_FS = frozenset({"proc", "sysfs", "cgroup", "cgroup2", "tracefs", "debugfs", "bpf",
                       "securityfs", "configfs", "pstore", "efivarfs", "fusectl", "devpts",
                       "mqueue", "binfmt_misc", "autofs", "nsfs"})


def fs_type(path: Path, mounts_file: Path = Path("/proc/self/mounts")) -> str:
    """Type of the filesystem holding ``path`` (longest mount point that is a prefix)."""
    best, kind = "", ""
    for line in mounts_file.read_text().splitlines():
        fields = line.split()
        if len(fields) < 3:
            continue
        mnt = fields[1].replace("\\040", " ")
        inside = str(path) == mnt or str(path).startswith(mnt.rstrip("/") + "/")
        if inside and len(mnt) >= len(best):
            best, kind = mnt, fields[2]
    return kind


def check_output(path: Path, *, force: bool = False) -> None:
    """Raise UsageError unless ``path`` can become (or, with ``force``, replace) a trace."""
    path = Path(os.path.abspath(path))
    if path.exists():
        if not path.is_dir():
            raise UsageError(f"{path}: exists and is not a directory; choose another -o")
        if any(path.iterdir()):
            if not force:
                raise UsageError(f"{path}: already exists and is not empty; choose another -o, "
                                 "or pass --force to replace the trace in it")
            if not (path / META_FILE).exists():
                raise UsageError(f"{path}: not a kmemtrace trace; --force replaces only traces")
    parent = path.parent
    ancestor = next(a for a in (parent, *parent.parents) if a.exists())
    if not ancestor.is_dir():
        raise UsageError(f"{ancestor}: is a file, not a directory; choose another -o")
    if ancestor != parent:
        raise UsageError(f"{parent}: no such directory; create it first (record creates only "
                         "the trace directory itself)")
    kind = fs_type(Path(os.path.realpath(parent)))
    if kind in PSEUDO_FS:
        raise UsageError(f"{parent}: on a {kind} filesystem, which cannot hold a trace; "
                         "choose a -o on a disk")
    _try_writing(path)


def _try_writing(path: Path) -> None:
    """Create and remove a file where the trace will go: read-only and full filesystems,
    permissions and quotas all show up here, before the BPF compile."""
    created = not path.exists()
    probe = path / ".kmemtrace-write-test"
    try:
        if created:
            path.mkdir()
        probe.write_bytes(b"\0" * 4096)
        probe.unlink()
    except OSError as exc:
        raise UsageError(f"{path}: cannot write the trace there ({exc.strerror})") from None
    finally:
        with contextlib.suppress(OSError):
            probe.unlink(missing_ok=True)
            if created:
                path.rmdir()
