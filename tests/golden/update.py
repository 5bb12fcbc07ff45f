"""Regenerate the golden metrics of every fixture. Run only on purpose, after a change
that is meant to move the numbers, and say why in the commit:

    python tests/golden/update.py
"""

import json
from pathlib import Path

from kmemtrace.metrics import compute_metrics
from kmemtrace.replay.engine import replay
from kmemtrace.strategies import select
from kmemtrace.trace.reader import open_trace

ROOT = Path(__file__).resolve().parents[2]
FIXTURES = ("default", "long-tail", "steady")
VOLATILE = ("loop_seconds",)  # timings, not results


def golden_metrics(fixture: str) -> dict[str, dict]:
    trace = open_trace(ROOT / "fixtures" / fixture)
    runs = replay(trace, select("all", {})).runs
    out = {}
    for run in runs:
        d = compute_metrics(run).to_dict()
        for key in VOLATILE:
            d.pop(key)
        out[run.strategy.name] = d
    return out


def main() -> None:
    for fixture in FIXTURES:
        path = Path(__file__).parent / f"{fixture}.json"
        path.write_text(json.dumps(golden_metrics(fixture), indent=1, sort_keys=True) + "\n")
        print(f"wrote {path}")


if __name__ == "__main__":
    main()
