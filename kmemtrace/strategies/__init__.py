"""The strategy registry: ``--strategy`` choices, ``--list-strategies``, help and errors."""

from kmemtrace.errors import UsageError
from kmemtrace.params import resolve_params
from kmemtrace.strategies import current, objcg, reparent, way1, way2, way3, way4
from kmemtrace.strategies.base import Strategy

REGISTRY: dict[str, Strategy] = {
    mod.STRATEGY.name: mod.STRATEGY
    for mod in (current, way1, way2, way3, way4, reparent, objcg)
}


def get_strategy(name: str) -> Strategy:
    try:
        return REGISTRY[name]
    except KeyError:
        raise UsageError(
            f"unknown strategy {name!r} (strategies: {', '.join(REGISTRY)}, or 'all')"
        ) from None


def select(names: str, raw_params: dict[str, str]) -> list[tuple[Strategy, dict]]:
    """``'all'`` or a comma list -> [(strategy, resolved params)].

    A ``--param`` applies to every selected strategy that declares it; one no selected
    strategy declares is an error.
    """
    chosen = list(REGISTRY.values()) if names == "all" else [
        get_strategy(n.strip()) for n in names.split(",") if n.strip()
    ]
    if not chosen:
        raise UsageError("--strategy is empty (strategies: " + ", ".join(REGISTRY) + ")")
    declared = {p.name for s in chosen for p in s.params}
    for name in raw_params:
        if name not in declared:
            owners = ", ".join(s.name for s in chosen)
            raise UsageError(f"no selected strategy ({owners}) has a parameter {name!r}")
    out = []
    for s in chosen:
        mine = {k: v for k, v in raw_params.items() if k in {p.name for p in s.params}}
        out.append((s, resolve_params(f"strategy {s.name}", s.params, mine)))
    return out
