"""An independent reference for the recorder: ftrace on the same kmem tracepoints.

ftrace runs no BPF, so it has none of the BPF recursion guard that skips nested probes;
a private tracefs instance keeps it out of everyone else's way. With pointer hashing off,
its text output pairs every free with the allocation of the same address. Used by the root
tests and ``benchmarks/nested_frees.py``.
"""

import collections
import re

from kmemtrace.record.probes import find_tracefs

LINE = re.compile(r"-(\d+)\s+\[\d+\].*?\s(kmem_cache_alloc|kmem_cache_free): .*?ptr=([0-9a-f]+)")


class FtraceInstance:
    """A private tracefs instance recording kmem_cache_alloc/free of one cache."""

    def __init__(self, name: str, cache: str):
        tracefs = find_tracefs()
        if tracefs is None:
            raise RuntimeError("tracefs is not mounted: mount -t tracefs nodev "
                               "/sys/kernel/tracing")
        self.dir = tracefs / "instances" / name
        self.dir.mkdir()
        self._write("trace_clock", "mono")  # bpf_ktime_get_ns's clock
        self._write("buffer_size_kb", "65536")
        self._write("options/hash-ptr", "0")
        for event in ("kmem_cache_alloc", "kmem_cache_free"):
            self._write(f"events/kmem/{event}/filter", f'name == "{cache}"')
            self._write(f"events/kmem/{event}/enable", "1")

    def _write(self, rel: str, value: str) -> None:
        (self.dir / rel).write_text(value)

    def stop(self) -> tuple[str, int]:
        """Turn tracing off; the text and the events the instance itself dropped."""
        self._write("tracing_on", "0")
        text = (self.dir / "trace").read_text()
        dropped = 0
        for stats in self.dir.glob("per_cpu/cpu*/stats"):
            for line in stats.read_text().splitlines():
                if line.startswith(("overrun:", "dropped events:")):
                    dropped += int(line.split(":")[1])
        return text, dropped

    def remove(self) -> None:
        for event in ("kmem_cache_alloc", "kmem_cache_free"):
            self._write(f"events/kmem/{event}/enable", "0")
        self.dir.rmdir()


def frees_of_workload_objects(text: str, pid: int) -> collections.Counter:
    """Per pointer, ftrace's frees of objects that ``pid`` allocated (alloc, then its free)."""
    live: set[int] = set()
    freed: collections.Counter = collections.Counter()
    for m in LINE.finditer(text):
        tid, event, ptr = int(m.group(1)), m.group(2), int(m.group(3), 16)
        if event == "kmem_cache_alloc":
            if tid == pid:
                live.add(ptr)
        elif ptr in live:
            live.discard(ptr)
            freed[ptr] += 1
    return freed
