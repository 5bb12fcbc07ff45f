"""What the always-on read checks and the writer's digest cost, per part.

    python benchmarks/read_checks.py [--events 4M] [--repeat 5]

Writes a synthetic trace (parts of 2 M rows, as a recording seals them), then prints the
median over ``--repeat`` runs of: reading every part with the replay's columns (page CRCs
and row checks included), the row checks alone on the same columns, the page CRC
verification (read with it minus without), and the SHA-256 the writer computes per
sealed part; with the checks' share of the read. Quote medians and
ratios: the machines are noisy.
"""

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import pyarrow.parquet as pq

from kmemtrace.params import parse_count
from kmemtrace.synth import synthesize, write_synthesis
from kmemtrace.trace.reader import open_trace
from kmemtrace.trace.rowcheck import CHECKED, check_rows
from kmemtrace.trace.schema import EVENTS_DIR
from kmemtrace.trace.writer import part_digest

REPLAY_COLUMNS = ["ts_ns", "kind", "cpu", "ptr", "cache_id", "memcg_id", "gfp", "aux", "aux2"]


def _median(fn, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--events", default="4M")
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="kmt-bench-") as tmp:
        path = Path(tmp) / "trace"
        synthesis, params = synthesize("container-churn", seed=1,
                                       n_events=parse_count(args.events), raw_params={})
        write_synthesis(path, synthesis, workload="container-churn", seed=1, params=params)
        reader = open_trace(path)
        rows = reader.n_events
        parts = reader.meta["parts"]
        cols = [dict(c) for c in reader.iter_parts(list(CHECKED))]

        def read() -> None:
            for _ in reader.iter_parts(REPLAY_COLUMNS):
                pass

        def checks() -> None:
            for part, c in zip(parts, cols, strict=True):
                check_rows(path / EVENTS_DIR / part["file"], part, c, len(reader.caches))

        def crc(verify: bool):
            def read_parts() -> None:
                for part in parts:
                    pq.read_table(path / EVENTS_DIR / part["file"], columns=REPLAY_COLUMNS,
                                  page_checksum_verification=verify)
            return read_parts

        def digests() -> None:
            for part in parts:
                part_digest(path / EVENTS_DIR / part["file"])

        t_read = _median(read, args.repeat)
        t_checks = _median(checks, args.repeat)
        t_digest = _median(digests, args.repeat)
        # Alternate with and without, so that cache warmth and load drift hit both alike.
        pairs = [(_median(crc(True), 1), _median(crc(False), 1)) for _ in range(args.repeat)]
        t_crc = statistics.median(on - off for on, off in pairs)
        size = sum(p["bytes"] for p in parts) / 1e6
        print(f"{rows:,} events in {len(parts)} parts, {size:.1f} MB")
        print(f"read (replay columns, checks included): {t_read:.3f} s "
              f"({rows / t_read / 1e6:.1f} M events/s)")
        print(f"row checks alone:                       {t_checks:.3f} s "
              f"({t_checks / t_read:.1%} of the read)")
        print(f"page CRC verification:                  {t_crc:.3f} s "
              f"({t_crc / t_read:.1%} of the read)")
        print(f"SHA-256 of every part (writer):         {t_digest:.3f} s "
              f"({size / t_digest:.0f} MB/s)")


if __name__ == "__main__":
    main()
