"""``--param name=value`` parsing shared by strategies and synthetic workloads.

Each strategy or workload declares its parameters as :class:`ParamSpec`; the CLI, the help
text and the unknown-name error all come from those declarations. Human units are accepted
at the edge (``2s``, ``500ms``, ``64k``) and stored in base units (ns, bytes, counts).
"""

import re
from dataclasses import dataclass
from typing import Any

from kmemtrace.errors import UsageError

_DURATION = re.compile(r"^\s*([0-9]*\.?[0-9]+)\s*(ns|us|µs|ms|s|m|min|h)?\s*$")
_NS_PER = {"ns": 1, "us": 1_000, "µs": 1_000, "ms": 1_000_000, "s": 1_000_000_000,
           "m": 60_000_000_000, "min": 60_000_000_000, "h": 3_600_000_000_000}
_COUNT = re.compile(r"^\s*([0-9]*\.?[0-9]+)\s*([kKmMgG]?)\s*$")
_MULT = {"": 1, "k": 1_000, "m": 1_000_000, "g": 1_000_000_000}


def parse_duration_ns(text: str, default_unit: str = "s") -> int:
    """``'2s'`` -> 2_000_000_000; a bare number takes ``default_unit``."""
    m = _DURATION.match(str(text))
    if not m:
        raise UsageError(f"not a duration: {text!r} (examples: 30s, 500ms, 2m)")
    return round(float(m.group(1)) * _NS_PER[m.group(2) or default_unit])


def parse_count(text: str) -> int:
    """``'10M'`` -> 10_000_000 (k, M, G are decimal)."""
    m = _COUNT.match(str(text))
    if not m:
        raise UsageError(f"not a count: {text!r} (examples: 1000, 50k, 10M)")
    return round(float(m.group(1)) * _MULT[m.group(2).lower()])


def parse_bool(text: str) -> bool:
    low = str(text).strip().lower()
    if low in ("1", "true", "yes", "on"):
        return True
    if low in ("0", "false", "no", "off"):
        return False
    raise UsageError(f"not a boolean: {text!r} (use on/off)")


_PARSERS = {
    "duration": parse_duration_ns,
    "count": parse_count,
    "int": lambda t: int(t),
    "float": lambda t: float(t),
    "bool": parse_bool,
    "str": str,
}


@dataclass(frozen=True)
class ParamSpec:
    """One tunable: its name, kind (duration/count/int/float/bool/str), default and help."""

    name: str
    kind: str
    default: Any
    help: str
    choices: tuple[str, ...] = ()

    def parse(self, text: str) -> Any:
        if self.choices and text not in self.choices:
            raise UsageError(
                f"--param {self.name}={text}: expected one of {', '.join(self.choices)}"
            )
        try:
            return _PARSERS[self.kind](text)
        except ValueError:
            raise UsageError(f"--param {self.name}={text}: not a valid {self.kind}") from None

    def describe(self) -> str:
        return f"{self.name}={self.default!s} ({self.kind}): {self.help}"


def split_params(items: list[str] | None) -> dict[str, str]:
    """``['period=2s', 'pressure=on']`` -> ``{'period': '2s', 'pressure': 'on'}``."""
    out: dict[str, str] = {}
    for item in items or []:
        name, sep, value = item.partition("=")
        if not sep or not name.strip():
            raise UsageError(f"--param {item!r}: expected name=value")
        out[name.strip()] = value.strip()
    return out


def resolve_params(owner: str, specs: tuple[ParamSpec, ...], raw: dict[str, str]) -> dict:
    """Defaults overlaid with ``raw``; unknown names are a UsageError naming the valid ones."""
    known = {s.name: s for s in specs}
    for name in raw:
        if name not in known:
            valid = ", ".join(known) or "none"
            raise UsageError(f"{owner} has no parameter {name!r} (parameters: {valid})")
    return {s.name: (s.parse(raw[s.name]) if s.name in raw else s.default) for s in specs}
