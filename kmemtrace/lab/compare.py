"""``lab compare``: the same workload N times on the stock and on a patched kernel, compared.

Guest times are emulated (TCG), so the comparison is about what the kernels *do* with the
workload's objects and memcgs (event counts, lifecycles, replayed strategy metrics), not
about speed. The statistics are ``kmemtrace compare``'s; this module only produces the two
sets of traces and hands them over.
"""

import dataclasses
import importlib.util
import subprocess
import sys
from pathlib import Path

from kmemtrace.lab import LabError, build, images
from kmemtrace.lab.record import LabRun, run_in_guest
from kmemtrace.lab.vm import GuestSpec


def record_sets(patches: list[Path], command: list[str], runs: int, out_dir: Path,
                record_args: list[str], guest: GuestSpec, say, echo) -> dict[str, list[Path]]:
    """Build (incrementally) the patched image, then record ``runs`` traces on each kernel."""
    if out_dir.exists() and any(out_dir.iterdir()):
        raise LabError(f"{out_dir}: already exists and is not empty; choose another -o")
    image = build.build(patches, None, say)
    sets: dict[str, list[Path]] = {"stock": [], "patched": []}
    for label, kernel in (("stock", images.STOCK), ("patched", str(image))):
        for i in range(1, runs + 1):
            out = out_dir / f"{label}-{i}"
            say(f"[{label} {i}/{runs}] recording on {kernel}")
            spec = dataclasses.replace(guest)
            rc, _ = run_in_guest(LabRun(kernel, out, command, record_args, spec), echo)
            if rc:
                raise LabError(f"the workload exited with status {rc} on the {label} kernel",
                               tip=f"trace and console: {out}, {out}.console.log")
            sets[label].append(out)
    return sets


def compare(sets: dict[str, list[Path]], extra: list[str]) -> int:
    """Run ``kmemtrace compare STOCK... -- PATCHED...``; its exit status is ours."""
    if importlib.util.find_spec("kmemtrace.cli.compare") is None:
        traces = " ".join(str(p) for p in sets["stock"] + sets["patched"])
        raise LabError("`kmemtrace compare` is not part of this install",
                       tip=f"the traces are recorded: {traces}")
    cmd = [sys.executable, "-m", "kmemtrace", "compare", *extra,
           *map(str, sets["stock"]), "--", *map(str, sets["patched"])]
    return subprocess.run(cmd).returncode
