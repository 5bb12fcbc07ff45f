"""Draining the BPF ring buffer in bulk, and the perf-buffer fallback.

Why not BCC's callback: it costs ~0.86 µs of Python per record, tops out near 1.2 M
records/s and drops 25-54 % once both cores are busy (research/limits.md, B). Instead we
mmap the ring ourselves: every record is the same size, so the span between the consumer and
producer positions is a regular array of (8-byte header, record) slots. One numpy view takes
all committed records at once; the slab stream decodes them into trace columns straight from
that view (their only copy) before we advance the consumer position. The BPF
side submits with BPF_RB_NO_WAKEUP, and we poll on a timer, so producers never pay for
wakeups either.

Kernel layout (kernel/bpf/ringbuf.c): page 0 is the consumer position (writable by us),
page 1 the producer position, then the data pages mapped twice in a row so that a record
that wraps around the end is still contiguous in our mapping.

The slab ring holds per-CPU batches (``struct kmt_batch``: a count and KMT_BATCH event
slots), still all of one size: one boolean mask over the span's (batches x slots) view picks
the events in use. Events a CPU could not stage come one by one through a second ring of
bare events; :class:`BatchedRing` drains both, and :class:`CpuFlusher` makes every CPU hand
over the batches it is still holding (bpf/kmemtrace.bpf.c explains the design).
"""

import ctypes
import mmap
import os
from collections.abc import Callable
from pathlib import Path

import numpy as np

from kmemtrace.errors import KernelSupportError
from kmemtrace.record.events import BATCH_DTYPE, EVENT_DTYPE, K

BUSY_BIT = 1 << 31
DISCARD_BIT = 1 << 30
HDR_SIZE = 8


class MmapRing:
    """Bulk consumer of a BPF ring buffer holding only ``record`` -sized records."""

    def __init__(self, map_fd: int, data_size: int, record: np.dtype):
        if data_size & (data_size - 1):
            raise ValueError("ring buffer size must be a power of two")
        page = mmap.PAGESIZE
        self._cons_map = mmap.mmap(map_fd, page, mmap.MAP_SHARED,
                                   mmap.PROT_READ | mmap.PROT_WRITE, offset=0)
        self._prod_map = mmap.mmap(map_fd, page + 2 * data_size, mmap.MAP_SHARED,
                                   mmap.PROT_READ, offset=page)
        self._cons = np.frombuffer(self._cons_map, dtype=np.uint64, count=1)
        self._prod = np.frombuffer(self._prod_map, dtype=np.uint64, count=1)
        self._data = np.frombuffer(self._prod_map, dtype=np.uint8, offset=page)
        self._mask = data_size - 1
        self.record = record
        self._empty = np.empty(0, record)
        self._slot = (HDR_SIZE + record.itemsize + 7) & ~7
        self._slot_dtype = np.dtype({"names": ["len", "rec"], "formats": ["<u4", record],
                                     "offsets": [0, HDR_SIZE], "itemsize": self._slot})
        self.lost = 0  # not a ring concept: kept for the Transport interface

    def drain(self) -> np.ndarray:
        """All records committed so far, oldest first, as a fresh array."""
        out = self.drain_with(np.copy)
        return self._empty if out is None else out

    def drain_with(self, convert: Callable[[np.ndarray], object]):
        """``convert`` applied to a view of all records committed so far, oldest first, or
        None if there are none; the slots are handed back to the kernel after it returns,
        so it must copy what it keeps (then nothing is copied twice)."""
        cons = int(self._cons[0])
        n = (int(self._prod[0]) - cons) // self._slot
        if n <= 0:
            return None  # the drain loop mostly finds nothing: keep that cheap
        start = cons & self._mask
        slots = self._data[start:start + n * self._slot].view(self._slot_dtype)
        lens = slots["len"]
        busy = (lens & BUSY_BIT) != 0
        if busy.any():  # a producer reserved this slot but has not committed it yet
            n = int(np.argmax(busy))
            slots, lens = slots[:n], lens[:n]
        sizes = lens & ~np.uint32(BUSY_BIT | DISCARD_BIT)
        if n and not (sizes == self.record.itemsize).all():
            raise KernelSupportError(
                "BPF ring buffer holds a record of unexpected size; bpf/kmemtrace.h and "
                "kmemtrace/record/events.py disagree")
        keep = (lens & DISCARD_BIT) == 0
        recs = slots["rec"]
        out = convert(recs if keep.all() else recs[keep])
        self._cons[0] = cons + n * self._slot
        return out

    def close(self) -> None:
        del self._cons, self._prod, self._data
        self._cons_map.close()
        self._prod_map.close()


def unbatch(batches: np.ndarray) -> np.ndarray:
    """The events in use of an array of kmt_batch records, as one fresh event array."""
    in_use = np.arange(K["KMT_BATCH"], dtype=np.uint32) < batches["count"][:, None]
    return batches["ev"][in_use]


# Above this many partial batches in a span, it is unbatched in one copy rather than cut
# into runs of full ones (a span of mostly partial batches is a low rate: cost is moot).
MAX_PARTIAL_CUTS = 16


def event_views(batches: np.ndarray) -> list[np.ndarray]:
    """The events in use of an array of kmt_batch records: each run of full batches as a
    (batches x KMT_BATCH) view of the records themselves, the few partial batches as one
    fresh 1-D event array. Why: taking the events out with one boolean mask copies them one
    40-byte item at a time (~24 ns/event measured, more than decoding them, ~9 ns/event
    from such a view); at a high rate nearly every batch is full."""
    full = batches["count"] == K["KMT_BATCH"]
    partial = np.flatnonzero(~full)
    if len(partial) > MAX_PARTIAL_CUTS:
        return [unbatch(batches)]
    views, start = [], 0
    for end in [*partial.tolist(), len(batches)]:
        if end > start:
            views.append(batches["ev"][start:end])
        start = end + 1
    if len(partial):
        views.append(unbatch(batches[partial]))
    return views


class BatchedRing:
    """The slab stream of the ring-buffer transport: the batch ring and the singles ring."""

    def __init__(self, batch_fd: int, batch_size: int, single_fd: int, single_size: int):
        self.batches = MmapRing(batch_fd, batch_size, BATCH_DTYPE)
        self.singles = MmapRing(single_fd, single_size, EVENT_DTYPE)
        self.record = EVENT_DTYPE
        self.lost = 0

    def drain_with(self, convert: Callable[[list[np.ndarray]], object]):
        """``convert`` (pieces of records -> columns it owns) of every event handed over so
        far, in one call, or None if there are none. The pieces are those of
        :func:`event_views` and the singles, in no particular order (the writer sorts);
        mostly the events in the ring itself, 1-D or (batches x KMT_BATCH), so that
        decoding them is their only copy. One call per poll rather than one per piece:
        a poll had 2.6 pieces on average, each a decode's fixed cost and a queue entry."""

        def with_batches(batches: np.ndarray):
            views = event_views(batches)
            out = self.singles.drain_with(lambda single: convert([*views, single]))
            return convert(views) if out is None else out

        out = self.batches.drain_with(with_batches)
        return self.singles.drain_with(lambda single: convert([single])) if out is None else out

    def close(self) -> None:
        self.batches.close()
        self.singles.close()


BPF_PROG_TEST_RUN = 10
BPF_F_TEST_RUN_ON_CPU = 1
SYS_BPF = {"x86_64": 321, "aarch64": 280}


class _TestRunAttr(ctypes.Structure):
    """The BPF_PROG_TEST_RUN member of union bpf_attr (include/uapi/linux/bpf.h, 5.10+)."""

    _fields_ = [("prog_fd", ctypes.c_uint32), ("retval", ctypes.c_uint32),
                ("data_size_in", ctypes.c_uint32), ("data_size_out", ctypes.c_uint32),
                ("data_in", ctypes.c_uint64), ("data_out", ctypes.c_uint64),
                ("repeat", ctypes.c_uint32), ("duration", ctypes.c_uint32),
                ("ctx_size_in", ctypes.c_uint32), ("ctx_size_out", ctypes.c_uint32),
                ("ctx_in", ctypes.c_uint64), ("ctx_out", ctypes.c_uint64),
                ("flags", ctypes.c_uint32), ("cpu", ctypes.c_uint32),
                ("batch_size", ctypes.c_uint32), ("_pad", ctypes.c_uint32)]


def online_cpus(path: Path = Path("/sys/devices/system/cpu/online")) -> list[int]:
    """The online CPUs, from the kernel's range list ("0-3,6")."""
    cpus = []
    for part in path.read_text().strip().split(","):
        lo, _, hi = part.partition("-")
        cpus.extend(range(int(lo), int(hi or lo) + 1))
    return cpus


class CpuFlusher:
    """Runs the ``kmt_flush`` program on each CPU (BPF_PROG_TEST_RUN with
    BPF_F_TEST_RUN_ON_CPU: in an IPI on that CPU, no attachment needed). BCC has no wrapper
    for it, so the syscall is made here."""

    def __init__(self, prog_fd: int, cpus: list[int] | None = None):
        nr = SYS_BPF.get(os.uname().machine)
        if nr is None:
            raise KernelSupportError(f"no bpf() syscall number known for {os.uname().machine}")
        self._nr = nr
        self._libc = ctypes.CDLL(None, use_errno=True)
        self._prog_fd = prog_fd
        self.cpus = online_cpus() if cpus is None else cpus
        self._args = (ctypes.c_uint64 * 1)()

    def run(self, cpu: int, min_age_ns: int) -> int:
        """Hand over CPU ``cpu``'s batches at least ``min_age_ns`` old; returns how many
        non-empty buffers were busy (a program was writing them) and so were skipped."""
        self._args[0] = min_age_ns
        attr = _TestRunAttr(prog_fd=self._prog_fd, ctx_size_in=ctypes.sizeof(self._args),
                            ctx_in=ctypes.addressof(self._args),
                            flags=BPF_F_TEST_RUN_ON_CPU, cpu=cpu)
        if self._libc.syscall(self._nr, BPF_PROG_TEST_RUN, ctypes.byref(attr),
                              ctypes.sizeof(attr)) < 0:
            err = ctypes.get_errno()
            raise KernelSupportError(f"cannot run the batch flush on CPU {cpu}: "
                                     f"{os.strerror(err)}",
                                     tip="BPF_F_TEST_RUN_ON_CPU needs Linux 5.10+; "
                                         "use --transport perf")
        return attr.retval

    def flush(self, min_age_ns: int = 0) -> int:
        """Run on every CPU; returns the busy buffers skipped in all."""
        return sum(self.run(cpu, min_age_ns) for cpu in self.cpus)


class PerfTransport:
    """Fallback for kernels without BPF ring buffers (< 5.8): BCC perf buffers.

    The callback only appends bytes; conversion to records happens in bulk in drain().
    """

    def __init__(self, table, record: np.dtype, page_cnt: int):
        self.record = record
        self._chunks: list[bytes] = []
        self.lost_by_cpu: dict[int, int] = {}
        self.lost = 0

        def on_event(_cpu, data, _size):
            # perf pads raw samples to 8 bytes after its u32 size: take the record only
            self._chunks.append(ctypes.string_at(data, record.itemsize))

        def on_lost(*args):
            # BCC passes (count) or (cpu, count) depending on version.
            count = args[-1]
            cpu = args[0] if len(args) > 1 else 0
            self.lost_by_cpu[cpu] = self.lost_by_cpu.get(cpu, 0) + count
            self.lost += count

        self._cb = on_event
        table.open_perf_buffer(on_event, page_cnt=page_cnt, lost_cb=on_lost)

    def drain(self) -> np.ndarray:
        if not self._chunks:
            return np.empty(0, self.record)
        blob, self._chunks = b"".join(self._chunks), []
        return np.frombuffer(blob, dtype=self.record).copy()

    def drain_with(self, convert: Callable[[list[np.ndarray]], object]):
        """As :meth:`BatchedRing.drain_with`: the records gathered since the last call."""
        recs = self.drain()
        return convert([recs]) if len(recs) else None

    def close(self) -> None:
        self._chunks = []
