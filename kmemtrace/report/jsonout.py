"""The comparison as JSON: exact values, the assumptions and the time series.

Named ``jsonout`` so it does not shadow the standard library's ``json``. The layout is
``{"kmemtrace_version", "trace", "era", "assumptions", "strategies", "series"}``, with
one ``StrategyMetrics.to_dict()`` per strategy and, under ``series``, a shared ``t_s``
axis (seconds since the trace's start) plus each strategy's sampled series.
"""

import json
import math

from kmemtrace import __version__
from kmemtrace.report.assumptions import assumptions
from kmemtrace.report.comparison import Comparison


def to_json(cmp: Comparison) -> dict:
    f = cmp.facts
    return {
        "kmemtrace_version": __version__,
        "trace": {"path": f.path, "source": f.source, "kernel": f.kernel, "events": f.events,
                  "start_ns": f.start_ns, "end_ns": f.end_ns, "lost": f.lost,
                  "complete": f.complete},
        "era": cmp.era,
        "assumptions": assumptions(cmp.era, f.kernel_release),
        "strategies": [_json_safe(m.to_dict()) for m in cmp.metrics],
        "series": {"t_s": cmp.t_s.tolist(),
                   **{name: {k: v.tolist() for k, v in by_name.items()}
                      for name, by_name in cmp.series.items()}},
    }


def _json_safe(d: dict) -> dict:
    """A censored latency (inf, "some cache never destroyed") becomes the string "never"."""
    return {k: ("never" if isinstance(v, float) and math.isinf(v) else v) for k, v in d.items()}


def dumps(cmp: Comparison) -> str:
    # allow_nan=False: a NaN would make the file unreadable to strict JSON parsers, so
    # fail loudly here instead.
    return json.dumps(to_json(cmp), indent=1, allow_nan=False) + "\n"
