"""``kmemtrace validate TRACE``: the model's slab pages against the kernel's own counts."""

from pathlib import Path, PurePath
from typing import Annotated

import typer

from kmemtrace.cli import app
from kmemtrace.cli.options import EraOption
from kmemtrace.cli.outputs import output_file, write_output
from kmemtrace.cli.replay import announce_compile, warn_about
from kmemtrace.errors import UsageError
from kmemtrace.metrics import slab_samples
from kmemtrace.model.eras import DEFAULT_ERA, get_era
from kmemtrace.replay.engine import replay
from kmemtrace.report.assumptions import recorded_with_objcg
from kmemtrace.report.validate import Validation, validate
from kmemtrace.report.validate_out import render_validate_text, validate_json
from kmemtrace.strategies import REGISTRY, select
from kmemtrace.trace.reader import TraceReader, open_trace

MATCHING = "objcg"  # what 5.9+ kernels do, and the default for traces of unknown kernels


@app.command("validate")
def validate_command(
    trace: Annotated[Path, typer.Argument(help="A recorded trace directory.",
                                          show_default=False)],
    strategy: Annotated[str, typer.Option(
        "--strategy", "-s", help=f"Strategy the recording kernel used, one of "
        f"{', '.join(REGISTRY)}; 5.9+ kernels use {MATCHING}.")] = MATCHING,
    era: EraOption = DEFAULT_ERA,
    json_path: Annotated[Path | None, typer.Option(
        "--json", help="Also write per-cache samples and errors as JSON to this file.",
        show_default=False)] = None,
    from_kernel_state: Annotated[bool, typer.Option(
        "--from-kernel-state", help="Start the model from the kernel's slabs and objects at "
        "record start (first /sys/kernel/slab sample), so that the raw error is the "
        "figure; see docs/replay.md.")] = False,
) -> None:
    """Compare simulated slab pages with the trace's /sys/kernel/slab samples (error %)."""
    if strategy not in REGISTRY:
        raise UsageError(f"unknown strategy {strategy!r} (strategies: {', '.join(REGISTRY)})")
    get_era(era)
    if json_path is not None:
        output_file(json_path, "--json")
    reader = open_trace(trace)
    warn_about(reader)
    v, release, note = validation(reader, strategy, era, from_kernel_state)
    print(render_validate_text(v, PurePath(trace).name, release, note), end="")
    if json_path is not None:
        write_output(json_path, validate_json(v, str(trace), release, note))


def validation(reader: TraceReader, strategy: str, era: str,
               from_kernel_state: bool = False) -> tuple[Validation, str, str]:
    """The model's slabs against the trace's samples: (result, kernel release, note)."""
    announce_compile()
    release = str(reader.meta["kernel"].get("release") or "unknown")
    note = ""
    if recorded_with_objcg(release) and strategy != MATCHING:
        note = (f"Linux {release} uses obj_cgroup (5.9+): validating {strategy} against it "
                "compares the kernel with a strategy it does not run")
    result = replay(reader, select(strategy, {}), era=era, samples=2,
                    from_kernel_state=from_kernel_state)
    v = validate(slab_samples(result.runs[0]), reader.caches, reader.start_ns, strategy,
                 reader.meta["record"].get("all_objects"))
    return v, release, note
