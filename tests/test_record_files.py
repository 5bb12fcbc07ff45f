"""Header farm, sysfs parsing and memcg tree: real files in a temporary directory."""

import os
import time
from pathlib import Path

from kmemtrace.record import headers, sysfs


def _tree(root: Path, files: dict[str, str]) -> Path:
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root


def test_merge_prefers_first_source_and_merges_shared_dirs(tmp_path):
    flavour = _tree(tmp_path / "amd64", {"Makefile": "flavour", "include/generated/a.h": "g",
                                         "arch/x86/include/generated/b.h": "gb"})
    common = _tree(tmp_path / "common", {"Makefile": "common", "include/linux/kconfig.h": "k",
                                         "arch/x86/include/asm/c.h": "c"})
    dst = tmp_path / "farm"
    headers.merge_trees(dst, [flavour, common])
    assert (dst / "Makefile").read_text() == "flavour"
    assert (dst / "include/linux/kconfig.h").read_text() == "k"
    assert (dst / "include/generated/a.h").read_text() == "g"
    assert (dst / "arch/x86/include/asm/c.h").read_text() == "c"
    assert (dst / "arch/x86/include/generated/b.h").read_text() == "gb"
    assert not (dst / "include").is_symlink() and (dst / "include/linux").is_symlink()


def test_farm_reused_until_sources_change(tmp_path):
    a = _tree(tmp_path / "a", {"include/linux/x.h": "1"})
    b = _tree(tmp_path / "b", {"include/linux/y.h": "2"})
    farm = headers.farm_for("9.9.9-test", [a], tmp_path / "cache")
    marker = farm / "mine"
    marker.write_text("kept")
    assert headers.farm_for("9.9.9-test", [a], tmp_path / "cache") == farm and marker.exists()
    headers.farm_for("9.9.9-test", [b], tmp_path / "cache")
    assert not marker.exists() and (farm / "include/linux/y.h").exists()


def test_installed_trees_newest_first(tmp_path):
    modules = tmp_path / "modules"
    for rel in ("5.10.0-9-amd64", "6.1.0-56-amd64", "6.1.0-7-amd64"):
        build = _tree(tmp_path / "src" / rel, {"include/generated/autoconf.h": ""})
        (modules / rel).mkdir(parents=True)
        (modules / rel / "build").symlink_to(build)
    (modules / "7.0-nobuild").mkdir()
    found = headers.installed_trees(modules)
    assert [rel for rel, _ in found] == ["6.1.0-56-amd64", "6.1.0-7-amd64", "5.10.0-9-amd64"]


def _slab(root: Path, name: str, object_size: int, **extra) -> None:
    values = {"object_size": object_size, "slab_size": object_size, "objs_per_slab": 8,
              "order": 0, "min_partial": 5, "cpu_partial": 30, "slabs": "3 N0=3",
              "objects": "17 N0=17", **extra}
    _tree(root, {f"{name}/{k}": f"{v}\n" for k, v in values.items()})


def test_slab_caches_with_merged_aliases(tmp_path):
    root = tmp_path / "slab"
    _slab(root, ":A-0001152", 1152)
    _slab(root, "dentry", 192)
    _slab(root, "kmalloc-cg-1k", 1024)
    _slab(root, "kmalloc-96", 96)
    for alias in ("signal_cache", "UNIX"):
        os.symlink(":A-0001152", root / alias)
    caches = sysfs.read_caches(root)
    by = {c["sysfs"]: c for c in caches}
    merged = by[":A-0001152"]
    assert merged["name"] == "UNIX" and merged["accounted"] is True
    assert set(merged["aliases"]) == {"UNIX", "signal_cache", ":A-0001152"}
    assert by["dentry"]["aliases"] == [] and by["dentry"]["size"] == 192
    assert [c["id"] for c in caches] == list(range(len(caches)))
    index = sysfs.name_index(caches)
    assert index["signal_cache"] == index["UNIX"] == merged["id"]
    assert sysfs.kmalloc_sizes(caches, "kmalloc-cg-") == {1024: by["kmalloc-cg-1k"]["id"]}
    assert sysfs.kmalloc_sizes(caches, "kmalloc-") == {96: by["kmalloc-96"]["id"]}
    samples = {cid: (slabs, objs) for cid, slabs, objs in sysfs.sample_slabs(caches, root)}
    assert samples[by["dentry"]["id"]] == (3, 17)


def test_sample_rows_carry_their_own_stamp_and_what_the_cpus_hold(tmp_path):
    """Each cache's row is stamped between its own reads, in read order; the three files of
    what the CPUs hold come with the flag, or all four are 0 when not asked for. A cache
    whose files vanished mid-round is left out."""
    root = tmp_path / "slab"
    _slab(root, "dentry", 192, cpu_slabs="2 N0=2", partial="1 N0=1",
          objects_partial="3 N0=3")
    _slab(root, "filp", 256, cpu_slabs="1 N0=1", partial="0", objects_partial="0")
    caches = sysfs.read_caches(root)
    caches.append({"id": 9, "sysfs": "gone"})
    before = time.clock_gettime_ns(time.CLOCK_MONOTONIC)
    rows = sysfs.sample_slab_rows(caches, cpu_fields=True, root=root)
    after = time.clock_gettime_ns(time.CLOCK_MONOTONIC)
    by = {c["sysfs"]: c["id"] for c in caches}
    assert [r[1:] for r in rows] == [(by["dentry"], 3, 17, 2, 1, 3, 1),
                                     (by["filp"], 3, 17, 1, 0, 0, 1)]
    assert before <= rows[0][0] < rows[1][0] <= after
    bare = sysfs.sample_slab_rows(caches, cpu_fields=False, root=root)
    assert [r[1:] for r in bare] == [(by["dentry"], 3, 17, 0, 0, 0, 0),
                                     (by["filp"], 3, 17, 0, 0, 0, 0)]


def test_memcg_tree_ids_are_inodes(tmp_path):
    (tmp_path / "a" / "b").mkdir(parents=True)
    tree = {m["path"]: m for m in sysfs.memcg_tree(tmp_path)}
    assert tree["/"]["id"] == tmp_path.stat().st_ino and tree["/"]["level"] == 0
    assert tree["/a/b"]["parent"] == tree["/a"]["id"] == (tmp_path / "a").stat().st_ino
    assert tree["/a/b"]["level"] == 2


def test_real_slab_sysfs_parses():
    caches = sysfs.read_caches()
    assert caches and all(c["size"] >= c["object_size"] > 0 for c in caches)
    assert sysfs.kmalloc_sizes(caches, "kmalloc-")
