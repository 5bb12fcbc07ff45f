"""The recorder process's own costs: page zeroing, garbage collection, thread names.

Profiled with ``perf record`` while recording two pinned slab-hammer copies (``eventfd``
mode, this 2-vCPU 6.18 VM): of the recorder's CPU, ~25 % was the kernel zeroing fresh pages
on faults, in 2 MiB transparent huge pages, and ~18 % Python's cyclic garbage collector
walking the objects that BCC, pyarrow and numpy create at import. Neither does any work for
the trace. :func:`settle` stops both once set-up is over.

Where the fresh pages come from: each sealed part frees ~300 MB of columns, glibc unmaps a
thread's heap (64 MiB) as soon as it is empty (strace: ``munmap(..., 67108864)`` per part),
and numpy asks for huge pages on arrays >= 4 MiB, so every part's columns were zeroed
afresh in 2 MiB pages. Measured with two eventfd hammer copies, 8 s, ~6 M events each run
(``/proc/PID/stat`` of the recorder, load ~5): 334-345 ns of recorder CPU per event (127 of
them in the kernel) with transparent huge pages, 279 ns (62 in the kernel) without.
"""

import ctypes
import ctypes.util
import gc
import os

PR_SET_NAME = 15  # linux/prctl.h
PR_SET_THP_DISABLE = 41  # inherited by children: see FreshMemcg.spawn
PR_GET_THP_DISABLE = 42


def _libc() -> ctypes.CDLL:
    return ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)


# The nice value and THP setting kmemtrace was started with, read at import (before the
# recorder raises its priority and turns THP off): what an --in-memcg command gets back,
# so that it runs as it would without the recorder.
CALLER_NICE = os.getpriority(os.PRIO_PROCESS, 0)
CALLER_THP_DISABLE = _libc().prctl(PR_GET_THP_DISABLE, 0, 0, 0, 0)


def settle() -> None:
    """After set-up: freeze the objects that exist (the collector never walks them again)
    and turn transparent huge pages off for this process."""
    gc.collect()
    gc.freeze()
    _libc().prctl(PR_SET_THP_DISABLE, 1, 0, 0, 0)


def name_thread(name: str) -> None:
    """The calling thread's name as ps, top and perf show it (Linux: at most 15 bytes)."""
    _libc().prctl(PR_SET_NAME, name.encode()[:15], 0, 0, 0)
