"""record's checks that need no kernel (-o paths, the loss sentence, leftover memcgs), and
the incomplete-trace warnings of replay and report."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from kmemtrace.cli.record import loss_sentence
from kmemtrace.errors import TraceFormatError, UsageError
from kmemtrace.record.inmemcg import leftovers
from kmemtrace.record.output import check_output, fs_type
from kmemtrace.trace.meta import load_meta, write_meta_atomic
from kmemtrace.trace.reader import open_trace
from kmemtrace.trace.schema import LostReason

from conftest import SEC, TraceBuilder


def test_loss_sentence_names_each_reason_with_its_fix():
    assert loss_sentence({"total": 0, "by_reason": {}}) == "No events were lost."
    line = loss_sentence({"total": 1500, "by_reason": {"RINGBUF_FULL": 1000,
                                                      "WRITE_FAILED": 500}})
    assert line.startswith("LOST 1,500 events: 1,000 because the BPF ring buffer was full")
    assert "500 because the trace could not be written (fix: free space" in line
    assert "{" not in line and line.endswith(".")


def test_every_loss_reason_has_a_sentence_and_a_fix():
    for reason in LostReason:
        line = loss_sentence({"total": 7, "by_reason": {reason.name: 7}})
        assert "reason " not in line and reason.name not in line, line
        assert "(fix: " in line and "see docs/trace-format.md)" not in line, line


def test_output_checks(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(UsageError, match="is a file, not a directory"):
        check_output(tmp_path / "file" / "trace")
    with pytest.raises(UsageError, match="no such directory"):
        check_output(tmp_path / "missing" / "trace")
    assert not (tmp_path / "missing").exists()
    check_output(tmp_path / "new")  # fine, and nothing is left behind by the write test
    assert not (tmp_path / "new").exists()
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "keep").write_text("x")
    with pytest.raises(UsageError, match="pass --force"):
        check_output(tmp_path / "full")
    with pytest.raises(UsageError, match="not a kmemtrace trace"):
        check_output(tmp_path / "full", force=True)
    (tmp_path / "full" / "meta.json").write_text("{}")
    check_output(tmp_path / "full", force=True)
    assert sorted(os.listdir(tmp_path / "full")) == ["keep", "meta.json"]


def test_fs_type_takes_the_longest_mount_prefix(tmp_path):
    mounts = tmp_path / "mounts"
    mounts.write_text("/dev/vda1 / ext4 rw 0 0\nproc /proc proc rw 0 0\n"
                      "none /proc/sys/fs/binfmt_misc binfmt_misc rw 0 0\n")
    assert fs_type(tmp_path, mounts) == "ext4"
    assert fs_type(tmp_path.parent / "proc", mounts) == "ext4"
    assert fs_type(Path("/proc/1"), mounts) == "proc"
    assert fs_type(Path("/proc/sys/fs/binfmt_misc/x"), mounts) == "binfmt_misc"
    assert fs_type(Path("/procfoo"), mounts) == "ext4"


def test_leftovers_are_memcgs_of_dead_recorders_only(tmp_path):
    alive = tmp_path / f"kmemtrace-{os.getpid()}-abc123"
    dead = tmp_path / "kmemtrace-999999999-def456"  # above pid_max: no such process
    other = tmp_path / "kmemtrace-notours"
    for d in (alive, dead, other):
        d.mkdir()
    (dead / "cgroup.procs").write_text("12\n34\n")
    assert leftovers(tmp_path) == [(dead, 2)]


def test_replay_and_report_warn_on_an_incomplete_trace(tmp_path):
    tb = TraceBuilder(tmp_path / "t")
    tb.cache()
    tb.mkdir(SEC, memcg=2)
    tb.alloc(2 * SEC, ptr=0x1000, memcg=2)
    path = tb.write(3 * SEC)
    meta = load_meta(path)
    meta["complete"] = False  # as a recorder killed after sealing its parts leaves it
    write_meta_atomic(path, meta)
    env = {**os.environ, "COLUMNS": "300"}
    replay = subprocess.run([sys.executable, "-m", "kmemtrace", "replay", str(path),
                             "--strategy", "current"], capture_output=True, text=True, env=env)
    assert replay.returncode == 0, replay.stderr
    assert "is incomplete (the recorder was killed or crashed)" in replay.stderr
    html = tmp_path / "r.html"
    report = subprocess.run([sys.executable, "-m", "kmemtrace", "report", str(path), "-o",
                             str(html), "--strategy", "current"], capture_output=True,
                            text=True, env=env)
    assert report.returncode == 0, report.stderr
    assert "incomplete trace (the recorder was killed)" in html.read_text()


def test_a_hang_while_stderr_is_quiet_still_dumps_the_python_stacks():
    """libbpf's refusal is silenced (fd 2 to /dev/null) while the fentry check compiles,
    tens of seconds under TCG; the lab's watchdog SIGABRTs a hung recorder for its stacks,
    which must reach the real stderr even then (a CI guest once hung there, and said
    nothing)."""
    code = ("import os, sys, time\n"
            "from kmemtrace.record.probes import _quiet_stderr\n"
            "with _quiet_stderr():\n"
            "    print('quiet', flush=True)\n"
            "    sys.stderr.write('silenced\\n'); sys.stderr.flush()\n"
            "    time.sleep(60)\n")
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONFAULTHANDLER": "1"})
    assert proc.stdout.readline() == "quiet\n"
    proc.send_signal(6)  # SIGABRT, as the watchdog's pkill -ABRT
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == -6
    assert "silenced" not in err
    assert "Current thread 0x" in err
    assert 'File "<string>", line 6' in err  # the sleep inside the quiet block


@pytest.mark.parametrize("bad", [True, -1, "236"])
def test_record_shrunk_at_start_must_be_a_count_or_null(trace_builder, bad):
    for good in (None, 0, 236):
        tb = trace_builder(f"good-{good}", record={"shrunk_at_start": good})
        tb.cache()
        assert open_trace(tb.write(end_ns=SEC)).meta["record"]["shrunk_at_start"] == good
    tb = trace_builder(record={"shrunk_at_start": bad})
    tb.cache()
    with pytest.raises(TraceFormatError, match=r"record\.shrunk_at_start"):
        open_trace(tb.write(end_ns=SEC))
