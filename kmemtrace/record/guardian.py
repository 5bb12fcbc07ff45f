"""The guardian of an ``--in-memcg`` run: outlives the recorder, then empties and removes the memcg.

Why a separate process: a recorder killed with SIGKILL runs no cleanup, and its command
(with any daemons it started) would go on running in an orphaned memcg. The recorder starts
this process in its own session (so a terminal's Ctrl-C does not reach it) with the read end
of a pipe as stdin and keeps the write end. The kernel closes that end when the recorder
exits, however it exits; the guardian then kills whatever is left in the memcg and removes
the directory. After a clean stop the recorder has already removed it, so there is nothing
to do. ``PR_SET_PDEATHSIG`` on the command itself (see :mod:`kmemtrace.record.inmemcg`)
is the faster first line; this covers the command's children and the directory.

Run as ``python -m kmemtrace.record.guardian MEMCG_DIR``; stdlib only, so it starts fast.
"""

import contextlib
import os
import signal
import sys
import time
from pathlib import Path

REAP_TIMEOUT_S = 10.0


def members(path: Path) -> list[int]:
    try:
        return [int(p) for p in (path / "cgroup.procs").read_text().split()]
    except OSError:
        return []


def reap(path: Path, timeout_s: float = REAP_TIMEOUT_S) -> OSError | None:
    """SIGKILL every task in the memcg and rmdir it; the last error if it stayed."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            path.rmdir()
            return None
        except FileNotFoundError:
            return None
        except OSError as exc:
            if time.monotonic() > deadline:
                return exc
        for pid in members(path):  # the command and daemons it left behind
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        time.sleep(0.05)


def main(argv: list[str]) -> int:
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, signal.SIG_IGN)
    path = Path(argv[1])
    while os.read(0, 4096):  # EOF: the recorder is gone (or done)
        pass
    error = reap(path)
    if error is not None:
        print(f"kmemtrace guardian: cannot remove {path}: {error.strerror}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
