"""Render functions: a :class:`~kmemtrace.top.snapshot.Snapshot` to rich renderables.

One function per panel (header, memcgs, caches) and :func:`screen` to stack them; another
panel is one more function over the snapshot, passed to :func:`screen` in ``extra``.
"""

from rich.console import Console, Group, RenderableType
from rich.table import Table
from rich.text import Text

from kmemtrace.top.snapshot import Snapshot


def size(n: int | None) -> str:
    """Bytes in binary units, 4 significant figures at most ('-' if unknown)."""
    if n is None:
        return "-"
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(value) < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")


def rate(per_s: float) -> str:
    if per_s < 1e3:
        return f"{per_s:.0f}"
    return f"{per_s / 1e3:.1f}k" if per_s < 1e6 else f"{per_s / 1e6:.2f}M"


def age(seconds: float | None) -> str:
    if seconds is None:
        return ""
    if seconds < 120:
        return f"{seconds:.0f}s"
    return f"{seconds / 60:.0f}m" if seconds < 7200 else f"{seconds / 3600:.1f}h"


def header(snap: Snapshot) -> Text:
    h = snap.header
    lost = sum(h.lost.values())
    text = Text()
    text.append("kmemtrace top", style="bold")
    text.append(f"  {h.host}  kernel {h.kernel}  {h.allocator}  cgroup {h.cgroup}"
                f"  every {h.interval_s:g}s  up {age(h.elapsed_s)}"
                + (f"  subtree {h.subtree}" if h.subtree else "")
                + (f"  recording to {h.record_to}" if h.record_to else "") + "\n")
    text.append(f"attach  {h.attach}; offline from {h.offline_from}\n", style="dim")
    text.append(f"events  {rate(h.events_per_s)}/s ({h.events:,} since start, "
                f"{h.tracked_objects:,} objects live)   ")
    if lost:
        reasons = ", ".join(f"{name} {count:,}" for name, count in h.lost.items())
        text.append(f"lost {lost:,} ({reasons})", style="bold red")
    else:
        text.append("lost 0", style="green")
    text.append("\nmemcgs  ")
    text.append(f"{h.online:,} online, ")
    text.append(f"{'?' if h.dying is None else format(h.dying, ',')} dying",
                style="bold yellow" if h.dying else "")
    text.append(f" (kernel: {h.dying_source}); {h.removed_seen:,} removed since start")
    return text


def memcg_table(snap: Snapshot) -> Table:
    table = Table(title="memcgs (slab live: accounted objects allocated since start, not yet "
                  f"freed; kernel: {snap.kmem_source})", title_justify="left", expand=False,
                  pad_edge=False)
    # On a narrow terminal the two text columns fold; the figures never do.
    table.add_column("memcg", overflow="fold", min_width=16, max_width=56)
    for name in ("state", "slab live", "objects", "kernel", "alloc/s", "free/s"):
        table.add_column(name, justify="left" if name == "state" else "right", no_wrap=True)
    table.add_column("top caches (live)", overflow="fold", max_width=64)
    for row in snap.memcgs:
        if row.online:
            state = Text("online" + (f" {age(row.age_s)}" if row.age_s is not None else ""))
        else:
            state = Text(f"{'freed' if row.released else 'dying'} {age(row.age_s)}",
                         style="yellow")
        label = Text(row.label, style="" if row.online else "bold yellow")
        if not row.online:
            label.append(f" {row.path}", style="dim")
        table.add_row(label, state, size(row.live_bytes), f"{row.live_objects:,}",
                      size(row.kernel_bytes), rate(row.alloc_per_s), rate(row.free_per_s),
                      ", ".join(f"{name} {size(b)}" for name, _objs, b in row.top_caches))
    return table


def cache_table(snap: Snapshot) -> Table:
    table = Table(title="caches (objects, slabs: /sys/kernel/slab; live: tracked since start; "
                  "offline: of those, charged to offline memcgs, and their share of objects)",
                  title_justify="left", expand=False, pad_edge=False)
    table.add_column("cache", overflow="fold", min_width=16)
    for name in ("objects", "slabs", "alloc/s", "free/s", "live", "live bytes", "offline"):
        table.add_column(name, justify="right", no_wrap=True)
    for row in snap.caches:
        share = row.offline_share
        offline = f"{row.offline_objects:,}" + (f" ({share:.1%})" if share is not None else "")
        table.add_row(row.name, "-" if row.objects is None else f"{row.objects:,}",
                      "-" if row.slabs is None else f"{row.slabs:,}", rate(row.alloc_per_s),
                      rate(row.free_per_s), f"{row.live_objects:,}", size(row.live_bytes),
                      Text(offline, style="yellow" if row.offline_objects else ""))
    return table


def screen(snap: Snapshot, extra: tuple[RenderableType, ...] = ()) -> Group:
    """The whole view: header, memcgs, caches, then any extra panels."""
    return Group(header(snap), Text(""), memcg_table(snap), Text(""), cache_table(snap), *extra)


def plain(snap: Snapshot, width: int = 160) -> str:
    """The view as plain text, no colours (``--once --format text``, pipes)."""
    console = Console(width=width, no_color=True, highlight=False, record=True,
                      file=_Discard(), force_terminal=False)
    console.print(screen(snap))
    return "".join(line.rstrip() + "\n" for line in console.export_text().splitlines())


class _Discard:
    """A file that drops what is written: the console is only recorded, then exported."""

    def write(self, _text: str) -> int:
        return 0

    def flush(self) -> None:
        pass
