"""The Python mirror of ``bpf/kmemtrace.h``: record dtypes and the header's constants.

The constants (``KMT_K_ALLOC`` ...) are read from the header itself so they cannot drift;
the dtypes are written out here and ``tests/test_record_struct.py`` compiles the header with
gcc to check that every size and offset agrees.
"""

import re
from pathlib import Path

import numpy as np

HEADER = Path(__file__).resolve().parents[2] / "bpf" / "kmemtrace.h"


def _header_constants(path: Path = HEADER) -> dict[str, int]:
    found = {}
    for m in re.finditer(r"^#define\s+(KMT_\w+)\s+(0x[0-9a-fA-F]+|\d+)u?\b", path.read_text(),
                         re.MULTILINE):
        found[m.group(1)] = int(m.group(2), 0)
    return found


K = _header_constants()

EVENT_DTYPE = np.dtype([
    ("ts_ns", "<u8"),
    ("ptr", "<u8"),
    ("memcg_id", "<u8"),
    ("pid", "<u4"),
    ("gfp", "<u4"),
    ("size_kind", "<u4"),
    ("cache_idx", "<u2"),
    ("cpu", "<u2"),
])

# struct kmt_batch: the only record of the slab ring; ev[:count] are in use.
BATCH_DTYPE = np.dtype([
    ("count", "<u4"),
    ("pad", "<u4"),
    ("ev", EVENT_DTYPE, (K["KMT_BATCH"],)),
])

CG_EVENT_DTYPE = np.dtype([
    ("ts_ns", "<u8"),
    ("id", "<u8"),
    ("parent", "<u8"),
    ("pid", "<u4"),
    ("level", "<i4"),
    ("cpu", "<u2"),
    ("kind", "u1"),
    ("pad", "u1", (5,)),
    ("path", f"S{K['KMT_CG_PATH_LEN']}"),
])

PC_EVENT_DTYPE = np.dtype([
    ("ts_ns", "<u8"),
    ("folio", "<u8"),
    ("memcg_id", "<u8"),
    ("pages", "<i4"),
    ("cpu", "<u2"),
    ("pad", "<u2"),
])

CACHE_DTYPE = np.dtype([
    ("idx", "<u4"),
    ("size", "<u4"),
    ("flags", "<u4"),
    ("oo", "<u4"),
    ("name", f"S{K['KMT_CACHE_NAME_LEN']}"),
    ("object_size", "<u4"),
    ("pad", "<u4"),
])
