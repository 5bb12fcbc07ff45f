"""Issue 11's misuses as a new user makes them: one line, an exit code, no work wasted.

Run in this process through the console script's entry point (``kmemtrace.cli.main``),
so an unexpected exception fails the test with its traceback.
"""

import os
import time
from pathlib import Path

import pytest

from kmemtrace.errors import UsageError
from kmemtrace.report.plots import CHARTS

from conftest import run_cli

FIXTURE = str(Path(__file__).resolve().parent.parent / "fixtures" / "steady")


@pytest.fixture
def paths(tmp_path) -> dict[str, str]:
    (tmp_path / "dir").mkdir()
    (tmp_path / "dir" / "keep").write_text("x")
    (tmp_path / "file").write_text("x")
    return {"dir": str(tmp_path / "dir"), "file": str(tmp_path / "file"),
            "missing_parent": str(tmp_path / "nope" / "deeper" / "out"), "tmp": str(tmp_path)}


MISUSES = [
    (["synth", "steady", "--seed", "1", "--events", "1k", "-o", "{file}/t"], "is not a directory"),
    (["synth", "steady", "--seed", "1", "--events", "1k", "-o", "{file}"],
     "exists and is not a directory"),
    (["synth", "steady", "--seed", "1", "--events", "1k", "-o", "{dir}"],
     "already exists and is not empty"),
    (["synth", "steady", "--seed", "1", "--events", "1k", "-o", "{missing_parent}"],
     "does not exist"),
    (["synth", "steady", "--seed", "1", "--events", "1k", "-o", "/proc/xx"], "cannot write in"),
    (["replay", FIXTURE, "--plot", "{file}"], "exists and is not a directory"),
    (["replay", FIXTURE, "--plot", "{missing_parent}"], "does not exist"),
    (["replay", FIXTURE, "--json", "{dir}"], "is a directory"),
    (["replay", FIXTURE, "--json", "/proc/nope.json"], "cannot write in /proc"),
    (["replay", FIXTURE, "--json", "{missing_parent}"], "does not exist"),
    (["compare", FIXTURE, FIXTURE, "--json", "{dir}"], "is a directory"),
    (["validate", FIXTURE, "--json", "{dir}"], "is a directory"),
    (["report", FIXTURE, "-o", "{dir}"], "is a directory"),
    (["report", FIXTURE, "-o", "/proc/x.html"], "cannot write in /proc"),
    (["info", "{file}"], "a trace is a directory"),
    (["compare", FIXTURE, FIXTURE, FIXTURE], "no '--'"),
    (["compare", FIXTURE, "--", FIXTURE, "--no-such-option"], "No such option"),
]


@pytest.mark.parametrize(("args", "needle"), MISUSES, ids=[" ".join(a[:3]) + " " + a[-1]
                                                           for a, _ in MISUSES])
def test_misuse_is_one_line_and_exit_2_or_3(capsys, paths, args, needle):
    rc, _, err = run_cli(capsys, *(a.format(**paths) for a in args))
    lines = err.strip().splitlines()
    assert rc in (UsageError.exit_code, 3), err
    assert len(lines) == 1 and lines[0].startswith("kmemtrace: ") and needle in lines[0], err
    assert not Path(paths["missing_parent"]).parent.exists()


def test_output_is_checked_before_the_replay(capsys, paths):
    """The replay costs seconds on a big trace: a bad --json must fail before it."""
    started = time.perf_counter()
    rc, _, err = run_cli(capsys, "replay", FIXTURE, "--json", paths["dir"])
    assert rc == UsageError.exit_code and time.perf_counter() - started < 1.0, err


def test_already_exists_has_one_exit_code_everywhere(capsys, paths):
    rc, _, _ = run_cli(capsys, "synth", "steady", "--seed", "1", "--events", "1k",
                       "-o", paths["dir"])
    assert rc == UsageError.exit_code  # as record's (kmemtrace/record/recorder.py)


def test_synth_into_a_new_directory_creates_only_it(capsys, paths):
    out = os.path.join(paths["tmp"], "new")
    rc, _, err = run_cli(capsys, "synth", "steady", "--seed", "1", "--events", "1k", "-o", out)
    assert rc == 0, err
    assert sorted(os.listdir(paths["tmp"])) == ["dir", "file", "new"]


def test_the_first_replay_says_it_compiles_and_later_ones_do_not(capsys, tmp_path,
                                                                 monkeypatch):
    from numba.core import config as numba_config

    run_cli(capsys, "replay", FIXTURE, "--format", "text", "-s", "way1")  # compiles if needed
    rc, _, err = run_cli(capsys, "replay", FIXTURE, "--format", "text", "-s", "way1")
    assert rc == 0 and "compiling" not in err
    monkeypatch.setattr(numba_config, "CACHE_DIR", str(tmp_path))  # an empty cache
    rc, _, err = run_cli(capsys, "replay", FIXTURE, "--format", "text", "-s", "way1")
    assert rc == 0 and "compiling the replay engine once (~" in err


@pytest.mark.parametrize("command", ["record", "info", "synth", "replay", "compare", "report",
                                     "validate", "doctor"])
def test_help_shows_no_value_beside_a_flag(capsys, command):
    """``record --in-memcg <bool>`` read as if the flag took a value."""
    rc, out, _ = run_cli(capsys, command, "--help")
    assert rc == 0 and "--help" in out and "<bool>" not in out


def test_every_readme_command_without_root_runs(capsys, tmp_path):
    """The README's table, as a new user types it (record, doctor and lab need root/VMs
    and have their own tests); an exception would escape ``main`` and fail here."""
    other = str(Path(FIXTURE).with_name("long-tail"))
    synth_out = str(tmp_path / "synth")
    commands = [
        ["replay", FIXTURE, "--strategy", "all"],
        ["replay", "--list-strategies"],
        ["replay", FIXTURE, "--strategy", "way1,way2", "--param", "period=1s", "--era", "6.8",
         "--format", "text", "--json", str(tmp_path / "r.json")],
        ["replay", FIXTURE, "-s", "way1", "--plot", str(tmp_path / "plots")],
        ["report", FIXTURE, "-o", str(tmp_path / "report.html"), "--samples", "20"],
        ["compare", FIXTURE, other, "-s", "way1"],
        ["validate", FIXTURE],
        ["info", FIXTURE, "--json"],
        ["synth", "--list"],
        ["synth", "steady", "-o", synth_out, "--seed", "1", "--events", "2k"],
        ["info", synth_out, "--verify"],
    ]
    for args in commands:
        rc, out, err = run_cli(capsys, *args)
        assert rc == 0 and "Traceback" not in out + err, (args, err)
    assert sorted(os.listdir(tmp_path / "plots")) == sorted(f"{s}.png" for s in CHARTS)
