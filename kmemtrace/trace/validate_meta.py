"""One schema for ``meta.json``, checked in one place before anything reads a field.

Why here and not at each use: a damaged or hand-written meta.json used to fail wherever a
field was first touched (a ``KeyError`` in replay, a ``TypeError`` in ``info``), or worse,
was quietly accepted and gave different numbers. Every reader goes through ``load_meta``,
which calls :func:`check_meta`: a wrong field is one sentence naming the field, and an
optional field that is absent gets its documented default, so later code may index freely.

The checks are the ones a replay's numbers depend on: the part list (names, row counts,
time ranges in order, no duplicates), the cache table (ids, and a slab geometry SLUB could
have: ``objs_per_slab * size`` fits in ``PAGE_SIZE << order``), the clock, the CPU count.
"""

from typing import Any

from kmemtrace.errors import TraceFormatError

PAGE_SIZE = 4096
MAX_ORDER = 10  # SLUB never allocates slabs above MAX_PAGE_ORDER (10 on x86-64)
# CLOCK_MONOTONIC is time since boot: 2^60 ns is 36 years. Anything above is damage, and
# would overflow the model's page-nanosecond integrals.
MAX_TS_NS = 1 << 60
# A recorder reads the clock after its probes are attached, so events already in flight are
# stamped a little earlier (30-104 ms seen). More than this before start_ns is damage.
EARLY_EVENTS_NS = 1_000_000_000
CACHE_INTS = ("size", "objs_per_slab", "order")
# Absent or null: the model derives them (object_size = size; the era's partial budgets).
CACHE_OPTIONAL_INTS = ("object_size", "min_partial", "cpu_partial")


def _type_name(value: Any) -> str:
    return "null" if value is None else type(value).__name__


def _fail(field: str, expected: str, value: Any) -> TraceFormatError:
    shown = repr(value)
    shown = shown if len(shown) <= 40 else shown[:37] + "..."
    return TraceFormatError(f"meta.json field {field}: expected {expected}, "
                            f"got {_type_name(value)} {shown}")


def _int(obj: dict, key: str, field: str, *, lo: int | None = None, hi: int | None = None,
         null: bool = False) -> int | None:
    value = obj.get(key)
    if value is None and null:
        return None
    # bool is an int subclass in Python, but true is not a row count.
    if not isinstance(value, int) or isinstance(value, bool):
        raise _fail(field, "an integer" + (" or null" if null else ""), value)
    if (lo is not None and value < lo) or (hi is not None and value > hi):
        bounds = f"{lo if lo is not None else '-inf'}..{hi if hi is not None else 'inf'}"
        raise _fail(field, f"an integer in {bounds}", value)
    return value


def _typed(meta: dict, key: str, kind: type, default: Any) -> Any:
    """An optional top-level field: absent gets ``default``, present must be ``kind``."""
    if key not in meta:
        meta[key] = default
    elif not isinstance(meta[key], kind):
        raise _fail(key, {dict: "an object", list: "a list", str: "a string",
                          bool: "true or false"}[kind], meta[key])
    return meta[key]


def _items(meta: dict, key: str, *, required: bool) -> list[dict]:
    if key not in meta and required:
        raise TraceFormatError(f"meta.json field {key} is missing (see docs/trace-format.md)")
    items = _typed(meta, key, list, [])
    for i, item in enumerate(items):
        if not isinstance(item, dict):
            raise _fail(f"{key}[{i}]", "an object", item)
    return items


def check_parts(meta: dict) -> None:
    parts = _items(meta, "parts", required=True)
    seen: set[str] = set()
    prev_max = None
    for i, p in enumerate(parts):
        name = p.get("file")
        if not isinstance(name, str) or not name or "/" in name or name.startswith("."):
            raise _fail(f"parts[{i}].file", "a file name in events/", name)
        if name in seen:
            raise TraceFormatError(f"meta.json field parts[{i}].file: {name} is listed twice")
        seen.add(name)
        _int(p, "rows", f"parts[{i}].rows", lo=0)
        ts_min = _int(p, "ts_min", f"parts[{i}].ts_min", lo=0, hi=MAX_TS_NS)
        ts_max = _int(p, "ts_max", f"parts[{i}].ts_max", lo=ts_min, hi=MAX_TS_NS)
        if "bytes" in p:
            _int(p, "bytes", f"parts[{i}].bytes", lo=0)
        sha = p.get("sha256")
        if sha is not None and not (isinstance(sha, str) and len(sha) == 64
                                    and all(ch in "0123456789abcdef" for ch in sha)):
            raise _fail(f"parts[{i}].sha256", "64 lower-case hex digits", sha)
        if not isinstance(p.setdefault("page_checksums", False), bool):
            raise _fail(f"parts[{i}].page_checksums", "true or false", p["page_checksums"])
        if prev_max is not None and ts_min < prev_max:
            raise TraceFormatError(
                f"meta.json field parts[{i}]: {name} starts at {ts_min} ns, before "
                f"parts[{i - 1}] ends ({prev_max} ns); parts are listed in time order and "
                "never overlap")
        prev_max = ts_max


def check_caches(meta: dict) -> None:
    for i, c in enumerate(_items(meta, "caches", required=True)):
        field = f"caches[{i}]"
        _int(c, "id", f"{field}.id", lo=i, hi=i)
        if not isinstance(c.get("name"), str):
            raise _fail(f"{field}.name", "a string", c.get("name"))
        for key in CACHE_INTS:
            _int(c, key, f"{field}.{key}", lo=0)
        for key in CACHE_OPTIONAL_INTS:
            _int(c, key, f"{field}.{key}", lo=0, null=True)
        if c["size"] < 1 or c["objs_per_slab"] < 1 or c["order"] > MAX_ORDER:
            raise TraceFormatError(
                f"meta.json field {field} ({c['name']}): impossible slab geometry size="
                f"{c['size']} objs_per_slab={c['objs_per_slab']} order={c['order']}")
        if c["objs_per_slab"] * c["size"] > PAGE_SIZE << c["order"]:
            raise TraceFormatError(
                f"meta.json field {field} ({c['name']}): impossible slab geometry: "
                f"{c['objs_per_slab']} objects of {c['size']} bytes do not fit in an "
                f"order-{c['order']} slab ({PAGE_SIZE << c['order']} bytes)")
        if (c.get("object_size") or 0) > c["size"]:
            raise _fail(f"{field}.object_size", f"at most size ({c['size']})", c["object_size"])
        aliases = c.setdefault("aliases", [])
        if not isinstance(aliases, list) or not all(isinstance(a, str) for a in aliases):
            raise _fail(f"{field}.aliases", "a list of strings", aliases)
        if not isinstance(c.setdefault("accounted", False), bool):
            raise _fail(f"{field}.accounted", "true or false", c["accounted"])
        split = c.get("cpu_partial_start")
        if split is not None and not (isinstance(split, list) and all(
                isinstance(n, int) and not isinstance(n, bool) and n >= 0 for n in split)):
            raise _fail(f"{field}.cpu_partial_start", "a list of non-negative integers",
                        split)
        if not isinstance(c.get("shrunk_at_start", False), bool):
            raise _fail(f"{field}.shrunk_at_start", "true or false", c["shrunk_at_start"])


def check_memcgs(meta: dict) -> None:
    for i, m in enumerate(_items(meta, "memcgs", required=True)):
        _int(m, "id", f"memcgs[{i}].id", lo=0)
        _int(m, "parent", f"memcgs[{i}].parent", lo=0, null=True)
        if "path" in m and not isinstance(m["path"], str):
            raise _fail(f"memcgs[{i}].path", "a string", m["path"])


def check_clock(meta: dict) -> None:
    if "clock" not in meta:
        raise TraceFormatError("meta.json field clock is missing (see docs/trace-format.md)")
    clock = _typed(meta, "clock", dict, {})
    start = _int(clock, "start_ns", "clock.start_ns", lo=0, hi=MAX_TS_NS, null=True)
    end = _int(clock, "end_ns", "clock.end_ns", lo=0, hi=MAX_TS_NS, null=True)
    if start is not None and end is not None and end < start:
        raise TraceFormatError(f"meta.json field clock: end_ns {end} is before start_ns {start}")
    parts = [p for p in meta["parts"] if p["rows"]]
    if parts and start is not None and parts[0]["ts_min"] < start - EARLY_EVENTS_NS:
        raise TraceFormatError(
            f"meta.json field clock.start_ns: {start} is more than "
            f"{EARLY_EVENTS_NS / 1e9:g} s after the first event ({parts[0]['ts_min']} ns)")


def check_counts(meta: dict) -> None:
    for key in ("counts", "lost"):
        _typed(meta, key, dict, {})
    for name in meta["counts"]:
        _int(meta["counts"], name, f"counts.{name}", lo=0)
    lost = meta["lost"]
    lost.setdefault("total", 0)
    _int(lost, "total", "lost.total", lo=0)
    by_reason = lost.setdefault("by_reason", {})
    if not isinstance(by_reason, dict):
        raise _fail("lost.by_reason", "an object", by_reason)
    for name in by_reason:
        _int(by_reason, name, f"lost.by_reason.{name}", lo=0)
    meta.setdefault("late_events", 0)
    _int(meta, "late_events", "late_events", lo=0)


def check_meta(meta: dict) -> dict:
    """Check ``meta`` in place (defaults filled in); raise naming the first bad field."""
    check_parts(meta)
    check_caches(meta)
    check_memcgs(meta)
    check_clock(meta)
    check_counts(meta)
    if "ncpus" not in meta:
        raise TraceFormatError("meta.json field ncpus is missing (see docs/trace-format.md)")
    _int(meta, "ncpus", "ncpus", lo=1, hi=1 << 16)
    for key, kind, default in (("kernel", dict, {}), ("attach_plan", list, []),
                               ("command", list, []), ("source", str, "unknown"),
                               ("host", str, "?"), ("created_utc", str, "?"),
                               ("complete", bool, False), ("record", dict, {})):
        _typed(meta, key, kind, default)
    # replay decides from it whether page cache is modelled (PAGE_CACHE rows)
    page_cache = meta["record"].get("page_cache")
    if page_cache is not None and not isinstance(page_cache, bool):
        raise _fail("record.page_cache", "true or false", page_cache)
    # the calibration says from it whether the start was shrunk (record --shrink-at-start)
    _int(meta["record"], "shrunk_at_start", "record.shrunk_at_start", lo=0, hi=1 << 20,
         null=True)
    for i, entry in enumerate(meta["attach_plan"]):
        if not isinstance(entry, dict):
            raise _fail(f"attach_plan[{i}]", "an object", entry)
    if meta.get("workload") is not None and not isinstance(meta["workload"], dict):
        raise _fail("workload", "an object or null", meta["workload"])
    return meta
