"""A trace's identity: one SHA-256 over what its meta.json says it holds.

A sealed trace's ``meta.json`` lists every part with the part's own SHA-256, so hashing
``meta.json`` names the events without reading them: a fleet of thousands of traces is
keyed in milliseconds, and a trace moved or copied to shared storage keeps its key. Parts
written before digests existed have no SHA-256 in meta; their bytes are hashed instead, so
the key still changes when they do.
"""

import hashlib
from pathlib import Path

from kmemtrace.trace.meta import load_meta
from kmemtrace.trace.schema import EVENTS_DIR, META_FILE


def trace_digest(path: str | Path) -> str:
    """Hex SHA-256 of ``meta.json`` (plus the bytes of parts it gives no digest for).

    Raises :class:`~kmemtrace.errors.TraceFormatError` when meta.json is missing or
    damaged, as opening the trace would."""
    path = Path(path)
    meta = load_meta(path)
    h = hashlib.sha256((path / META_FILE).read_bytes())
    for part in meta["parts"]:
        if part.get("sha256") is None:
            part_path = path / EVENTS_DIR / part["file"]
            if part_path.exists():
                with open(part_path, "rb") as fh:
                    h.update(hashlib.file_digest(fh, "sha256").digest())
    return h.hexdigest()
