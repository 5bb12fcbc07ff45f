"""kmemtrace's recorder with nowhere to put its rows: a benchmark hook for probe_floor.py.

Run as root:  .venv/bin/python benchmarks/record_discard.py [--no-decode]

The whole BPF side of ``kmemtrace record --all-objects`` (attribution, cache lookups, twins,
per-CPU batches, flushes of idle CPUs) and its drain loop, but no writer: the decoded
columns go to the ``NoWriter`` of ``kmemtrace top`` and are dropped. ``--no-decode`` goes
one step further: the drain loop takes every committed batch off the ring and hands the
slots back without decoding them (it only counts the events). Against probe_floor's
``floor_drain`` (the transport alone, drained and discarded) and ``kmemtrace`` (the whole
recorder), the two split what the recorder costs into: attribution in BPF, decoding, and
the writer. Prints ``discarding`` once attached, ``events N`` (taken off the ring so far) at
each SIGUSR1, and ``events N lost M`` at SIGINT.
"""

import argparse
import signal
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from kmemtrace.record.recorder import Recorder, RecordOptions, prepare
from kmemtrace.trace.schema import EventKind

_NO_ROWS = np.empty(0, np.int64)


class DiscardingRecorder(Recorder):
    """A recorder without a trace (``output=None``); ``decode=False``: not even columns."""

    decode = True

    def _decode(self, pieces: list[np.ndarray]):
        if self.decode:
            return super()._decode(pieces)
        self.events += sum(p.size for p in pieces)
        return {"ts_ns": _NO_ROWS}, None


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--no-decode", action="store_true",
                    help="take the records off the ring without decoding them")
    args = ap.parse_args()
    opts = RecordOptions(output=None, all_objects=True, command=["record_discard"])
    feats, header_note, _ = prepare(opts)
    rec = DiscardingRecorder(opts, feats, header_note)
    rec.decode = not args.no_decode
    rec.start()
    lost = []  # the LOST rows stop() appends, as a trace would hold them

    def tap(cols: dict[str, np.ndarray]) -> None:
        if "kind" in cols:
            lost.append(int(cols["aux"][cols["kind"] == EventKind.LOST].sum()))

    rec.taps.append(tap)

    def stop(_sig, _frame):
        rec.stop_requested = True

    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGUSR1, lambda _sig, _frame: print(
        f"events {rec.events}", file=sys.stderr, flush=True))
    print("discarding", file=sys.stderr, flush=True)
    try:
        rec.run(lambda: False)
    finally:
        rec.stop()
    print(f"events {rec.events} lost {sum(lost)}", file=sys.stderr, flush=True)


if __name__ == "__main__":
    main()
