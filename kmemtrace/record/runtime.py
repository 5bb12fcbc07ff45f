"""The recorder process's own costs: memory reuse, garbage collection, thread names.

Profiled with ``perf record -a`` while recording two pinned slab-hammer copies (``eventfd``
mode, this 2-vCPU 6.18 VM): of the recorder's CPU, ~25 % was the kernel zeroing fresh pages
on faults (2 MiB transparent huge pages) and ~18 % Python's cyclic garbage collector walking
the objects that BCC, pyarrow and numpy create at import. Neither does any work for the
trace. :func:`settle` stops both once set-up is over.

Heap reuse alone did not stop the faults: glibc unmaps a writer-thread heap (64 MiB) as
soon as it is empty, which happens after every part, and numpy asks for huge pages on
arrays >= 4 MiB, so each part's columns were zeroed afresh in 2 MiB pages. Measured with
two eventfd hammer copies, 8 s, ~6 M events (/proc/PID/stat of the recorder, load ~5):
334-345 ns of recorder CPU per event (127 of them in the kernel) with transparent huge
pages, 279 ns (62 in the kernel) without. Hence THP is off for the recorder process.
"""

import ctypes
import ctypes.util
import gc

import pyarrow as pa

PR_SET_THP_DISABLE = 41  # linux/prctl.h; inherited by children: see inmemcg.spawn
# glibc malloc.h
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
# glibc's ceiling for M_MMAP_THRESHOLD on 64-bit (DEFAULT_MMAP_THRESHOLD_MAX): blocks up to
# this size come from the heap, so freed drain and part buffers are reused, not re-faulted
MMAP_THRESHOLD = 32 << 20
TRIM_THRESHOLD = 1 << 30  # keep up to 1 GiB of freed heap instead of returning it


def settle() -> None:
    """After set-up: freeze the objects that exist (the collector never walks them again),
    and keep freed heap memory for reuse. pyarrow is moved to glibc malloc too: its own
    allocator (mimalloc or jemalloc, per build) purges freed pages on its own timer."""
    gc.collect()
    gc.freeze()
    libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
    if hasattr(libc, "mallopt"):
        libc.mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD)
        libc.mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD)
    pa.set_memory_pool(pa.system_memory_pool())
    libc.prctl(PR_SET_THP_DISABLE, 1, 0, 0, 0)


def name_thread(name: str) -> None:
    """The calling thread's name as ps, top and perf show it (Linux: at most 15 bytes)."""
    libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
    libc.prctl(15, name.encode()[:15], 0, 0, 0)  # PR_SET_NAME
