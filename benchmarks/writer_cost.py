"""The recorder's writer, offline: CPU per row and bytes per row on a recorded trace's events.

Run:  .venv/bin/python benchmarks/writer_cost.py TRACE [--reps 3] [--chunk 60000]

Why offline: on this shared 2-vCPU machine the writer thread's CPU in a live recording moves
with the load and the rate; here the same rows go through ``TraceWriter`` as the recorder
feeds it (chunks of ``--chunk`` rows in arrival order, i.e. by ``seq``: one 20 ms drain at
3 M events/s), so two writers or two Parquet settings compare on identical input. Prints,
per variant, the median writer CPU per row (``time.thread_time_ns``: this thread only, as
the ``kmt-writer`` thread) with its minor page faults, and the bytes per row on disk.
Variants: this checkout's ``write_parquet``, the sixth pass's (all zstd, seven dictionaries),
and for contrast every column dictionary-encoded (Arrow's default), dictionaries for all
but ``ts_ns``/``seq``/``ptr`` (the setting before BYTE_STREAM_SPLIT), plain values with no
dictionary, and BYTE_STREAM_SPLIT with no dictionary (the setting before per-column
dictionaries); all but the default delta-encode ``ts_ns`` and ``seq``. ``--only`` picks
variants by name.
"""

import argparse
import resource
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from unittest import mock

import numpy as np
import pyarrow.parquet as pq

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from kmemtrace.trace import writer as trace_writer
from kmemtrace.trace.meta import new_meta
from kmemtrace.trace.reader import open_trace
from kmemtrace.trace.schema import COLUMNS


def arrival_order(trace_dir: Path) -> dict[str, np.ndarray]:
    """Every row of the trace, in the order the recorder handed them to its writer."""
    parts = list(open_trace(trace_dir).iter_parts())
    cols = {name: np.concatenate([p[name] for p in parts]) for name in COLUMNS}
    order = np.argsort(cols["seq"], kind="stable")
    return {name: c[order] for name, c in cols.items()}


def write_all(cols: dict[str, np.ndarray], out: Path, chunk: int) -> tuple[float, int, int]:
    """(CPU ns per row, minor faults, bytes on disk) of writing ``cols`` in chunks, on a
    thread of its own as in the recorder (glibc gives threads their own heaps, which it
    unmaps when they empty: the faults differ from the main thread's)."""
    box = []
    thread = threading.Thread(target=lambda: box.append(_write_all(cols, out, chunk)))
    thread.start()
    thread.join()
    return box[0]


def _write_all(cols: dict[str, np.ndarray], out: Path, chunk: int) -> tuple[float, int, int]:
    n = len(cols["ts_ns"])
    meta = new_meta("writer_cost")
    flt0 = resource.getrusage(resource.RUSAGE_THREAD).ru_minflt
    t0 = time.thread_time_ns()
    with trace_writer.TraceWriter(out, meta, overwrite=True) as w:
        for start in range(0, n, chunk):
            w.append({name: c[start:start + chunk] for name, c in cols.items()})
    cpu = time.thread_time_ns() - t0
    flt = resource.getrusage(resource.RUSAGE_THREAD).ru_minflt - flt0
    size = sum(p["bytes"] for p in meta["parts"])
    return cpu / n, flt, size


def all_dictionary(table, path, compression):
    pq.write_table(table, path, compression=compression or "zstd", row_group_size=1 << 20,
                   write_page_checksum=True)


def dictionary_but_ts_seq_ptr(table, path, compression):
    pq.write_table(table, path, compression=compression or "zstd", row_group_size=1 << 20,
                   write_page_checksum=True,
                   use_dictionary=[c for c in table.column_names
                                   if c not in ("ts_ns", "seq", "ptr")],
                   column_encoding={c: "DELTA_BINARY_PACKED" for c in ("ts_ns", "seq")})


def sixth_pass(table, path, compression):
    """The setting before the seventh pass: zstd for every column, dictionaries on ptr,
    memcg_id, gfp, pid, ctx, aux, aux2, delta ts_ns/seq, BYTE_STREAM_SPLIT elsewhere."""
    dicts = ("ptr", "memcg_id", "gfp", "pid", "ctx", "aux", "aux2")
    pq.write_table(table, path, compression=compression or "zstd", row_group_size=1 << 20,
                   write_page_checksum=True, use_dictionary=list(dicts),
                   write_statistics=["ts_ns"],
                   column_encoding={c: "DELTA_BINARY_PACKED" if c in ("ts_ns", "seq")
                                    else "BYTE_STREAM_SPLIT"
                                    for c in table.column_names if c not in dicts})


def no_dictionary(table, path, compression):
    pq.write_table(table, path, compression=compression or "zstd", row_group_size=1 << 20,
                   write_page_checksum=True, use_dictionary=False,
                   column_encoding={c: "DELTA_BINARY_PACKED" for c in ("ts_ns", "seq")})


def bss_no_dictionary(table, path, compression):
    """The setting before per-column dictionaries: BYTE_STREAM_SPLIT for all but ts/seq."""
    pq.write_table(table, path, compression=compression or "zstd", row_group_size=1 << 20,
                   write_page_checksum=True, use_dictionary=False, write_statistics=["ts_ns"],
                   column_encoding={c: "DELTA_BINARY_PACKED" if c in ("ts_ns", "seq")
                                    else "BYTE_STREAM_SPLIT" for c in table.column_names})


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("trace", type=Path)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--chunk", type=int, default=60_000)
    ap.add_argument("--rows", type=int, default=8_000_000, help="the first ROWS rows only")
    ap.add_argument("--only", nargs="+", metavar="VARIANT",
                    help="run these variants only (e.g. 'this checkout')")
    args = ap.parse_args()
    cols = {name: c[:args.rows] for name, c in arrival_order(args.trace).items()}
    n = len(cols["ts_ns"])
    print(f"{n:,} rows from {args.trace}; load {Path('/proc/loadavg').read_text().split()[:3]}")
    variants = {"this checkout": None, "sixth pass": sixth_pass,
                "all dictionary": all_dictionary,
                "dict but ts/seq/ptr": dictionary_but_ts_seq_ptr,
                "no dictionary": no_dictionary, "BSS, no dictionary": bss_no_dictionary}
    if args.only:
        variants = {v: variants[v] for v in args.only}
    res: dict[str, list[tuple[float, int, int]]] = {v: [] for v in variants}
    with tempfile.TemporaryDirectory(prefix="kmt-writer-", dir="/var/tmp") as tmp:
        for _ in range(args.reps):
            for name, fn in variants.items():
                out = Path(tmp) / "t"
                if fn is None:
                    res[name].append(write_all(cols, out, args.chunk))
                else:
                    with mock.patch.object(trace_writer, "write_parquet", fn):
                        res[name].append(write_all(cols, out, args.chunk))
    print(f"{'variant':20} {'CPU ns/row':>10} {'faults/row':>10} {'B/row':>6}")
    for name, runs in res.items():
        print(f"{name:20} {statistics.median(r[0] for r in runs):10.1f} "
              f"{statistics.median(r[1] for r in runs) / n:10.4f} "
              f"{statistics.median(r[2] for r in runs) / n:6.2f}")


if __name__ == "__main__":
    main()
