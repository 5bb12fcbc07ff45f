"""Struct offsets and enum values from the running kernel's BTF (``/sys/kernel/btf/vmlinux``).

Why: BCC compiles against whatever kernel headers are installed, and on this kind of host
they belong to another kernel (6.1 headers, 6.18 kernel), so any ``a->b`` in BPF C would
use the wrong layout. The recorder instead reads the few offsets it needs from BTF, which
the running kernel describes itself, and passes them to the compiler as ``-D`` macros.

This is a small self-contained reader of the BTF format (``include/uapi/linux/btf.h``):
it indexes every type once, then answers member-offset, enum-value and prototype queries.
"""

import struct
from dataclasses import dataclass
from pathlib import Path

from kmemtrace.errors import KernelSupportError

VMLINUX_BTF = Path("/sys/kernel/btf/vmlinux")
BTF_MAGIC = 0xEB9F

# BTF_KIND_* values and the size of the data that follows each btf_type.
INT, PTR, ARRAY, STRUCT, UNION, ENUM, FWD, TYPEDEF = 1, 2, 3, 4, 5, 6, 7, 8
VOLATILE, CONST, RESTRICT, FUNC, FUNC_PROTO, VAR, DATASEC = 9, 10, 11, 12, 13, 14, 15
FLOAT, DECL_TAG, TYPE_TAG, ENUM64 = 16, 17, 18, 19
_MODIFIERS = (TYPEDEF, VOLATILE, CONST, RESTRICT, TYPE_TAG)


def _extra_bytes(kind: int, vlen: int) -> int:
    if kind in (INT, VAR, DECL_TAG):
        return 4
    if kind == ARRAY:
        return 12
    if kind in (STRUCT, UNION, DATASEC, ENUM64):
        return 12 * vlen
    if kind in (ENUM, FUNC_PROTO):
        return 8 * vlen
    return 0


@dataclass(frozen=True)
class BtfType:
    """One type record: kind, name, size-or-type, and the offset of its trailing data."""

    kind: int
    name: str
    vlen: int
    kind_flag: bool
    size_or_type: int
    data_off: int  # absolute offset in the blob of the kind-specific data


class Btf:
    """An indexed BTF blob. Type id 0 is ``void``; ids start at 1 as in the kernel."""

    def __init__(self, blob: bytes):
        if len(blob) < 24:
            raise ValueError("BTF blob too short")
        magic, _version, _flags, hdr_len = struct.unpack_from("<HBBI", blob, 0)
        if magic != BTF_MAGIC:
            raise ValueError(f"not a BTF blob (magic {magic:#x})")
        type_off, type_len, str_off, str_len = struct.unpack_from("<IIII", blob, 8)
        self._blob = blob
        self._str_base = hdr_len + str_off
        self._str_end = self._str_base + str_len
        self.types: list[BtfType | None] = [None]
        self._by_name: dict[tuple[int, str], list[int]] = {}
        pos, end = hdr_len + type_off, hdr_len + type_off + type_len
        unpack = struct.Struct("<III").unpack_from
        while pos < end:
            name_off, info, size_or_type = unpack(blob, pos)
            kind = (info >> 24) & 0x1F
            vlen = info & 0xFFFF
            name = self._str(name_off) if name_off else ""
            tid = len(self.types)
            self.types.append(
                BtfType(kind, name, vlen, bool(info >> 31), size_or_type, pos + 12)
            )
            if name:
                self._by_name.setdefault((kind, name), []).append(tid)
            pos += 12 + _extra_bytes(kind, vlen)

    @classmethod
    def from_file(cls, path: Path = VMLINUX_BTF) -> "Btf":
        try:
            return cls(path.read_bytes())
        except FileNotFoundError:
            raise KernelSupportError(
                f"{path}: no kernel BTF; the recorder needs it for struct offsets",
                tip="use a kernel built with CONFIG_DEBUG_INFO_BTF=y",
            ) from None

    def _str(self, off: int) -> str:
        start = self._str_base + off
        end = self._blob.index(b"\0", start, self._str_end)
        return self._blob[start:end].decode()

    def find(self, kind: int, name: str) -> int | None:
        ids = self._by_name.get((kind, name))
        return ids[0] if ids else None

    def resolve(self, tid: int) -> int:
        """Skip typedefs and qualifiers."""
        while tid and self.types[tid].kind in _MODIFIERS:
            tid = self.types[tid].size_or_type
        return tid

    def members(self, tid: int) -> list[tuple[str, int, int]]:
        """(name, type id, bit offset) of a struct or union's members."""
        t = self.types[tid]
        out = []
        for i in range(t.vlen):
            name_off, mtype, off = struct.unpack_from("<III", self._blob, t.data_off + 12 * i)
            bit_off = off & 0xFFFFFF if t.kind_flag else off
            out.append((self._str(name_off) if name_off else "", mtype, bit_off))
        return out

    def _member_bits(self, tid: int, field: str) -> tuple[int, int] | None:
        """Bit offset and type of ``field``, looking inside anonymous struct/union members."""
        for name, mtype, bit_off in self.members(tid):
            if name == field:
                return bit_off, mtype
            inner = self.resolve(mtype)
            if not name and self.types[inner].kind in (STRUCT, UNION):
                found = self._member_bits(inner, field)
                if found:
                    return bit_off + found[0], found[1]
        return None

    def struct_id(self, struct_name: str) -> int:
        tid = self.find(STRUCT, struct_name)
        if tid is None:
            raise KeyError(f"struct {struct_name} not in BTF")
        return tid

    def has_member(self, struct_name: str, field: str) -> bool:
        tid = self.find(STRUCT, struct_name)
        return tid is not None and self._member_bits(tid, field) is not None

    def offset(self, struct_name: str, field: str) -> int:
        """Byte offset of ``struct_name.field`` (anonymous members searched through)."""
        found = self._member_bits(self.struct_id(struct_name), field)
        if found is None:
            raise KeyError(f"struct {struct_name} has no member {field} in BTF")
        bit_off, _ = found
        if bit_off % 8:
            raise KeyError(f"{struct_name}.{field} is a bit-field")
        return bit_off // 8

    def member_type(self, struct_name: str, field: str) -> int:
        found = self._member_bits(self.struct_id(struct_name), field)
        if found is None:
            raise KeyError(f"struct {struct_name} has no member {field} in BTF")
        return self.resolve(found[1])

    def size_of(self, tid: int) -> int:
        t = self.types[self.resolve(tid)]
        if t.kind == PTR:
            return 8
        if t.kind == ARRAY:
            elem, _index, nelems = struct.unpack_from("<III", self._blob, t.data_off)
            return self.size_of(elem) * nelems
        return t.size_or_type

    def enum_value(self, enumerator: str) -> int | None:
        """Value of an enumerator (searched in every ENUM/ENUM64), or None."""
        for t in self.types[1:]:
            if t.kind == ENUM:
                for i in range(t.vlen):
                    name_off, val = struct.unpack_from("<Ii", self._blob, t.data_off + 8 * i)
                    if self._str(name_off) == enumerator:
                        return val
            elif t.kind == ENUM64:
                for i in range(t.vlen):
                    name_off, lo, hi = struct.unpack_from("<III", self._blob, t.data_off + 12 * i)
                    if self._str(name_off) == enumerator:
                        return lo | hi << 32
        return None

    def describe(self, tid: int) -> str:
        """A C-ish spelling of a type, enough to compare prototypes (``struct kmem_cache *``)."""
        tid = self.resolve(tid)
        if tid == 0:
            return "void"
        t = self.types[tid]
        if t.kind == PTR:
            return self.describe(t.size_or_type) + " *"
        if t.kind in (STRUCT, UNION, FWD):
            kw = "union" if t.kind == UNION or (t.kind == FWD and t.kind_flag) else "struct"
            return f"{kw} {t.name}"
        return t.name

    def func_proto_params(self, tid: int) -> list[str]:
        """Parameter types of a FUNC_PROTO (through a pointer/typedef) as :meth:`describe`."""
        t = self.types[self.resolve(tid)]
        if t.kind == PTR:
            t = self.types[self.resolve(t.size_or_type)]
        if t.kind != FUNC_PROTO:
            raise KeyError("not a function prototype")
        return [
            self.describe(struct.unpack_from("<II", self._blob, t.data_off + 8 * i)[1])
            for i in range(t.vlen)
        ]

    def raw_tracepoint_params(self, event: str) -> list[str] | None:
        """TP_PROTO of ``event`` as the kernel built it (``btf_trace_<event>``), minus __data."""
        tid = self.find(TYPEDEF, f"btf_trace_{event}")
        if tid is None:
            return None
        return self.func_proto_params(self.types[tid].size_or_type)[1:]

    def percpu_offset(self, var: str) -> int | None:
        """Offset of per-CPU variable ``var`` inside ``.data..percpu`` (pahole encodes them).

        Two such offsets differ exactly as the variables' addresses do on any one CPU, which
        is how the recorder finds one per-CPU variable from another it can reach.
        """
        sec = self.find(DATASEC, ".data..percpu")
        if sec is None:
            return None
        t = self.types[sec]
        for i in range(t.vlen):
            vid, off, _size = struct.unpack_from("<III", self._blob, t.data_off + 12 * i)
            if self.types[vid].name == var:
                return off
        return None
