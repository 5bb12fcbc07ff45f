"""``kmemtrace info --verify``: check every part against the digest the writer stored.

Every read already checks what is cheap (row counts, time order, ids, Parquet page CRCs
where the writer wrote them). Verifying also reads every column of every part and
compares each file's SHA-256 with meta.json's, which costs a full pass over the bytes and
so is asked for. Parts written before digests existed cannot be verified: the result says
so instead of passing them silently.
"""

import hashlib
from dataclasses import dataclass, field

from kmemtrace.errors import TraceFormatError
from kmemtrace.trace.reader import TraceReader


@dataclass
class Verification:
    """What was verified, and what could not be (and why)."""

    parts: int = 0
    rows: int = 0
    hashed: int = 0
    unverifiable: list[str] = field(default_factory=list)

    def lines(self) -> list[str]:
        ok = (f"verified {self.parts} parts, {self.rows:,} rows: order, ids and row counts; "
              f"{self.hashed} of {self.parts} against their SHA-256")
        return [ok, *self.unverifiable]


def verify(reader: TraceReader) -> Verification:
    """Read everything; raise naming the first part that does not match meta.json."""
    v = Verification()
    no_digest, no_crc = [], []
    for part, _ in zip(reader.meta["parts"], reader.iter_parts(), strict=True):
        v.parts += 1
        v.rows += part["rows"]
        path = reader.path / "events" / part["file"]
        if part.get("sha256") is None:
            no_digest.append(part["file"])
        else:
            with open(path, "rb") as fh:
                got = hashlib.file_digest(fh, "sha256").hexdigest()
            if got != part["sha256"]:
                raise TraceFormatError(
                    f"{path}: SHA-256 {got[:12]}… differs from meta.json's "
                    f"{part['sha256'][:12]}…; the part was changed after it was sealed")
            v.hashed += 1
        if not part.get("page_checksums"):
            no_crc.append(part["file"])
    for names, what in ((no_digest, "no SHA-256 in meta.json"),
                        (no_crc, "no Parquet page checksums")):
        if names:
            v.unverifiable.append(
                f"could not verify the bytes of {len(names)} part(s) ({_few(names)}): {what} "
                "(written by an older kmemtrace or another tool)")
    return v


def _few(names: list[str]) -> str:
    return ", ".join(names[:3]) + (f" and {len(names) - 3} more" if len(names) > 3 else "")
