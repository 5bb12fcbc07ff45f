"""``kmemtrace replay`` as a user runs it: a real subprocess of the installed script.

Failures must be one line on stderr with a non-zero exit code and no traceback, whether
the mistake is in the command line or in the trace on disk.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from kmemtrace.report.text import WIDTH
from kmemtrace.strategies import REGISTRY

from conftest import SEC

KMEMTRACE = Path(sys.executable).with_name("kmemtrace")


def run(*args: str) -> subprocess.CompletedProcess:
    # A narrow terminal is where wrapping would split an error over several lines.
    env = {**os.environ, "COLUMNS": "80"}
    return subprocess.run([str(KMEMTRACE), *args], capture_output=True, text=True, env=env,
                          timeout=300)


@pytest.fixture
def trace(trace_builder) -> Path:
    """Memcg 100 allocates six objects, goes offline at 1 s, frees them at 2 s."""
    tb = trace_builder()
    tb.cache()
    tb.mkdir(0, 100)
    for i in range(6):
        tb.alloc(10 + i, 0x1000 + 0x100 * i, 100)
    tb.offline(1 * SEC, 100)
    for i in range(6):
        tb.free(2 * SEC + i, 0x1000 + 0x100 * i)
    return tb.write(end_ns=10 * SEC)


def assert_one_line_failure(proc: subprocess.CompletedProcess, *needles: str) -> None:
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    for needle in needles:
        assert needle in lines[0]


def test_replay_all_prints_every_strategy(trace):
    proc = run("replay", str(trace))
    assert proc.returncode == 0, proc.stderr
    words = proc.stdout.split()
    for name in REGISTRY:
        assert name in words
    assert "Assumptions" in proc.stdout


def test_text_format_fits_a_mail(trace):
    proc = run("replay", str(trace), "--format", "text")
    assert proc.returncode == 0, proc.stderr
    assert max(len(line) for line in proc.stdout.splitlines()) <= WIDTH
    assert "\x1b" not in proc.stdout
    words = proc.stdout.split()
    for name in REGISTRY:
        assert name in words


def test_json_file_holds_the_selected_strategies(trace, tmp_path):
    out = tmp_path / "r.json"
    proc = run("replay", str(trace), "-s", "way2,objcg", "-p", "period=500ms",
               "--json", str(out))
    assert proc.returncode == 0, proc.stderr
    data = json.loads(out.read_text())
    assert [s["strategy"] for s in data["strategies"]] == ["way2", "objcg"]
    assert data["strategies"][0]["params"]["period"] == 500_000_000


def test_list_strategies_needs_no_trace():
    proc = run("replay", "--list-strategies")
    assert proc.returncode == 0, proc.stderr
    for strategy in REGISTRY.values():
        assert strategy.name in proc.stdout
        for p in strategy.params:
            assert f"--param {p.name}=" in proc.stdout


def test_help_lists_the_registry():
    proc = run("replay", "--help")
    assert proc.returncode == 0
    flat = " ".join(proc.stdout.replace("│", " ").split())  # help is drawn in boxes
    assert ", ".join(REGISTRY) in flat


@pytest.mark.parametrize("args, needle", [
    (["-s", "nosuch"], "nosuch"),
    (["-p", "nosuch=1"], "nosuch"),
    (["-s", "way2", "-p", "period=soon"], "soon"),
    (["--era", "1.0"], "1.0"),
    (["--format", "html"], "html"),
])
def test_bad_command_line_is_one_line(trace, args, needle):
    assert_one_line_failure(run("replay", str(trace), *args), needle)


def test_missing_trace_is_one_line(tmp_path):
    assert_one_line_failure(run("replay", str(tmp_path / "nowhere")), "nowhere")


def test_corrupt_part_is_one_line(trace):
    part = next((trace / "events").iterdir())
    part.write_bytes(b"\x00" * 64)
    assert_one_line_failure(run("replay", str(trace)), part.name)


def test_unknown_format_version_is_one_line(trace):
    meta_path = trace / "meta.json"
    meta = json.loads(meta_path.read_text())
    meta["format_version"] = 99
    meta_path.write_text(json.dumps(meta))
    assert_one_line_failure(run("replay", str(trace)), "99")


@pytest.mark.parametrize("args", [["--samples", "many"], ["--no-such-option"]])
def test_click_level_usage_error_is_one_line(trace, args):
    assert_one_line_failure(run("replay", str(trace), *args))
