"""A seeded fuzzer over damaged traces: every command either refuses, agrees, or warns.

Each variant damages a copy of one small two-part trace (meta.json fields deleted, nulled
or of the wrong type; rows reordered; ids out of range; bit flips in the Parquet bytes;
parts swapped, duplicated, truncated) and runs ``info``, ``replay`` and ``validate`` in
this process, through the same entry point as the console script. For each run exactly
one of these must hold:

* a one-line error (plus at most a tip line) and a non-zero exit;
* the replay's metrics identical to the undamaged trace's;
* an explicit ``warning:`` on the output.

An unexpected exception escapes ``kmemtrace.cli.main`` and fails the test with its
traceback, so "never a traceback" needs no assertion of its own.
"""

import json
import random
import shutil
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from kmemtrace.cli import main
from kmemtrace.synth import synthesize, write_synthesis
from kmemtrace.trace.meta import load_meta
from kmemtrace.trace.schema import ARROW_SCHEMA, EVENTS_DIR, META_FILE
from kmemtrace.trace.writer import TraceWriter

from conftest import run_cli

SEED = 11
DELETE = object()
TOP_KEYS = ("parts", "caches", "memcgs", "clock", "ncpus", "counts", "lost", "kernel",
            "attach_plan", "command", "late_events", "complete", "workload", "source")
BAD_VALUES = (DELETE, None, "x", 0, [])


@pytest.fixture(scope="module")
def base(tmp_path_factory) -> Path:
    """container-churn in two parts, written by the real writer (digests, page CRCs)."""
    synthesis, params = synthesize("container-churn", seed=SEED, n_events=6000,
                                   raw_params={"n_memcgs": "12"})
    path = tmp_path_factory.mktemp("fuzz") / "base"
    write_synthesis(path, synthesis, workload="container-churn", seed=SEED, params=params)
    meta = load_meta(path)
    meta["counts"], meta["lost"] = {}, {"total": 0, "by_reason": {}}
    cols = {n: np.concatenate([t.column(n).to_numpy() for t in [pq.read_table(
        path / EVENTS_DIR / p["file"]) for p in meta["parts"]]]) for n in ARROW_SCHEMA.names}
    two = path.with_name("two-parts")
    with TraceWriter(two, meta, rotate_rows=len(cols["ts_ns"]) // 2,
                     reorder_window_ns=0) as writer:
        half = len(cols["ts_ns"]) // 2
        writer.append({n: c[:half] for n, c in cols.items()})
        writer.append({n: c[half:] for n, c in cols.items()})
    assert len(load_meta(two)["parts"]) == 2
    return two


def _meta(path: Path) -> dict:
    return json.loads((path / META_FILE).read_text())


def _set_meta(path: Path, meta: dict) -> None:
    (path / META_FILE).write_text(json.dumps(meta))


def meta_edit(field: str, value) -> Callable[[Path], None]:
    """Set (or delete) a dotted meta.json field: ``parts.0.file``."""
    def damage(path: Path, _rng: random.Random) -> None:
        meta = _meta(path)
        *parents, last = field.split(".")
        obj = meta
        for key in parents:
            obj = obj[int(key)] if isinstance(obj, list) else obj[key]
        last = int(last) if isinstance(obj, list) else last
        if value is DELETE:
            del obj[last]
        else:
            obj[last] = value
        _set_meta(path, meta)
    return damage


def part_edit(edit: Callable[[dict, random.Random], None], index: int = 0):
    """Rewrite one part's rows (a foreign or buggy writer); meta.json is left as it was."""
    def damage(path: Path, rng: random.Random) -> None:
        part = path / EVENTS_DIR / _meta(path)["parts"][index]["file"]
        rows = pq.read_table(part).to_pydict()
        edit(rows, rng)
        pq.write_table(pa.Table.from_pydict(rows, schema=ARROW_SCHEMA), part)
    return damage


def _swap_rows(rows, rng):
    n = len(rows["ts_ns"])
    i = rng.randrange(1, n - 1)
    while rows["ts_ns"][i] == rows["ts_ns"][i + 1]:
        i += 1
    for col in rows.values():
        col[i], col[i + 1] = col[i + 1], col[i]


def _set_row(column, value, *, last=False):
    def edit(rows, rng):
        i = len(rows[column]) - 1 if last else rng.randrange(len(rows[column]))
        rows[column][i] = value
    return edit


def flip_bit(path: Path, rng: random.Random) -> None:
    part = path / EVENTS_DIR / _meta(path)["parts"][rng.randrange(2)]["file"]
    data = bytearray(part.read_bytes())
    pos = rng.randrange(4, len(data) - 8)
    data[pos] ^= 1 << rng.randrange(8)
    part.write_bytes(data)


def truncate(path: Path, rng: random.Random) -> None:
    part = path / EVENTS_DIR / _meta(path)["parts"][1]["file"]
    part.write_bytes(part.read_bytes()[: rng.randrange(1, part.stat().st_size)])


def parts_swapped(path: Path, _rng: random.Random) -> None:
    meta = _meta(path)
    meta["parts"].reverse()
    _set_meta(path, meta)


def part_duplicated(path: Path, _rng: random.Random) -> None:
    meta = _meta(path)
    meta["parts"].insert(1, dict(meta["parts"][0]))
    _set_meta(path, meta)


def far_future_consistent(path: Path, rng: random.Random) -> None:
    """A timestamp near 2^62, with meta.json changed to agree with it."""
    part_edit(_set_row("ts_ns", 1 << 62, last=True), 1)(path, rng)
    meta = _meta(path)
    meta["parts"][1]["ts_max"] = 1 << 62
    meta["clock"]["end_ns"] = 1 << 62
    _set_meta(path, meta)


def variants() -> list[tuple[str, Callable[[Path, random.Random], None]]]:
    out = [(f"{key}={'<deleted>' if v is DELETE else repr(v)}", meta_edit(key, v))
           for key in TOP_KEYS for v in BAD_VALUES]
    nested = {
        "parts.0.file": (DELETE, None, "../meta.json", "part-99999.parquet"),
        "parts.0.rows": (DELETE, "1", 1),
        "parts.1.ts_min": ("x", -5),
        "clock.start_ns": ("x", -1, 2 * 10**12),
        "clock.end_ns": (10**12,),
        "caches.0.size": (DELETE, 0, 10**6),
        "caches.0.objs_per_slab": (0, 10**4),
        "caches.0.order": (99,),
        "caches.0.id": (7,),
        "caches.0.cpu_partial_start": ("x", [-1], [1.5], [True]),
        "caches": ([],),
        "memcgs": ("x", {}),
        "memcgs.1.id": ("x",),
        "ncpus": ("two", 0, True),
        "lost.total": (None,),
    }
    out += [(f"{field}={'<deleted>' if v is DELETE else repr(v)}", meta_edit(field, v))
            for field, values in nested.items() for v in values]
    out += [("parts swapped", parts_swapped), ("part duplicated", part_duplicated),
            ("ts near 2^62, meta agreeing", far_future_consistent)]
    out += [
        ("rows swapped in part 0", part_edit(_swap_rows)),
        ("rows swapped in part 1", part_edit(_swap_rows, 1)),
        ("ts near 2^62 in the last row", part_edit(_set_row("ts_ns", (1 << 62) - 1, last=True),
                                                   1)),
        ("cache_id out of range", part_edit(_set_row("cache_id", 40))),
        ("unknown event kind", part_edit(_set_row("kind", 77))),
        ("truncated part", truncate),
        *((f"bit flip {i}", flip_bit) for i in range(12)),  # each its own seeded position
    ]
    return out


VARIANTS = variants()


def test_there_are_enough_variants():
    assert len(VARIANTS) >= 60


TIMINGS = ("loop_seconds",)  # wall-clock time of the replay itself: never reproducible


def _metrics(json_path: Path) -> list:
    doc = json.loads(json_path.read_text())
    return [{k: v for k, v in m.items() if k not in TIMINGS} for m in doc["strategies"]]


@pytest.fixture(scope="module")
def baseline(base, tmp_path_factory):
    out = tmp_path_factory.mktemp("baseline") / "m.json"
    sys_argv = sys.argv
    sys.argv = ["kmemtrace", "replay", str(base), "--format", "text", "--json", str(out)]
    try:
        with pytest.raises(SystemExit) as exc:
            main()
    finally:
        sys.argv = sys_argv
    assert exc.value.code == 0
    return _metrics(out)


def _judge(name: str, rc: int, out: str, err: str, same: bool | None) -> None:
    if rc != 0:
        lines = [line for line in err.strip().splitlines() if not line.startswith("warning:")]
        assert lines and lines[0].startswith("kmemtrace: ") and len(lines) <= 2, (name, err)
        assert len(lines) == 1 or lines[1].startswith("Tip:"), (name, err)
    else:
        assert same is not False or "warning:" in out + err, (name, "silently different")


@pytest.mark.parametrize("index", range(len(VARIANTS)), ids=[n for n, _ in VARIANTS])
def test_damaged_trace(base, baseline, tmp_path, capsys, index):
    name, damage = VARIANTS[index]
    path = tmp_path / "t"
    shutil.copytree(base, path)
    damage(path, random.Random(f"{SEED}-{index}"))
    result = tmp_path / "m.json"
    rc, out, err = run_cli(capsys, "replay", str(path), "--format", "text",
                           "--json", str(result))
    _judge(name, rc, out, err, _metrics(result) == baseline if rc == 0 else None)
    for args in (("info", str(path)), ("validate", str(path))):
        rc, out, err = run_cli(capsys, *args)
        _judge(f"{name}: {args[0]}", rc, out, err, None)
