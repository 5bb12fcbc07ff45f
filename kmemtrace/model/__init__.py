"""The SLUB allocator model the replay runs on (struct-of-arrays, compiled with numba).

Where compiled code is cached: numba checks only the timestamp of the file that defines a
function, not the constants and helpers it imports from other files (the field indices in
``state.py``, the decisions in ``replay/policy.py``). A stale cache would replay with old
constants. So the cache lives in a folder named after a hash of every source the compiled
code depends on, in the user's cache directory (a temporary one if that is not writable),
set in numba's config (not in the environment, so child processes of another user
do not inherit a folder they cannot write). An explicit ``NUMBA_CACHE_DIR`` wins.
"""

import hashlib
import os
import tempfile
from pathlib import Path

from numba.core import config as numba_config

_PKG = Path(__file__).resolve().parent.parent
_COMPILED_SOURCES = ("model", "replay", "trace/schema.py")


def _sources_digest() -> str:
    h = hashlib.sha256()
    for entry in _COMPILED_SOURCES:
        path = _PKG / entry
        for f in sorted(path.glob("*.py")) if path.is_dir() else [path]:
            h.update(f.name.encode())
            h.update(f.read_bytes())
    return h.hexdigest()[:16]


def _cache_root() -> Path:
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "kmemtrace"
    try:
        base.mkdir(parents=True, exist_ok=True)
        if os.access(base, os.W_OK):
            return base
    except OSError:
        pass
    return Path(tempfile.gettempdir()) / f"kmemtrace-{os.getuid()}"


if not os.environ.get("NUMBA_CACHE_DIR"):
    numba_config.CACHE_DIR = str(_cache_root() / "numba" / _sources_digest())
