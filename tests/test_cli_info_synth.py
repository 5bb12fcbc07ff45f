"""`kmemtrace synth` and `kmemtrace info` as a user runs them: exit codes, one-line errors."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from kmemtrace.errors import TraceFormatError, UsageError
from kmemtrace.trace.meta import new_meta, write_meta_atomic
from kmemtrace.trace.reader import TraceReader
from kmemtrace.trace.schema import EventKind, LostReason, empty_columns
from kmemtrace.trace.writer import TraceWriter

KMEMTRACE = Path(sys.executable).with_name("kmemtrace")


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(KMEMTRACE), *args], capture_output=True, text=True, timeout=120)


def assert_one_line_error(proc: subprocess.CompletedProcess, code: int, *needles: str) -> None:
    assert proc.returncode == code, proc.stderr
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    for needle in needles:
        assert needle in lines[0]


@pytest.fixture(scope="module")
def churn(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("cli") / "churn"
    proc = run("synth", "container-churn", "-o", str(path), "--seed", "4", "--events", "20k",
               "--param", "n_memcgs=50")
    assert proc.returncode == 0, proc.stderr
    return path


def test_synth_writes_a_trace_info_reads_it(churn):
    meta = TraceReader.open(churn).meta
    assert meta["workload"]["params"]["n_memcgs"] == 50
    proc = run("info", str(churn))
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    for needle in ("synthetic", "container-churn", "ALLOC", "MEMCG_OFFLINE", "dentry",
                   "signal_cache", "UNIX", "lost       0"):
        assert needle in out, needle
    assert "is incomplete" not in out


def test_info_json_matches_meta(churn):
    proc = run("info", str(churn), "--json")
    assert proc.returncode == 0, proc.stderr
    summary = json.loads(proc.stdout)
    meta = TraceReader.open(churn).meta
    assert summary["events"] == sum(p["rows"] for p in meta["parts"])
    assert summary["counts"]["ALLOC"] == meta["counts"]["ALLOC"]
    assert summary["memcgs"]["created"] == meta["counts"]["MEMCG_MKDIR"]
    assert summary["memcgs"]["offlined"] == meta["counts"]["MEMCG_OFFLINE"]
    assert summary["complete"] is True


def test_same_seed_same_trace(tmp_path, churn):
    again = tmp_path / "again"
    proc = run("synth", "container-churn", "-o", str(again), "--seed", "4", "--events", "20k",
               "--param", "n_memcgs=50")
    assert proc.returncode == 0
    a, b = TraceReader.open(churn).to_pandas(), TraceReader.open(again).to_pandas()
    assert a.equals(b)


def test_existing_output_needs_force(churn):
    proc = run("synth", "steady", "-o", str(churn), "--seed", "1", "--events", "5k")
    # A bad output path is a usage error (2), as in record: one code for one mistake.
    assert_one_line_error(proc, UsageError.exit_code, "--force")


def test_force_overwrites(tmp_path):
    path = tmp_path / "t"
    for seed in ("1", "2"):
        proc = run("synth", "steady", "-o", str(path), "--seed", seed, "--events", "5k",
                   "--force")
        assert proc.returncode == 0, proc.stderr
    assert TraceReader.open(path).meta["workload"]["seed"] == 2


def test_list_shows_workloads_and_params():
    proc = run("synth", "--list")
    assert proc.returncode == 0
    for needle in ("container-churn", "long-tail", "steady", "survivor_fraction", "remote_free"):
        assert needle in proc.stdout


@pytest.mark.parametrize(("args", "needles"), [
    (("synth", "nope", "-o", "X", "--seed", "1"), ("nope", "container-churn")),
    (("synth", "steady", "-o", "X", "--seed", "1", "--param", "bogus=1"), ("bogus",)),
    (("synth", "steady", "-o", "X", "--seed", "1", "--param", "ncpus=0"), ("ncpus",)),
    (("synth", "steady", "-o", "X", "--seed", "1", "--events", "lots"), ("lots",)),
    (("synth", "steady", "-o", "X"), ("--seed",)),
])
def test_bad_synth_input_is_one_line_usage_error(tmp_path, args, needles):
    args = tuple(str(tmp_path / "out") if a == "X" else a for a in args)
    assert_one_line_error(run(*args), UsageError.exit_code, *needles)
    assert not (tmp_path / "out").exists()


def test_info_leads_with_what_was_recorded_and_all_adds_the_rest(churn):
    short = run("info", str(churn)).stdout
    full = run("info", str(churn), "--all").stdout
    assert short.index("what") < short.index("events") < short.index("caches with events")
    assert "seed=4" in short and "duration=60s" in short  # human units, not 60000000000
    assert "allocs" in short and "/ctr-" in short  # per-cache counts, memcg paths
    assert "more memcg(s) (--all)" in short
    assert len(full.splitlines()) > len(short.splitlines())
    assert "more memcg(s)" not in full


def test_info_verify_checks_digests_and_says_what_it_could_not(churn, tmp_path):
    done = run("info", str(churn), "--verify")
    assert done.returncode == 0, done.stderr
    assert "1 of 1 against their SHA-256" in done.stdout
    old = Path(__file__).resolve().parent.parent / "fixtures" / "steady"  # before digests
    assert "could not verify the bytes of 1 part(s)" in run("info", str(old), "--verify").stdout
    copy = tmp_path / "changed"
    shutil.copytree(churn, copy)
    meta = json.loads((copy / "meta.json").read_text())
    meta["parts"][0]["sha256"] = "0" * 64
    (copy / "meta.json").write_text(json.dumps(meta))
    assert_one_line_error(run("info", str(copy), "--verify"), TraceFormatError.exit_code,
                          "differs from meta.json")


def test_info_on_missing_trace(tmp_path):
    assert_one_line_error(run("info", str(tmp_path / "none")), TraceFormatError.exit_code,
                          "no such trace")


def test_info_on_damaged_part(tmp_path, churn):
    copy = tmp_path / "copy"
    subprocess.run(["cp", "-r", str(churn), str(copy)], check=True)
    part = copy / "events" / "part-00000.parquet"
    part.write_bytes(part.read_bytes()[:100])
    assert_one_line_error(run("info", str(copy)), TraceFormatError.exit_code, "part-00000")


def test_info_warns_on_unsealed_trace_and_highlights_lost(tmp_path):
    path = tmp_path / "t"
    writer = TraceWriter(path, new_meta("record"), reorder_window_ns=0, rotate_rows=1)
    cols = empty_columns(2)
    cols["ts_ns"][:] = [10, 20]
    cols["seq"][:] = [0, 1]
    cols["kind"][:] = [EventKind.ALLOC, EventKind.LOST]
    cols["aux"][1], cols["aux2"][1] = 42, LostReason.RINGBUF_FULL
    writer.append(cols)
    writer.meta["attach_plan"] = [
        {"probe": "kmem:kmem_cache_alloc", "type": "tracepoint", "status": "attached",
         "why": ""},
        {"probe": "mem_cgroup_css_offline", "type": "kprobe", "status": "missing",
         "why": "no kprobes"}]
    write_meta_atomic(path, writer.meta)  # no close(): a recording that was killed
    proc = run("info", str(path))
    assert proc.returncode == 0, proc.stderr
    assert "is incomplete" in proc.stdout
    assert "LOST" in proc.stdout and "42" in proc.stdout and "RINGBUF_FULL" in proc.stdout
    assert "missing" in proc.stdout and "no kprobes" in proc.stdout
    summary = json.loads(run("info", str(path), "--json").stdout)
    assert summary["complete"] is False
    assert summary["lost"]["total"] == 42
    assert np.isclose(summary["clock"]["span_s"], 10e-9)
