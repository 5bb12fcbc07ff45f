"""BTF reader: a hand-built blob with known answers, then the running kernel's BTF."""

import struct
from pathlib import Path

import pytest

from kmemtrace.model.metadata import POINTER_BYTES, STRUCTS
from kmemtrace.record.btf import (
    ARRAY,
    BTF_MAGIC,
    ENUM,
    FUNC_PROTO,
    INT,
    PTR,
    STRUCT,
    TYPEDEF,
    UNION,
    VMLINUX_BTF,
    Btf,
)
from kmemtrace.record.structsizes import read_struct_sizes


class _Builder:
    """Writes a BTF blob type by type, the way the kernel lays it out."""

    def __init__(self):
        self.strings = b"\0"
        self.types = b""
        self.count = 0

    def s(self, name: str) -> int:
        if not name:
            return 0
        off = len(self.strings)
        self.strings += name.encode() + b"\0"
        return off

    def add(self, kind: int, name: str, vlen: int, size_or_type: int, extra: bytes = b"") -> int:
        self.types += struct.pack("<III", self.s(name), kind << 24 | vlen, size_or_type) + extra
        self.count += 1
        return self.count

    def blob(self) -> bytes:
        hdr = struct.pack("<HBBIIIII", BTF_MAGIC, 1, 0, 24, 0, len(self.types),
                          len(self.types), len(self.strings))
        return hdr + self.types + self.strings


@pytest.fixture
def sample() -> Btf:
    b = _Builder()
    u64 = b.add(INT, "long long unsigned int", 0, 8, struct.pack("<I", 64))
    u32 = b.add(INT, "unsigned int", 0, 4, struct.pack("<I", 32))
    inner = b.add(STRUCT, "inner", 1, 8, struct.pack("<III", b.s("deep"), u64, 0))
    # struct outer { u32 a; union { u64 id; struct inner in; }; u64 arr[4]; } (anon union)
    anon = b.add(UNION, "", 2, 8, struct.pack("<III", b.s("id"), u64, 0)
                 + struct.pack("<III", b.s("in"), inner, 0))
    arr = b.add(ARRAY, "", 0, 0, struct.pack("<III", u64, u32, 4))
    outer = b.add(STRUCT, "outer", 3, 48, struct.pack("<III", b.s("a"), u32, 0)
                  + struct.pack("<III", 0, anon, 64) + struct.pack("<III", b.s("arr"), arr, 128))
    ptr = b.add(PTR, "", 0, outer)
    b.add(ENUM, "ids", 2, 4, struct.pack("<Ii", b.s("cpu_id"), 0)
          + struct.pack("<Ii", b.s("memory_id"), 4))
    proto = b.add(FUNC_PROTO, "", 2, 0, struct.pack("<II", 0, ptr) + struct.pack("<II", 0, u32))
    fptr = b.add(PTR, "", 0, proto)
    b.add(TYPEDEF, "btf_trace_demo", 0, fptr)
    return Btf(b.blob())


def test_offsets_through_anonymous_members(sample):
    assert sample.offset("outer", "a") == 0
    assert sample.offset("outer", "id") == 8  # inside the anonymous union at bit 64
    assert sample.offset("outer", "arr") == 16
    assert sample.size_of(sample.member_type("outer", "arr")) == 32
    with pytest.raises(KeyError):
        sample.offset("outer", "nope")


def test_enum_and_prototype(sample):
    assert sample.enum_value("memory_id") == 4
    assert sample.enum_value("absent") is None
    # The first parameter (__data) is dropped, as for real btf_trace_<event> typedefs.
    assert sample.raw_tracepoint_params("demo") == ["unsigned int"]
    assert sample.raw_tracepoint_params("missing") is None


def test_rejects_non_btf():
    with pytest.raises(ValueError):
        Btf(b"\0" * 64)


def test_running_kernel_btf_has_what_the_recorder_reads():
    btf = Btf.from_file(VMLINUX_BTF)
    assert btf.describe(btf.member_type("task_struct", "cgroups")) == "struct css_set *"
    assert btf.describe(btf.member_type("cgroup", "kn")) == "struct kernfs_node *"
    assert btf.size_of(btf.member_type("kernfs_node", "id")) == 8
    assert btf.enum_value("memory_cgrp_id") is not None
    params = btf.raw_tracepoint_params("kmem_cache_alloc")
    assert params is not None and params[2] == "struct kmem_cache *"
    assert btf.raw_tracepoint_params("kfree") == ["long unsigned int", "void *"]


def test_struct_sizes_match_the_running_kernels_own_slab_caches():
    """Independent check: the kernel sizes its own caches of these structs, and
    /sys/kernel/slab says so (one node here)."""
    sizes = read_struct_sizes(Btf.from_file(VMLINUX_BTF))
    slab = Path("/sys/kernel/slab")

    def object_size(cache: str) -> int:
        return int((slab / cache / "object_size").read_text())

    assert sizes["kmem_cache"] == object_size("kmem_cache")
    assert sizes["kmem_cache_node"] == object_size("kmem_cache_node")
    assert sizes["mem_cgroup_per_node"] == object_size("mem_cgroup_per_node")
    assert sizes["mem_cgroup"] + POINTER_BYTES == object_size("mem_cgroup")
    assert set(sizes) == set(STRUCTS)  # a 6.18 kernel has all of them
    assert read_struct_sizes(None) == {}
