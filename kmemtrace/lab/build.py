"""``lab build``: a patched kernel from the distro's kernel source package, built incrementally.

The tree is unpacked and configured once (x86_64 defconfig plus virtme-ng's fragment plus
the items below) and kept in the lab directory: the first build takes ~9 min on 2 cores,
a later patch set only recompiles what it touches (~40 s). Patches applied last time are
reversed from saved copies before the new set goes on, so the tree always holds exactly
the requested patches. The image boots standalone: BTF and in-kernel headers
(``CONFIG_IKHEADERS``) are built in, which is all BCC needs in the guest.
"""

import glob
import json
import os
import re
import shutil
import subprocess
import time
from pathlib import Path

from kmemtrace.lab import LabError, images
from kmemtrace.lab.vm import find_tools

CONFIG_ITEMS = (
    "CONFIG_MEMCG=y", "CONFIG_DEBUG_INFO_BTF=y", "CONFIG_IKHEADERS=y", "CONFIG_KPROBES=y",
    "CONFIG_FUNCTION_TRACER=y", "CONFIG_BPF_SYSCALL=y", "CONFIG_BPF_JIT=y",
    "CONFIG_BPF_EVENTS=y", "CONFIG_CGROUP_BPF=y",
    # a module that owns a slab cache: modprobe + rmmod runs kmem_cache_destroy
    "CONFIG_ISO9660_FS=m",
)
TOOLS = {"make": "build-essential", "gcc": "build-essential", "bc": "bc", "bison": "bison",
         "flex": "flex", "pahole": "dwarves", "patch": "patch"}
STATE = ".kmemtrace-patches"  # in the tree: copies of the applied patches + applied.json
PROGRESS_EVERY_S = 15.0


def source_tarball(src: Path = Path("/usr/src")) -> Path:
    found = sorted(glob.glob(str(src / "linux-source-*.tar.xz")))
    if not found:
        raise LabError(f"no kernel source package in {src}",
                       tip="apt-get install --no-install-recommends linux-source-6.1 "
                           "build-essential bc bison flex libelf-dev libssl-dev dwarves")
    return Path(found[-1])


def check_tools() -> None:
    missing = sorted({pkg for tool, pkg in TOOLS.items() if shutil.which(tool) is None})
    if missing:
        raise LabError("kernel build tools missing: " + ", ".join(missing),
                       tip="apt-get install --no-install-recommends " + " ".join(missing)
                           + " libelf-dev libssl-dev")


def prepare_tree(say, tarball: Path, vng: str) -> Path:
    """Unpack and configure once; later builds reuse the tree (and its objects)."""
    root = images.lab_dir()
    tree = root / tarball.name.removesuffix(".tar.xz")
    if not (tree / "Makefile").exists():
        say(f"unpacking {tarball} into {root} (1.5 GB)")
        root.mkdir(parents=True, exist_ok=True)
        _check(["tar", "xf", str(tarball), "-C", str(root)], "unpacking the source")
    if not (tree / ".config").exists():
        say("configuring: defconfig + virtme-ng fragment + " + " ".join(CONFIG_ITEMS))
        items = [a for item in CONFIG_ITEMS for a in ("--configitem", item)]
        _check([vng, "--kconfig", *items], "vng --kconfig", cwd=tree)
    return tree


def _check(cmd: list[str], what: str, cwd: Path | None = None) -> str:
    res = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True)
    if res.returncode:
        last = (res.stderr or res.stdout).strip().splitlines()[-3:]
        raise LabError(f"{what} failed (exit {res.returncode}): {' | '.join(last)}")
    return res.stdout


def apply_patches(say, tree: Path, patches: list[Path], entries: list[dict]) -> None:
    """Make the tree hold exactly ``patches``: reverse the previous set, check, apply."""
    state = tree / STATE
    state.mkdir(exist_ok=True)
    applied_file = state / "applied.json"
    applied = json.loads(applied_file.read_text()) if applied_file.exists() else []
    if applied == entries:
        say("patches already applied: " + ", ".join(e["name"] for e in entries))
        return
    for entry in reversed(applied):
        say(f"reverting {entry['name']}")
        _patch(tree, state / entry["sha256"], reverse=True, name=entry["name"])
        applied.remove(entry)
        applied_file.write_text(json.dumps(applied))
    for patch, entry in zip(patches, entries, strict=True):
        _patch(tree, patch, dry_run=True, name=patch.name)
        say(f"applying {patch.name} (sha256 {entry['sha256'][:12]})")
        _patch(tree, patch, name=patch.name)
        shutil.copyfile(patch, state / entry["sha256"])
        applied.append(entry)
        applied_file.write_text(json.dumps(applied))


def _patch(tree: Path, patch: Path, *, name: str, reverse=False, dry_run=False) -> None:
    cmd = ["patch", "-p1", "-N", "--batch", "-i", str(patch.resolve())]
    cmd += ["-R"] if reverse else []
    cmd += ["--dry-run"] if dry_run else []
    res = subprocess.run(cmd, cwd=tree, capture_output=True, text=True)
    if res.returncode:
        why = [ln for ln in res.stdout.splitlines() if "FAILED" in ln or "can't find" in ln
               or "No file" in ln or "malformed" in ln or "Reversed" in ln]
        raise LabError(f"{name} does not apply to {tree.name}"
                       + (f": {why[0].strip()}" if why else f" (patch exit {res.returncode})"),
                       tip=f"check it with: cd {tree} && patch -p1 --dry-run < {patch}")


def make(say, tree: Path, jobs: int, log: Path) -> None:
    """make bzImage modules with a progress line every PROGRESS_EVERY_S; full log kept."""
    cmd = ["make", f"-j{jobs}", "bzImage", "modules"]
    say(f"building: {' '.join(cmd)} in {tree} (log: {log})")
    started = time.monotonic()
    next_say = started + PROGRESS_EVERY_S
    compiled, last = 0, ""
    with open(log, "w") as fh:
        proc = subprocess.Popen(cmd, cwd=tree, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True)
        for line in proc.stdout:
            fh.write(line)
            m = re.match(r"\s+(CC|LD|AR|BTF|AS)\s+(\S+)", line)
            if m:
                compiled += m.group(1) == "CC"
                last = m.group(2)
            if time.monotonic() >= next_say:
                say(f"  {time.monotonic() - started:5.0f} s: {compiled} files compiled, "
                    f"now {last}")
                next_say = time.monotonic() + PROGRESS_EVERY_S
        rc = proc.wait()
    if rc:
        errors = [ln.strip() for ln in log.read_text(errors="replace").splitlines()
                  if "error" in ln.lower()][:3]
        raise LabError(f"kernel build failed (make exit {rc}): " + " | ".join(errors),
                       tip=f"full log: {log}")
    say(f"  built in {time.monotonic() - started:.0f} s ({compiled} files compiled)")


def install(say, tree: Path, entries: list[dict], output: Path | None) -> Path:
    """Copy the bzImage under its content name, its modules and its JSON sidecar."""
    release = _check(["make", "-s", "kernelrelease"], "make kernelrelease", cwd=tree).strip()
    name = images.image_name(release, entries)
    image = output.resolve() if output else images.lab_dir() / "images" / name
    image.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(tree / "arch/x86/boot/bzImage", image)
    mods = images.modules_path(image)
    shutil.rmtree(mods, ignore_errors=True)
    _check(["make", "-s", f"INSTALL_MOD_PATH={mods}", "INSTALL_MOD_STRIP=1",
            "modules_install"], "make modules_install", cwd=tree)
    for link in mods.glob("lib/modules/*/build"):  # points into a tree that will change
        link.unlink()
    for link in mods.glob("lib/modules/*/source"):
        link.unlink()
    images.write_info(image, {"name": name, "release": release, "patches": entries,
                              "config": list(CONFIG_ITEMS), "source": tree.name,
                              "built_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ",
                                                         time.gmtime())})
    say(f"image: {image} ({release}, patches {images.patch_digest(entries)})")
    return image


def build(patches: list[Path], output: Path | None, say, jobs: int | None = None) -> Path:
    for p in patches:
        if not p.is_file():
            raise LabError(f"{p}: no such patch file")
    check_tools()
    tree = prepare_tree(say, source_tarball(), find_tools())
    entries = images.patch_entries(patches)
    apply_patches(say, tree, patches, entries)
    make(say, tree, jobs or os.cpu_count() or 1, images.lab_dir() / "build.log")
    return install(say, tree, entries, output)
