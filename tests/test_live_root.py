"""``record --live`` and ``top --what-if`` on the real kernel (root), under tmux like a user.

The workload makes tmpfs files in the memcg ``record --in-memcg`` creates and removes, so
the what-if has a dying memcg and dead caches to show. The live final metrics must equal
``kmemtrace replay`` of the trace the same run sealed, number for number.
"""

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.root

N_FILES = 3000
WORKLOAD = """
import os, sys, tempfile, time
n, secs = int(sys.argv[1]), float(sys.argv[2])
d = tempfile.mkdtemp(dir="/dev/shm", prefix="kmt-i15-")
end = time.monotonic() + secs
i = 0
while i < n or time.monotonic() < end:
    with open(f"{d}/f{i}", "w") as fh:
        fh.write("x")
    if i % 2:
        os.unlink(f"{d}/f{i}")
    i += 1
    if i >= n:
        time.sleep(0.01)
print(d)
"""
ENV = {**os.environ, "COLUMNS": "300"}
KMEMTRACE = [sys.executable, "-m", "kmemtrace"]
STRATEGIES = ["current", "way1", "way2", "way3", "way4", "reparent", "objcg"]


def _workload(tmp: Path, seconds: float) -> list[str]:
    script = tmp / "workload.py"
    script.write_text(WORKLOAD)
    return ["/usr/bin/python3", str(script), str(N_FILES), str(seconds)]


def _cleanup_shm(stdout: str) -> None:
    for line in stdout.splitlines():
        if line.startswith("/dev/shm/kmt-i15-"):
            shutil.rmtree(line, ignore_errors=True)


def _comparable(strategies: list[dict]) -> list[dict]:
    return [{k: v for k, v in m.items() if k != "loop_seconds"} for m in strategies]


def test_record_live_final_metrics_equal_the_replay_of_the_trace(tmp_path):
    trace, live_json, replay_json = tmp_path / "t", tmp_path / "live.json", tmp_path / "r.json"
    res = subprocess.run([*KMEMTRACE, "record", "-o", str(trace), "--live", "--strategy",
                          "all", "--live-json", str(live_json), "--in-memcg", "--grace", "1s",
                          "--", *_workload(tmp_path, 2)],
                         capture_output=True, text=True, env=ENV, timeout=300)
    _cleanup_shm(res.stdout)
    assert res.returncode == 0, res.stderr
    assert "what-if at the end of the recording" in res.stderr
    rep = subprocess.run([*KMEMTRACE, "replay", str(trace), "--strategy", "all", "--json",
                          str(replay_json)], capture_output=True, text=True, env=ENV,
                         timeout=300)
    assert rep.returncode == 0, rep.stderr
    live, replay = json.loads(live_json.read_text()), json.loads(replay_json.read_text())
    assert live["exact"], live
    assert live["events"] == replay["trace"]["events"]
    assert [m["strategy"] for m in live["strategies"]] == STRATEGIES
    assert _comparable(live["strategies"]) == _comparable(replay["strategies"])
    # the workload's own facts, independent of the model: its memcg went offline, and
    # each file is at least one accounted allocation in it
    current = live["strategies"][0]
    assert current["memcg_offlines"] >= 1
    assert current["allocs"] >= N_FILES


class Tmux:
    """A detached tmux session running one command, on a server of its own (another
    session's server options, e.g. window-size, must not shrink this screen)."""

    def __init__(self, name: str, argv: list[str], width: int = 240, height: int = 80):
        self.name = name
        cmd = ("env -u LINES -u COLUMNS " + " ".join(_quote(a) for a in argv)
               + "; sleep 600")  # keep the last screen
        self._tmux("new-session", "-d", "-s", name, "-x", str(width), "-y", str(height), cmd)
        self.socket = Path(self._tmux("display", "-p", "#{socket_path}").strip())

    def _tmux(self, *args: str) -> str:
        return subprocess.run(["tmux", "-L", self.name, "-f", "/dev/null", *args],
                              capture_output=True, text=True, check=True).stdout

    def screen(self) -> str:
        return self._tmux("capture-pane", "-p", "-J", "-t", self.name)

    def wait_for(self, *needles: str, timeout: float = 120) -> str:
        deadline = time.monotonic() + timeout
        while True:
            text = self.screen()
            if all(n in text for n in needles):
                return text
            if time.monotonic() > deadline:
                size = self._tmux("display", "-p", "-t", self.name,
                                  "#{window_width}x#{window_height}")
                raise AssertionError(f"never saw {needles} on the {size.strip()} screen:\n"
                                     f"{text}")
            time.sleep(0.5)

    def keys(self, keys: str) -> None:
        self._tmux("send-keys", "-t", self.name, keys)

    def kill(self) -> None:
        """End the server and remove its socket (tmux leaves it behind)."""
        subprocess.run(["tmux", "-L", self.name, "kill-server"], check=False,
                       capture_output=True)
        self.socket.unlink(missing_ok=True)


def _quote(arg: str) -> str:
    return "'" + arg.replace("'", "'\\''") + "'"


def test_record_live_shows_a_panel_per_strategy_and_the_lag(tmp_path):
    tmux = Tmux(f"kmt-i15-rec-{os.getpid()}",
                [*KMEMTRACE, "record", "-o", str(tmp_path / "t"), "--live", "--in-memcg",
                 "--grace", "1s", "--", *_workload(tmp_path, 8)])
    try:
        live = tmux.wait_for("what-if:", "lag", "stranded, last", *STRATEGIES)
        assert "dying memcgs" in live and "dead caches" in live and "footprint" in live
        assert "model starts empty at attach" in live
        done = tmux.wait_for("what-if at the end of the recording", "sealed trace")
        assert "exact: all" in done
    finally:
        tmux.kill()
        for d in Path("/dev/shm").glob("kmt-i15-*"):
            shutil.rmtree(d, ignore_errors=True)


def test_top_what_if_shows_the_chosen_strategies_and_quits_on_q(tmp_path):
    tmux = Tmux(f"kmt-i15-top-{os.getpid()}",
                [*KMEMTRACE, "top", "--what-if", "--strategy", "current,objcg", "-n", "3",
                 "--interval", "1s"])
    try:
        screen = tmux.wait_for("what-if:", "lag", "stranded, last")
        assert "current" in screen and "objcg" in screen and "way3" not in screen
        tmux.keys("q")
        done = tmux.wait_for("what-if at the end of the recording")
        assert "objcg" in done
    finally:
        tmux.kill()
