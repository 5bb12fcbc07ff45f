"""The slab sampler's cost per round on this host: ``python benchmarks/sampler_cost.py
[--rounds 30]``.

A round reads every real cache directory of /sys/kernel/slab (kmemtrace/record/sysfs.py):
``slabs`` and ``objects`` in every round, and ``cpu_slabs``, ``partial`` and
``objects_partial`` too in the first round and every ``CPU_FIELDS_EVERY``-th after it
(kmemtrace/record/sampler.py). Prints the median ms per round of the old reads (two files,
``sample_slabs``), of a round without and with the CPU fields (``sample_slab_rows``), the
ratio, and the mean per round at the sampler's rate. Rounds of the three kinds are
interleaved so load drifts hit all alike. Take ``flock /work/bench.lock`` on a shared host.
"""

import argparse
import os
import statistics
import time

from kmemtrace.record import sysfs
from kmemtrace.record.sampler import CPU_FIELDS_EVERY


def _ms(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return (time.perf_counter() - t0) * 1e3


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--rounds", type=int, default=30)
    args = ap.parse_args()
    caches = sysfs.read_caches()
    old, bare, full = [], [], []
    for _ in range(args.rounds):
        old.append(_ms(lambda: sysfs.sample_slabs(caches)))
        bare.append(_ms(lambda: sysfs.sample_slab_rows(caches, cpu_fields=False)))
        full.append(_ms(lambda: sysfs.sample_slab_rows(caches, cpu_fields=True)))
    o, b, f = (statistics.median(x) for x in (old, bare, full))
    mean = (f + (CPU_FIELDS_EVERY - 1) * b) / CPU_FIELDS_EVERY
    print(f"caches {len(caches)}, rounds {args.rounds}, load {os.getloadavg()[0]:.2f}")
    print(f"ms/round median: old (slabs, objects) {o:.1f}; new without CPU fields {b:.1f}; "
          f"with them {f:.1f} ({f / b:.2f}x)")
    print(f"ms/round mean at 1 round in {CPU_FIELDS_EVERY} with CPU fields: {mean:.1f} "
          f"({mean / o:.2f}x the old)")


if __name__ == "__main__":
    main()
