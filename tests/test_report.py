"""Reports: the text, rich and JSON outputs say what the metrics objects say.

Scenario: two memcgs share one cache (4 objects per one-page slab). Memcg 100 allocates
six objects, goes offline at 1 s and frees them at 2 s; memcg 200 allocates five, goes
offline at 3 s and keeps one object to the end (10 s). Strategies therefore differ in
pinned pages, dead caches and latency, which exercises the best-value marking.
"""

import dataclasses
import json
import math
from types import SimpleNamespace

import pytest
from rich.console import Console

from kmemtrace.metrics import metric_fields
from kmemtrace.model.eras import ERAS
from kmemtrace.model.state import SERIES_NAMES
from kmemtrace.replay.engine import replay
from kmemtrace.report.assumptions import assumptions, recorded_with_objcg
from kmemtrace.report.comparison import Comparison
from kmemtrace.report.format import MISSING, best_columns, humanise
from kmemtrace.report.jsonout import dumps
from kmemtrace.report.terminal import header, render
from kmemtrace.report.text import BEST_MARK, WIDTH, render_text
from kmemtrace.strategies import select
from kmemtrace.trace.reader import open_trace

from conftest import SEC


def _two_memcgs(tb):
    tb.cache()
    tb.mkdir(0, 100)
    tb.mkdir(0, 200)
    for i in range(6):
        tb.alloc(10 + i, 0x1000 + 0x100 * i, 100)
    for i in range(5):
        tb.alloc(20 + i, 0x9000 + 0x100 * i, 200)
    tb.offline(1 * SEC, 100)
    for i in range(6):
        tb.free(2 * SEC + i, 0x1000 + 0x100 * i)
    tb.offline(3 * SEC, 200)
    for i in range(4):
        tb.free(4 * SEC + i, 0x9000 + 0x100 * i)
    return open_trace(tb.write(end_ns=10 * SEC))


@pytest.fixture
def cmp(trace_builder) -> Comparison:
    return Comparison.from_replay(replay(_two_memcgs(trace_builder()), select("all", {}),
                                         samples=20))


def _blocks(text: str) -> list[list[str]]:
    """The comparison blocks: lists of lines, each starting with the 'metric' header."""
    blocks, current = [], None
    for line in text.splitlines():
        if line.startswith("metric "):
            current = [line]
            blocks.append(current)
        elif current is not None and line.strip():
            current.append(line)
        else:
            current = None
    return blocks


def test_text_fits_72_columns_without_ansi(cmp):
    text = render_text(cmp)
    assert max(len(line) for line in text.splitlines()) <= WIDTH
    assert "\x1b" not in text


def test_text_shows_every_strategy_once_across_blocks(cmp):
    heads = [block[0].split()[2:] for block in _blocks(render_text(cmp))]
    assert [name for head in heads for name in head] == [m.strategy for m in cmp.metrics]


def test_text_numbers_are_the_metrics_objects(cmp):
    by_name = {m.strategy: m for m in cmp.metrics}
    seen, marked = set(), 0
    for block in _blocks(render_text(cmp)):
        names = block[0].split()[2:]
        for line in block[1:]:
            tokens = line.split()
            if len(tokens) < 2:
                continue  # a group header
            metric, _unit, *cells = tokens
            best = {cmp.metrics[i].strategy for i in best_columns(metric, cmp.metrics)}
            for name, cell in zip(names, cells, strict=True):
                assert cell.rstrip(BEST_MARK) == humanise(getattr(by_name[name], metric))
                assert cell.endswith(BEST_MARK) == (name in best), (metric, name)
                seen.add((metric, name))
                marked += cell.endswith(BEST_MARK)
    assert marked  # the scenario separates the strategies, so some row has a best
    assert seen == {(f, m.strategy) for f in metric_fields() for m in cmp.metrics}


def test_text_carries_header_and_wrapped_assumptions(cmp):
    text = render_text(cmp)
    assert f"{cmp.facts.events:,}" in text
    assert f"SLUB {cmp.era}" in text
    flat = " ".join(text.split())
    for sentence in assumptions(cmp.era, cmp.facts.kernel_release):
        assert f"- {sentence}" in flat


def test_json_round_trips_every_strategy(cmp):
    out = json.loads(dumps(cmp))
    never = {"never": math.inf}
    back = [{k: never.get(v, v) if isinstance(v, str) and k.startswith("destroy_latency")
             else v for k, v in d.items()} for d in out["strategies"]]
    assert back == [m.to_dict() for m in cmp.metrics]
    assert any(d["never_destroyed_empty"] > 0 for d in out["strategies"])
    assert out["era"] == cmp.era
    assert out["trace"]["events"] == cmp.facts.events
    assert out["assumptions"] == cmp.assumptions
    assert out["assumptions"][:len(assumptions(cmp.era, cmp.facts.kernel_release))] == (
        assumptions(cmp.era, cmp.facts.kernel_release))
    n = len(out["series"]["t_s"])
    assert n == 20
    for m in cmp.metrics:
        assert set(out["series"][m.strategy]) == set(SERIES_NAMES)
        assert all(len(v) == n for v in out["series"][m.strategy].values())


@pytest.mark.parametrize("width", [200, 80])
def test_rich_table_names_every_strategy_in_full(cmp, width):
    console = Console(record=True, width=width)
    console.print(render(cmp))
    text = console.export_text()
    words = text.split()
    for m in cmp.metrics:
        assert m.strategy in words
    assert "…" not in text  # narrow consoles get blocks, not truncated numbers
    assert max(len(line) for line in text.splitlines()) <= width


def _styled(renderable) -> str:
    console = Console(record=True, width=200, force_terminal=True, color_system="standard")
    console.print(renderable)
    return console.export_text(styles=True)


def test_header_flags_lost_events_in_red(cmp):
    lossy = dataclasses.replace(cmp, facts=dataclasses.replace(
        cmp.facts, lost={"total": 7, "by_reason": {"ring_full": 7}}))
    assert "\x1b[1;31m7 lost" in _styled(header(lossy))
    assert "\x1b[1;31m0 lost" not in _styled(header(cmp))


def test_header_warns_about_emulated_vm(cmp):
    emulated = dataclasses.replace(cmp, facts=dataclasses.replace(
        cmp.facts, kernel={"release": "6.8.0", "emulated_vm": True}))
    assert "not real-time" in _styled(header(emulated))
    assert "not real-time" not in _styled(header(cmp))


@pytest.mark.parametrize("value, text", [
    (None, MISSING), (0, "0"), (0.0, "0"), (999, "999"), (999.6, "1k"), (1580, "1.58k"),
    (12345, "12.3k"), (38440.68, "38.4k"), (1.4653, "1.47"), (2_500_000, "2.5M"),
])
def test_humanise_keeps_three_significant_digits(value, text):
    assert humanise(value) == text


def _fake(**fields) -> SimpleNamespace:
    return SimpleNamespace(**{"dead_caches_never_destroyed": 0, **fields})


def test_best_is_the_lowest_of_a_ranked_row_only():
    rows = [_fake(pinned_pages_peak=v, allocs=v) for v in (3, 1, None, 1)]
    assert best_columns("pinned_pages_peak", rows) == {1, 3}
    tied = [_fake(pinned_pages_peak=v) for v in (2, None, 2)]
    assert best_columns("pinned_pages_peak", tied) == set()
    assert best_columns("allocs", rows) == set()


def test_a_censored_latency_is_never_and_never_best():
    leaky = _fake(destroy_latency_p99_s=math.inf, dead_caches_never_destroyed=5)
    prompt = _fake(destroy_latency_p99_s=2.0)
    slow = _fake(destroy_latency_p99_s=9.0)
    assert best_columns("destroy_latency_p99_s", [leaky, prompt, slow]) == {1}
    assert humanise(math.inf) == "never"


@pytest.mark.parametrize("release, objcg", [
    ("6.8.0-45-generic", True), ("5.9.0", True), ("5.8.18", False), ("4.19.0", False),
    ("synthetic", False), ("unknown", False),
])
def test_objcg_recording_kernel_is_called_out(release, objcg):
    assert recorded_with_objcg(release) == objcg
    said = any("simulated" in s for s in assumptions("5.16", release))
    assert said == objcg


@pytest.mark.parametrize("era", list(ERAS))
def test_assumptions_name_the_era(era):
    assert any(ERAS[era].summary in s for s in assumptions(era, "synthetic"))



@pytest.mark.parametrize("color_system", [None, "truecolor"])
def test_best_value_is_marked_without_colour_when_there_is_none(cmp, color_system):
    """Piped output has no colour: "green: best" would point at nothing."""
    console = Console(width=200, color_system=color_system, record=True)
    console.print(render(cmp))
    text = console.export_text()
    marked = [tok for tok in text.split() if len(tok) > 1 and tok.endswith(BEST_MARK)]
    if color_system is None:
        assert f"{BEST_MARK}: best (lowest) in its row" in text and marked
    else:
        assert "green: best (lowest) in its row" in text and not marked


def test_replay_counts_memcgs_where_info_does(trace_builder):
    """A trace that lost MKDIRs: memcg 300 only goes offline, memcg 400 only allocates.

    Known memcgs (hand count): 100 and 200 (mkdir'ed) + 300 (offlined): 3. Memcg 400 has no
    life-cycle row and is not in meta.json, so neither count includes it.
    """
    from kmemtrace.trace.summary import summarize

    tb = trace_builder()
    tb.cache()
    tb.memcgs = [{"id": 1, "parent": 0, "path": "/", "level": 0}]
    tb.mkdir(0, 100)
    tb.mkdir(0, 200)
    tb.alloc(10, 0x1000, 400)
    tb.offline(SEC, 300)
    trace = open_trace(tb.write(end_ns=2 * SEC))
    cmp = Comparison.from_replay(replay(trace, select("all", {}), samples=5))
    assert summarize(trace)["memcgs"]["known"] == cmp.facts.memcgs == 3
