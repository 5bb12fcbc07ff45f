"""Number and parameter formatting, and which value in a row is best.

Shared by the rich table and the plain text so both print the same strings; JSON keeps
the exact values.
"""

import math
from numbers import Integral

from kmemtrace.metrics import field_info, metric_fields
from kmemtrace.params import ParamSpec
from kmemtrace.strategies import REGISTRY

MISSING = "–"  # a metric that does not apply (no destroys: no latency)
NEVER = "never"  # a censored latency: some dead cache was never destroyed
_SUFFIXES = ("", "k", "M", "G", "T")

# Rows where less is plainly better; caches_created/destroyed and the trace group describe
# the workload rather than judge a strategy, and the objcg stock rate has a single value.
_UNRANKED = {"caches_created", "caches_destroyed", "objcg_stock_hit_pct",
             "memcg_stock_hit_pct", "destroyed_at_offline",
             "destroyed_later"}
_RANKED_GROUPS = ("footprint", "stranded", "waste", "metadata", "dying", "destroy",
                  "instances", "cost", "safety")
LOWER_IS_BETTER = frozenset(
    name for group in _RANKED_GROUPS for name in metric_fields(group) if name not in _UNRANKED
)


def humanise(value) -> str:
    """Three significant digits with a k/M/G suffix: 12345 -> '12.3k', None -> '–'."""
    if value is None:
        return MISSING
    if isinstance(value, Integral) and abs(value) < 1000:
        return str(int(value))
    v = float(value)
    if math.isinf(v):
        return NEVER
    if v == 0 or math.isnan(v):
        return f"{v:g}"
    scale = 0
    while abs(v) >= 999.5 and scale < len(_SUFFIXES) - 1:
        v /= 1000
        scale += 1
    return f"{v:.3g}{_SUFFIXES[scale]}"


def best_columns(name: str, metrics) -> set[int]:
    """Indices of the strategies with the row's best value; none if unranked or all equal."""
    if name not in LOWER_IS_BETTER:
        return set()
    values = [getattr(m, name) for m in metrics]
    present = [v for v in values if v is not None]
    if len(set(present)) < 2:
        return set()
    low = min(present)
    return {i for i, v in enumerate(values) if v is not None and v == low}


def unit(name: str) -> str:
    return field_info(name)["unit"]


def param_value(spec: ParamSpec | None, value) -> str:
    """A parameter as a user would type it: durations in s, booleans on/off."""
    if spec is not None and spec.kind == "duration":
        return f"{value / 1e9:g}s"
    if isinstance(value, bool):
        return "on" if value else "off"
    return str(value)


def params_text(strategy: str, params: dict) -> str:
    """``period=2s pressure=off`` for one strategy's resolved parameters."""
    specs = {p.name: p for p in REGISTRY[strategy].params} if strategy in REGISTRY else {}
    return " ".join(f"{k}={param_value(specs.get(k), v)}" for k, v in params.items())


def params_line(metrics) -> str:
    """``way2 period=2s pressure=off; way4 drop_empty=off``: the strategies that have any."""
    return "; ".join(f"{m.strategy} {p}" for m in metrics if (p := params_text(m.strategy,
                                                                                m.params)))
