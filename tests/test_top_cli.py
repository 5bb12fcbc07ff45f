"""``kmemtrace top`` misuse: one line, exit code 2, before anything is compiled or attached.

Run in this process through the console script's entry point (``kmemtrace.cli.main``).
"""

import pytest

from conftest import run_cli


@pytest.mark.parametrize("args, needle", [
    (["--sort", "size"], "--sort size: expected bytes, rate, age"),
    (["--format", "json"], "--format json needs --once"),
    (["--once", "--format", "yaml"], "--format yaml: expected text or json"),
    (["-n", "0"], "-n 0: must be at least 1"),
    (["--interval", "0s"], "--interval 0s: must be longer than 0"),
    (["--interval", "soon"], "soon"),
])
def test_bad_options_are_one_line_and_exit_2(capsys, args, needle):
    rc, out, err = run_cli(capsys, "top", *args)
    assert rc == 2 and needle in err and len(err.strip().splitlines()) <= 2, err
    assert out == ""


@pytest.mark.root
def test_record_to_is_checked_like_record_o(capsys, tmp_path):
    """A --record-to that already holds files fails before the BPF compile, as for record."""
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("x")
    rc, _, err = run_cli(capsys, "top", "--once", "--record-to", str(tmp_path / "full"))
    assert rc == 2 and "already exists and is not empty" in err


def test_help_lists_the_options(capsys):
    rc, out, _ = run_cli(capsys, "top", "--help")
    for option in ("--interval", "--cgroup", "--count", "--sort", "--once", "--format",
                   "--record-to"):
        assert option in out
    assert rc == 0 and "<bool>" not in out
