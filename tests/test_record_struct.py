"""The Python mirror of bpf/kmemtrace.h must match what a C compiler makes of it."""

import subprocess

import numpy as np

from kmemtrace.record.events import (
    BATCH_DTYPE,
    CACHE_DTYPE,
    CG_EVENT_DTYPE,
    EVENT_DTYPE,
    HEADER,
    PC_EVENT_DTYPE,
    K,
)

STRUCTS = {"kmt_event": EVENT_DTYPE, "kmt_cg_event": CG_EVENT_DTYPE, "kmt_cache": CACHE_DTYPE,
           "kmt_batch": BATCH_DTYPE, "kmt_pc_event": PC_EVENT_DTYPE}


def _c_layout(tmp_path) -> dict[str, int]:
    """Compile a program printing sizeof/offsetof for every field, run it, parse the output."""
    lines = []
    for struct, dtype in STRUCTS.items():
        lines.append(f'printf("{struct} %zu\\n", sizeof(struct {struct}));')
        for field in dtype.names:
            lines.append(f'printf("{struct}.{field} %zu\\n", offsetof(struct {struct}, {field}));')
    src = tmp_path / "layout.c"
    src.write_text(
        "#include <stddef.h>\n#include <stdio.h>\n#include <linux/types.h>\n"
        f'#include "{HEADER}"\nint main(void) {{\n' + "\n".join(lines) + "\nreturn 0;\n}\n"
    )
    exe = tmp_path / "layout"
    subprocess.run(["gcc", "-o", str(exe), str(src)], check=True)
    out = subprocess.run([str(exe)], check=True, capture_output=True, text=True).stdout
    return {name: int(value) for name, value in (line.split() for line in out.splitlines())}


def test_dtypes_match_c_layout(tmp_path):
    layout = _c_layout(tmp_path)
    for struct, dtype in STRUCTS.items():
        assert layout[struct] == dtype.itemsize, struct
        for field in dtype.names:
            assert layout[f"{struct}.{field}"] == dtype.fields[field][1], f"{struct}.{field}"


def test_hot_record_is_40_bytes():
    # research/limits.md: 40-byte records (48 with the ring header) keep the drain cheap.
    assert EVENT_DTYPE.itemsize == 40


def test_constants_come_from_the_header():
    assert K["KMT_K_ALLOC"] != K["KMT_K_FREE"]
    assert K["KMT_SIZE_MASK"] == (1 << 24) - 1
    assert CG_EVENT_DTYPE.fields["path"][0] == np.dtype(f"S{K['KMT_CG_PATH_LEN']}")


def test_size_kind_bit_fields_do_not_overlap():
    """bytes | kind << 24 | ctx << 28: each field fits its bits, and ctx covers EventContext."""
    from kmemtrace.trace.schema import EventContext

    kind_bits = K["KMT_KIND_MASK"] << K["KMT_KIND_SHIFT"]
    assert K["KMT_SIZE_MASK"] & kind_bits == 0
    assert K["KMT_KIND_SHIFT"] + K["KMT_KIND_MASK"].bit_length() == K["KMT_CTX_SHIFT"]
    assert max(k for n, k in K.items() if n.startswith("KMT_K_")) <= K["KMT_KIND_MASK"]
    assert max(EventContext) < 1 << (32 - K["KMT_CTX_SHIFT"])
    for ctx in EventContext:
        assert K[f"KMT_CTX_{ctx.name}"] == ctx.value


def test_kernel_loss_reasons_are_lost_reasons():
    from kmemtrace.trace.schema import LostReason

    assert K["KMT_LOST_RINGBUF"] == LostReason.RINGBUF_FULL
    assert K["KMT_LOST_LIVE_MAP"] == LostReason.LIVE_MAP_FULL
    assert K["KMT_LOST_FREE_UNSEEN"] == LostReason.FREE_UNSEEN
    assert K["KMT_NR_LOST"] > max(v for n, v in K.items() if n.startswith("KMT_LOST_"))
