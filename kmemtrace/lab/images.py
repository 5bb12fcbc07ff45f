"""Where lab kernels live, what they are called, and what a trace recorded on one says.

A patched image is named after its kernel release and a digest of its patches, and carries
a JSON sidecar listing them, so any trace recorded on it can name the exact kernel
(``meta["lab"]``) even after the build tree was reused for another patch set.
"""

import hashlib
import json
import os
from pathlib import Path

STOCK = "stock"


def lab_dir() -> Path:
    """Build trees and images: $KMEMTRACE_LAB_DIR, else $XDG_CACHE_HOME/kmemtrace/lab."""
    if os.environ.get("KMEMTRACE_LAB_DIR"):
        return Path(os.environ["KMEMTRACE_LAB_DIR"])
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "kmemtrace" / "lab"


def patch_entries(patches: list[Path]) -> list[dict]:
    return [{"name": p.name, "sha256": hashlib.sha256(p.read_bytes()).hexdigest()}
            for p in patches]


def patch_digest(entries: list[dict]) -> str:
    """12 hex digits over the ordered patch hashes: the same set in another order differs."""
    joined = "\n".join(e["sha256"] for e in entries)
    return hashlib.sha256(joined.encode()).hexdigest()[:12]


def image_name(release: str, entries: list[dict]) -> str:
    return f"bzImage-{release}-kmt-{patch_digest(entries)}"


def info_path(image: Path) -> Path:
    return image.with_name(image.name + ".json")


def modules_path(image: Path) -> Path:
    """INSTALL_MOD_PATH of the image's modules (lib/modules/<release>/ below it)."""
    return image.with_name(image.name + ".modules")


def write_info(image: Path, info: dict) -> None:
    info_path(image).write_text(json.dumps(info, indent=1) + "\n")


def read_info(image: Path) -> dict | None:
    path = info_path(image)
    return json.loads(path.read_text()) if path.exists() else None


def lab_meta(kernel: str, image: Path, accel: str) -> dict:
    """``meta["lab"]`` of a trace recorded in the VM (documented in docs/trace-format.md)."""
    info = read_info(image) if kernel != STOCK else None
    return {
        "kernel": kernel,
        "image": str(image),
        "release": info["release"] if info else None,
        "patches": info["patches"] if info else [],
        "accel": accel,
    }
