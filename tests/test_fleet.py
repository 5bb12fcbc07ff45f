"""``kmemtrace fleet``: a local Dask cluster of 2 workers over 9 small traces, one corrupt.

The fleet's rows must be exactly what replaying each trace alone gives (the same engine,
one strategy per task instead of all in one pass); the corrupt trace fails on its own
line without sinking the others; a rerun skips what is done. The fleet view's spread,
wins and worst hosts are checked on a results table made by hand.
"""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from kmemtrace.fleet.results import SCHEMA, Manifest, ResultStore, RunSpec, TraceOutcome
from kmemtrace.fleet.summary import summarise
from kmemtrace.metrics import compute_metrics, metric_fields, series
from kmemtrace.replay.engine import replay
from kmemtrace.strategies import REGISTRY, select
from kmemtrace.synth import synthesize, write_synthesis
from kmemtrace.trace.digest import trace_digest
from kmemtrace.trace.reader import open_trace

from conftest import run_cli

KMEMTRACE = Path(sys.executable).with_name("kmemtrace")
# 8 good traces: three workloads, different seeds, small enough to replay in milliseconds.
GOOD = [("container-churn", 1, {"n_memcgs": "20", "duration": "10s"}),
        ("container-churn", 2, {"n_memcgs": "30", "duration": "10s"}),
        ("container-churn", 3, {"n_memcgs": "10", "duration": "5s"}),
        ("long-tail", 4, {}), ("long-tail", 5, {"n_memcgs": "6"}),
        ("steady", 6, {}), ("steady", 7, {}), ("container-churn", 8, {})]
EVENTS = 20_000


def run(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "COLUMNS": "200"}
    return subprocess.run([str(KMEMTRACE), *args], capture_output=True, text=True, env=env,
                          timeout=600)


def _synth(path: Path, workload: str, seed: int, params: dict) -> Path:
    synthesis, resolved = synthesize(workload, seed=seed, n_events=EVENTS, raw_params=params)
    write_synthesis(path, synthesis, workload=workload, seed=seed, params=resolved)
    return path


@pytest.fixture(scope="module")
def fleet(tmp_path_factory):
    """(traces dir, output dir, first run) after one fleet replay of 8 good + 1 corrupt."""
    root = tmp_path_factory.mktemp("fleet")
    traces = root / "traces"
    traces.mkdir()
    for i, (workload, seed, params) in enumerate(GOOD):
        _synth(traces / f"host{i:02d}", workload, seed, params)
    bad = _synth(traces / "host99", "steady", 99, {})
    part = bad / "events" / "part-00000.parquet"
    data = bytearray(part.read_bytes())
    data[len(data) // 3:len(data) // 3 + 64] = bytes(64)  # a damaged page: CRC fails
    part.write_bytes(bytes(data))
    out = root / "out"
    first = run("fleet", "replay", "--glob", str(traces / "host*"), "-o", str(out),
                "--workers", "2")
    return traces, out, first


def test_one_corrupt_trace_fails_alone(fleet):
    _, out, first = fleet
    assert first.returncode == 3, first.stderr
    failed = [line for line in first.stderr.splitlines() if line.startswith("failed:")]
    assert len(failed) == 1 and "host99" in failed[0] and "damaged Parquet part" in failed[0]
    assert "Traceback" not in first.stderr
    manifest = ResultStore(out).manifest()
    status = {Path(t.path).name: t.status for t in manifest.traces}
    assert status == {**{f"host{i:02d}": "done" for i in range(len(GOOD))}, "host99": "failed"}
    assert manifest.workers == 2 and manifest.scheduler == "local"


def test_rows_equal_replaying_each_trace_alone(fleet):
    traces, out, _ = fleet
    table = pd.read_parquet(out / "results")  # pandas reads the dataset as one table
    assert list(table.columns) == SCHEMA.names
    assert set(table["trace"]) == {f"host{i:02d}" for i in range(len(GOOD))}
    names = metric_fields()
    for i in range(len(GOOD)):
        path = traces / f"host{i:02d}"
        alone = replay(open_trace(path), select("all", {}))
        rows = table[table["digest"] == trace_digest(path)]
        assert set(rows["strategy"]) == set(REGISTRY)
        t_s = (alone.sample_times_ns - open_trace(path).start_ns) / 1e9
        for run_ in alone.runs:
            mine = rows[rows["strategy"] == run_.strategy.name]
            got = mine[mine["kind"] == "metric"].set_index("metric")["value"]
            want = compute_metrics(run_).to_dict()
            assert list(got.index) == names
            for name in names:
                w = want[name]
                assert (np.isnan(got[name]) if w is None else got[name] == float(w)), \
                    (path.name, run_.strategy.name, name, got[name], w)
            curves = mine[mine["kind"] == "series"]
            for name, values in series(run_).items():
                curve = curves[curves["metric"] == name]
                np.testing.assert_array_equal(curve["value"].to_numpy(), values)
                np.testing.assert_array_equal(curve["t_s"].to_numpy(), t_s)


def test_rerun_skips_done_work_and_redoes_missing(fleet, tmp_path):
    traces, out, _ = fleet
    again = tmp_path / "out"
    shutil.copytree(out, again)
    store = ResultStore(again)
    victim = next(store.results.glob("*-way2-*.parquet"))
    victim.unlink()
    rerun = run("fleet", "replay", "--glob", str(traces / "host*"), "-o", str(again),
                "--workers", "2")
    assert rerun.returncode == 3  # the corrupt trace is tried again, and fails again
    assert "1 replays" in rerun.stderr, rerun.stderr
    assert victim.exists()
    manifest = store.manifest()
    assert sorted(t.status for t in manifest.traces).count("skipped") == len(GOOD) - 1


def test_report_text_rich_html(fleet, tmp_path):
    _, out, _ = fleet
    text = run("fleet", "report", str(out), "--format", "text", "--html",
               str(tmp_path / "f.html"), "--plot", str(tmp_path / "plots"))
    assert text.returncode == 0, text.stderr
    assert all(len(line) <= 72 for line in text.stdout.splitlines())
    assert "8 replayed" in text.stdout and "1 failed" in text.stdout
    assert "stranded_bytes_avg (B)" in text.stdout and "host99" in text.stdout
    page = (tmp_path / "f.html").read_text()
    assert page.count("<img") == 2 and "Failed traces" in page
    assert sorted(p.name for p in (tmp_path / "plots").iterdir()) == [
        "fleet_spread.png", "fleet_wins.png"]
    rich = run("fleet", "report", str(out))
    assert rich.returncode == 0 and "hosts won" in rich.stdout


def _hand_results(root: Path, values: dict[str, dict[str, float | None]]) -> None:
    """A results directory as `fleet replay` writes it, with stranded_bytes_avg per host
    and strategy from ``values`` (every other metric 0)."""
    store = ResultStore(root)
    store.create()
    strategies = list(next(iter(values.values())))
    specs = [RunSpec(s, {}, "5.16", 2) for s in strategies]
    outcomes = []
    for host, per in values.items():
        digest = f"{host:0>64}"
        outcomes.append(TraceOutcome(path=f"/t/{host}", digest=digest, status="done"))
        for spec in specs:
            names = metric_fields()
            value = [np.nan if (v := per[spec.strategy]) is None else v
                     if n == "stranded_bytes_avg" else 0.0 for n in names]
            store.write(digest, spec, pd.DataFrame({
                "digest": digest, "trace": host, "path": f"/t/{host}", "host": "h",
                "strategy": spec.strategy, "params": "{}", "era": "5.16",
                "run_key": spec.key, "kind": "metric", "metric": names, "unit": "",
                "t_s": np.nan, "value": value}))
    store.write_manifest(Manifest(era="5.16", samples=2, specs=specs, traces=outcomes,
                                  scheduler="local", workers=2, wall_s=1.0))


def test_summary_on_a_hand_table(tmp_path):
    # stranded_bytes_avg, by hand:      a     b     c
    _hand_results(tmp_path, {"h1": {"a": 10.0, "b": 20.0, "c": 10.0},   # a, c tie: both win
                             "h2": {"a": 30.0, "b": 5.0, "c": None},    # b wins
                             "h3": {"a": 7.0, "b": 7.0, "c": 7.0},      # all equal: nobody
                             "h4": {"a": 40.0, "b": 50.0, "c": 60.0}})  # a wins
    s = summarise(tmp_path)
    a, b, c = s.spreads["stranded_bytes_avg"]
    assert (a.wins, b.wins, c.wins) == (2, 1, 1)
    assert (a.hosts, b.hosts, c.hosts) == (4, 4, 3)  # c has no value on h2
    # inverted_cdf quantiles of a = [7, 10, 30, 40]: min 7, p25 7, median 10, p75 30,
    # p90 40, max 40
    assert a.quantiles == (7.0, 7.0, 10.0, 30.0, 40.0, 40.0)
    assert a.worst == (("h4", 40.0), ("h2", 30.0), ("h1", 10.0))
    assert c.worst == (("h4", 60.0), ("h1", 10.0), ("h3", 7.0))
    # every other metric is 0 everywhere: no wins, no worst hosts
    assert all(sp.wins == 0 and sp.worst == () for sp in s.spreads["footprint_bytes_avg"])


def test_bad_input_is_one_line(tmp_path):
    none = run("fleet", "replay", "-o", str(tmp_path / "o"))
    assert none.returncode == 2 and "no traces" in none.stderr
    nomatch = run("fleet", "replay", "--glob", str(tmp_path / "nothing*"), "-o",
                  str(tmp_path / "o"))
    assert nomatch.returncode == 2 and "matches nothing" in nomatch.stderr
    noparent = run("fleet", "replay", str(tmp_path), "-o", str(tmp_path / "x" / "y"))
    assert noparent.returncode == 2 and "does not exist" in noparent.stderr
    report = run("fleet", "report", str(tmp_path))
    assert report.returncode == 2 and "fleet.json" in report.stderr
    (tmp_path / "fleet.json").write_text(json.dumps({"format": "other"}))
    damaged = run("fleet", "report", str(tmp_path))
    assert damaged.returncode == 2 and "damaged" in damaged.stderr
    for r in (none, nomatch, noparent, report, damaged):
        assert len(r.stderr.strip().splitlines()) <= 2, r.stderr


def test_an_existing_cluster_by_address(fleet, tmp_path):
    """--scheduler: the same rows from a cluster the command did not start."""
    from distributed import LocalCluster

    traces, out, _ = fleet
    mine = tmp_path / "out"
    with LocalCluster(n_workers=1, threads_per_worker=1, processes=True,
                      dashboard_address=None) as cluster:
        done = run("fleet", "replay", str(traces / "host00"), str(traces / "host05"),
                   "-o", str(mine), "--strategy", "way1,objcg", "--scheduler",
                   cluster.scheduler_address)
    assert done.returncode == 0, done.stderr
    manifest = ResultStore(mine).manifest()
    assert manifest.scheduler.startswith("tcp://") and manifest.workers == 1
    got = pd.read_parquet(mine / "results")
    local = pd.read_parquet(out / "results")
    keys = ["digest", "strategy", "kind", "metric", "t_s"]
    local = local[local["digest"].isin(got["digest"]) & local["strategy"].isin(["way1", "objcg"])]
    pd.testing.assert_frame_equal(got.sort_values(keys).reset_index(drop=True),
                                  local.sort_values(keys).reset_index(drop=True))
    unreachable = run("fleet", "replay", str(traces / "host00"), "-o", str(mine),
                      "--scheduler", cluster.scheduler_address, "--strategy", "way2")
    assert unreachable.returncode == 1 and "no Dask scheduler answered" in unreachable.stderr


@pytest.mark.parametrize("command", ["replay", "report"])
def test_help(capsys, command):
    rc, out, _ = run_cli(capsys, "fleet", command, "--help")
    assert rc == 0 and "--help" in out and "<bool>" not in out
    assert ("--scheduler" in out) == (command == "replay")
