"""Drive a fleet replay on Dask: a local cluster by default, or an existing one.

The client keys every trace by its digest, skips the trace x strategy pairs whose result
file exists, and submits the rest as one task each. Results come back to the client,
which writes them, so workers need to read the traces (shared storage on a real
cluster) but never the output directory. A task that fails marks its trace failed, with
the worker's one-line reason; the other traces go on.

Why Dask beats a plain loop of ``kmemtrace replay`` even on 2 cores: each such process
imports numpy, pandas, pyarrow and numba and loads the compiled engine before replaying
a trace of milliseconds, while a worker pays that once and then only replays, and the
two workers keep both cores busy. If a worker's numba cache is cold, the first task runs
alone so that the engine is compiled once, not once per worker at the same time.
"""

import logging
import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from kmemtrace.errors import KmemtraceError
from kmemtrace.fleet.results import Manifest, ResultStore, RunSpec, TraceOutcome
from kmemtrace.fleet.task import TaskFailure, replay_task
from kmemtrace.model.compiled import COMPILE_SECONDS, engine_is_compiled
from kmemtrace.trace.digest import trace_digest

CONNECT_TIMEOUT = "10s"


def local_workers() -> int:
    """One single-threaded worker per CPU this process may run on: the loop is compiled
    Python that holds the GIL, so processes, not threads, use the cores."""
    return max(len(os.sched_getaffinity(0)), 1)


@contextmanager
def connect(scheduler: str | None, workers: int | None) -> Iterator[tuple[object, str, int]]:
    """(client, where, number of workers) for an existing scheduler or a local cluster."""
    # Imported here: distributed takes a second to import, which no other command pays.
    from distributed import Client, LocalCluster

    if scheduler:
        try:
            client = Client(scheduler, timeout=CONNECT_TIMEOUT)
        except (OSError, TimeoutError, ValueError) as exc:
            raise KmemtraceError(f"--scheduler {scheduler}: no Dask scheduler answered "
                                 f"({str(exc).splitlines()[0]})") from None
        with client:
            n = len(client.scheduler_info()["workers"])
            if not n:
                # Tasks would wait for a worker that may never come: say so instead.
                raise KmemtraceError(f"--scheduler {scheduler}: the cluster has no workers",
                                     tip="start some: dask worker " + scheduler)
            yield client, scheduler, n
        return
    n = workers or local_workers()
    with LocalCluster(n_workers=n, threads_per_worker=1, processes=True,
                      dashboard_address=None, silence_logs=logging.CRITICAL) as cluster, \
            Client(cluster) as client:
        yield client, "local", n


def failure_text(exc: BaseException) -> str:
    """One line for an exception: a kmemtrace error as the CLI prints it; anything else
    (a crash in the replay, a worker that died) with its class name."""
    if isinstance(exc, KmemtraceError):
        return str(exc)
    text = str(exc).splitlines()[0] if str(exc) else ""
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


@dataclass
class Plan:
    """Every trace's outcome so far, and the trace x spec pairs still to replay."""

    specs: list[RunSpec]
    outcomes: list[TraceOutcome]
    todo: list[tuple[TraceOutcome, RunSpec]]
    started: float = field(default_factory=time.perf_counter)


def plan_fleet(traces: list[Path], specs: list[RunSpec], store: ResultStore,
               on_task: Callable[[TraceOutcome], None] | None = None) -> Plan:
    """Key every trace by its digest; leave out the pairs whose results exist.

    No cluster is needed for this, so a rerun with nothing left to do starts none."""
    plan = Plan(specs=specs, outcomes=[TraceOutcome(path=str(p)) for p in traces], todo=[])
    store.create()
    first_seen: dict[str, str] = {}
    for out in plan.outcomes:
        try:
            out.digest = trace_digest(out.path)
        except (KmemtraceError, OSError) as exc:
            _fail(out, failure_text(exc), on_task)
            continue
        if out.digest in first_seen:
            out.status = "duplicate"
            out.error = f"same trace as {first_seen[out.digest]}"
            continue
        first_seen[out.digest] = out.path
        plan.todo += [(out, s) for s in specs if not store.has(out.digest, s)]
    return plan


def run_fleet(client, plan: Plan, store: ResultStore, *, scheduler: str, workers: int,
              on_task: Callable[[TraceOutcome], None] | None = None,
              say: Callable[[str], None] = lambda _: None) -> Manifest:
    """Replay the plan's pairs on ``client`` (none: no client needed); write the manifest."""
    todo = plan.todo

    def submit(batch):
        return {client.submit(replay_task, out.path, out.digest, spec, pure=False,
                              key=f"kmemtrace-replay-{out.digest[:12]}-{spec.key}"):
                (out, spec) for out, spec in batch}

    def collect(futures) -> None:
        from distributed import as_completed

        for fut in as_completed(futures):
            out, spec = futures[fut]
            rows = fut.exception() if fut.status == "error" else fut.result()
            if isinstance(rows, BaseException | TaskFailure):
                reason = rows.reason if isinstance(rows, TaskFailure) else failure_text(rows)
                _fail(out, reason, on_task)
            else:
                store.write(out.digest, spec, rows)
                out.tasks += 1
                if on_task:
                    on_task(out)
            fut.release()

    if todo and not all(client.run(engine_is_compiled).values()):
        say(f"compiling the replay engine once (~{COMPILE_SECONDS} s; cached for later runs)")
        collect(submit(todo[:1]))
        todo = todo[1:]
    if todo:
        collect(submit(todo))
    for out in plan.outcomes:
        if out.status == "pending":
            out.status = "done" if out.tasks else "skipped"
    manifest = Manifest(era=plan.specs[0].era, samples=plan.specs[0].samples,
                        specs=plan.specs, traces=plan.outcomes, scheduler=scheduler,
                        workers=workers, wall_s=round(time.perf_counter() - plan.started, 3))
    store.write_manifest(manifest)
    return manifest


def _fail(out: TraceOutcome, reason: str,
          on_task: Callable[[TraceOutcome], None] | None) -> None:
    if out.status != "failed":
        out.status, out.error = "failed", reason
    if on_task:
        on_task(out)
