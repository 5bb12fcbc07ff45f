"""Kernel headers for BCC when none match the running kernel.

BCC's compiler wants ``/lib/modules/$(uname -r)/build``. On a host whose kernel did not come
from the distribution (this VM: 6.18, with Debian's 6.1 headers installed) that path does
not exist and BCC fails with an obscure message. The recorder takes no struct layout from
these headers (offsets come from BTF, see :mod:`kmemtrace.record.btf`); BCC only needs *some*
complete tree for its helper includes. Debian splits a tree in two (``-common`` holds the
sources, ``-<flavour>`` the generated files), so we merge the two into one symlink farm in
kmemtrace's own cache folder and point ``BCC_KERNEL_SOURCE`` at it. We never write into
``/lib/modules``.
"""

import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

MODULES_DIR = Path("/lib/modules")
STAMP = ".kmemtrace-sources"


@dataclass(frozen=True)
class HeaderChoice:
    """How BCC will find headers: ``path`` None means BCC's own lookup works."""

    path: Path | None
    how: str  # one line for the user


def cache_root() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "kmemtrace"


def _natural_key(text: str) -> list:
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", text)]


def _tree_ok(path: Path) -> bool:
    return (path / "include" / "linux").is_dir() or (path / "include" / "generated").is_dir()


def own_headers(release: str, modules_dir: Path = MODULES_DIR) -> Path | None:
    """The running kernel's build tree, or the in-kernel headers archive, if present."""
    build = modules_dir / release / "build"
    if build.is_dir() and _tree_ok(build):
        return build
    kheaders = Path("/sys/kernel/kheaders.tar.xz")
    return kheaders if kheaders.exists() else None


def installed_trees(modules_dir: Path = MODULES_DIR) -> list[tuple[str, list[Path]]]:
    """(release, [build, source]) for each installed header package, newest first.

    ``build`` holds the flavour's generated files and ``source`` the shared sources
    (Debian/Ubuntu split); when they are the same tree, the list has one entry.
    """
    found = []
    if not modules_dir.is_dir():
        return found
    for rel_dir in modules_dir.iterdir():
        build, source = rel_dir / "build", rel_dir / "source"
        if not build.is_dir():
            continue
        parts = [build.resolve()]
        if source.is_dir() and source.resolve() != parts[0]:
            parts.append(source.resolve())
        if any(_tree_ok(p) for p in parts):
            found.append((rel_dir.name, parts))
    found.sort(key=lambda item: _natural_key(item[0]), reverse=True)
    return found


def merge_trees(dst: Path, sources: list[Path]) -> None:
    """Symlink farm of ``sources`` into ``dst``; on a clash the earlier source wins.

    A name that is a directory in two or more sources becomes a real directory in ``dst``
    and is merged recursively; anything else becomes one absolute symlink.
    """
    dst.mkdir(parents=True, exist_ok=True)
    names: dict[str, list[Path]] = {}
    for src in sources:
        for entry in sorted(src.iterdir()):
            names.setdefault(entry.name, []).append(entry)
    for name, entries in names.items():
        dirs = [e for e in entries if e.is_dir()]
        if len(dirs) >= 2:
            merge_trees(dst / name, [Path(os.path.realpath(d)) for d in dirs])
        else:
            (dst / name).symlink_to(os.path.realpath(entries[0]))


def farm_for(release: str, sources: list[Path], root: Path) -> Path:
    """Build (or reuse) the merged tree for ``release`` under ``root``/headers."""
    target = root / "headers" / release
    stamp = "\n".join(str(s) for s in sources) + "\n"
    if (target / STAMP).is_file() and (target / STAMP).read_text() == stamp:
        return target
    tmp = target.with_name(f".{release}.tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    merge_trees(tmp, sources)
    (tmp / STAMP).write_text(stamp)
    shutil.rmtree(target, ignore_errors=True)
    tmp.rename(target)
    return target


def choose_headers(release: str | None = None, root: Path | None = None,
                   build: bool = True) -> HeaderChoice | None:
    """Where BCC should look for headers; None when no usable tree is installed at all.

    ``build=False`` (doctor) only says where the merged tree would go.
    """
    release = release or os.uname().release
    if os.environ.get("BCC_KERNEL_SOURCE"):
        path = Path(os.environ["BCC_KERNEL_SOURCE"])
        return HeaderChoice(path, f"kernel headers: BCC_KERNEL_SOURCE={path} (from environment)")
    own = own_headers(release)
    if own is not None:
        return HeaderChoice(None, f"kernel headers: {own}")
    trees = installed_trees()
    if not trees:
        return None
    other, sources = trees[0]
    root = root or cache_root()
    farm = farm_for(release, sources, root) if build else root / "headers" / release
    return HeaderChoice(
        farm,
        f"kernel headers: none for {release}; using {other}'s merged into {farm} "
        "(struct offsets come from BTF)",
    )


def apply(choice: HeaderChoice) -> None:
    """Point BCC at the chosen tree (read by libbcc when it compiles)."""
    if choice.path is not None:
        os.environ["BCC_KERNEL_SOURCE"] = str(choice.path)
