"""``sizeof`` of the structs a dead memcg keeps alive, from the running kernel's BTF.

Stored in ``meta["kernel"]["struct_sizes"]`` so that a replay prices the metadata of dead
caches, dying memcgs and objcgs for the kernel that was recorded (``model/metadata.py``).
A struct the kernel does not have (``obj_cgroup`` before v5.9, ``memcg_vmstats`` before
it was split out) is left out, and the replay uses its documented default.
"""

from kmemtrace.model.metadata import STRUCTS
from kmemtrace.record.btf import STRUCT, Btf


def read_struct_sizes(btf: Btf | None) -> dict[str, int]:
    if btf is None:
        return {}
    out = {}
    for name in STRUCTS:
        tid = btf.find(STRUCT, name)
        if tid is not None:
            out[name] = btf.size_of(tid)
    return out
