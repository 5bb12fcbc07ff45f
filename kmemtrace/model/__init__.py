"""The SLUB allocator model the replay runs on (struct-of-arrays, compiled with numba).

Compiled code is cached next to the sources. When the package directory is not writable
(a non-root user of a root-installed kmemtrace), numba would refuse to cache; point it at
a per-user folder instead, before numba is first imported.
"""

import os
import tempfile
from pathlib import Path

if "NUMBA_CACHE_DIR" not in os.environ and not os.access(Path(__file__).parent, os.W_OK):
    os.environ["NUMBA_CACHE_DIR"] = str(
        Path(tempfile.gettempdir()) / f"kmemtrace-numba-{os.getuid()}"
    )
