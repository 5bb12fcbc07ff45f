"""``meta.json``: what a trace says about itself.

The writer rewrites it atomically after every sealed part, so at any instant the file on
disk describes exactly the parts that are complete; ``complete`` turns true only when the
trace is sealed. Readers trust ``parts`` and nothing else in ``events/``.
"""

import json
import os
import platform
import time
from pathlib import Path
from typing import Any

from kmemtrace import __version__
from kmemtrace.errors import TraceFormatError
from kmemtrace.trace.schema import (
    FORMAT_VERSION,
    META_FILE,
    READABLE_VERSIONS,
    TRACE_MAGIC,
    EventKind,
)

CACHE_FIELDS = ("object_size", "size", "objs_per_slab", "order", "min_partial", "cpu_partial")


def new_meta(source: str, *, command: list[str] | None = None, ncpus: int | None = None) -> dict:
    """A fresh meta dict; callers fill ``caches``, ``memcgs``, ``kernel``, ``attach_plan``."""
    return {
        "magic": TRACE_MAGIC,
        "format_version": FORMAT_VERSION,
        "kmemtrace_version": __version__,
        "source": source,
        "created_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "command": command or [],
        "host": platform.node(),
        "kernel": {},
        "attach_plan": [],
        "clock": {"start_ns": None, "end_ns": None},
        "ncpus": ncpus or os.cpu_count() or 1,
        "caches": [],
        "memcgs": [],
        "counts": {k.name: 0 for k in EventKind},
        "lost": {"total": 0, "by_reason": {}},
        "parts": [],
        "complete": False,
    }


def write_meta_atomic(trace_dir: Path, meta: dict) -> None:
    """Replace meta.json in one rename so a crash never leaves a half-written file.

    The one-shot ``json.dumps`` (C encoder, GIL held throughout) takes a consistent
    snapshot first: a recorder's drain thread may add caches or memcgs while its writer
    thread writes meta.json, and the indenting encoder iterates in Python.
    """
    snapshot = json.loads(json.dumps(meta))
    tmp = trace_dir / f".{META_FILE}.tmp"
    with open(tmp, "w") as fh:
        json.dump(snapshot, fh, indent=1, sort_keys=False)
        fh.write("\n")
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, trace_dir / META_FILE)


def load_meta(trace_dir: Path) -> dict[str, Any]:
    """Read and check meta.json; every failure is one sentence naming the file."""
    if not trace_dir.exists():
        raise TraceFormatError(f"{trace_dir}: no such trace directory")
    if not trace_dir.is_dir():
        raise TraceFormatError(f"{trace_dir}: a trace is a directory holding meta.json and events/")
    path = trace_dir / META_FILE
    if not path.exists():
        raise TraceFormatError(
            f"{path}: missing; this is not a kmemtrace trace (or its recording never started)"
        )
    try:
        meta = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise TraceFormatError(f"{path}: damaged JSON ({exc}); restore it or re-record") from None
    if not isinstance(meta, dict) or meta.get("magic") != TRACE_MAGIC:
        raise TraceFormatError(f"{path}: not a kmemtrace meta.json (magic missing)")
    version = meta.get("format_version")
    if version not in READABLE_VERSIONS:
        raise TraceFormatError(
            f"{path}: format_version {version!r} is not one this kmemtrace {__version__} "
            f"reads ({', '.join(map(str, READABLE_VERSIONS))}); use the release that wrote it",
        )
    return meta
