"""``kmemtrace info TRACE``: what a trace holds, where it came from, what it lacks."""

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from kmemtrace.cli import app
from kmemtrace.trace.reader import TraceReader
from kmemtrace.trace.summary import summarize


def _probe_rows(plan: list[dict]) -> list[tuple[str, str, bool, str]]:
    """(probe, type, attached, why) per attach-plan entry (see record/probes.py)."""
    return [(e.get("probe", "?"), e.get("type", ""), e.get("status") == "attached",
             e.get("why", "")) for e in plan]


def _render(s: dict, console: Console) -> None:
    kv = console.print
    if not s["complete"]:
        why = (f"writing it failed: {s['write_error']}" if s.get("write_error")
               else "the recording did not end cleanly")
        kv(f"[bold yellow]warning:[/] trace is not sealed ({why}); "
           f"its {s['parts']['count']} listed parts are whole and readable", highlight=False)
    kernel = s["kernel"]
    kv(f"[bold]{s['path']}[/]  format {s['format_version']}, "
       f"{'complete' if s['complete'] else 'INCOMPLETE'}", highlight=False)
    kv(f"kernel     {kernel.get('release', '?')}  "
       + "  ".join(f"{k}={v}" for k, v in kernel.items() if k != "release"), highlight=False)
    source = s["source"]
    if s["workload"]:
        w = s["workload"]
        params = " ".join(f"{k}={v}" for k, v in w.get("params", {}).items())
        source = f"{source}: {w.get('name')} seed={w.get('seed')} {params}"
    kv(f"source     {source}", highlight=False)
    kv(f"recorded   {s['created_utc']} on {s['host']}, {s['ncpus']} CPUs", highlight=False)
    kv(f"time span  {s['clock']['span_s']:.3f} s  ({s['clock']['start_ns']} .. "
       f"{s['clock']['end_ns']} ns)", highlight=False)
    kv(f"parts      {s['parts']['count']} parts, {s['parts']['bytes'] / 1e6:.1f} MB, "
       f"{s['events']:,} events", highlight=False)

    probes = _probe_rows(s["attach_plan"])
    if probes:
        table = Table("probe", "type", "status", "why", title="attach plan",
                      title_justify="left")
        for name, kind, ok, why in probes:
            table.add_row(name, kind, "[green]attached[/]" if ok else "[red]missing[/]", why)
        console.print(table)
    else:
        kv("attach     none (no probes: not a recording)", highlight=False)

    lost = s["lost"]
    if lost.get("total"):
        reasons = ", ".join(f"{k}={v:,}" for k, v in lost.get("by_reason", {}).items())
        kv(f"[bold red]LOST       {lost['total']:,} events ({reasons})[/]", highlight=False)
    else:
        kv("lost       0", highlight=False)
    late = s["late_events"]
    kv(f"late       {late:,} events arrived after their window was sealed"
       if late else "late       0", style="yellow" if late else None, highlight=False)
    implied = s["implied_frees"]
    if implied["total"]:
        top = ", ".join(f"{k}={v:,}" for k, v in list(implied["by_cache"].items())[:5])
        kv(f"implied    {implied['total']:,} frees missing: addresses allocated again while "
           f"still live in the trace ({top})", style="yellow", highlight=False)
    else:
        kv("implied    0 frees missing (no address allocated twice while live)",
           highlight=False)
    m = s["memcgs"]
    kv(f"memcgs     {m['known']} known ({m['in_meta']} in meta.json, {m['created']} mkdir'ed), "
       f"{m['offlined']} offlined, {m['released']} released", highlight=False)

    counts = Table("kind", "events", title="events by kind", title_justify="left")
    for kind, n in s["counts"].items():
        counts.add_row(kind, f"{n:,}")
    console.print(counts)

    caches = Table("id", "cache", "size", "objs/slab", "order", "min_part", "cpu_part",
                   title="caches", title_justify="left")
    merged = []
    for c in s["caches"]:
        aliases = c.get("aliases") or []
        if aliases:
            merged.append(f"{c['name']} is a merged cache: {', '.join(aliases)} are aliases "
                          "of it and are counted under its name")
        caches.add_row(str(c["id"]), c["name"] + (" *" if aliases else ""), str(c["size"]),
                       str(c["objs_per_slab"]), str(c["order"]), str(c["min_partial"]),
                       str(c["cpu_partial"]))
    console.print(caches)
    for line in merged:
        kv(f"* {line}", highlight=False)


@app.command()
def info(
    trace: Annotated[Path, typer.Argument(help="Trace directory.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print the summary as JSON.")] = False,
) -> None:
    """Show a trace's kernel, source, probes, event and LOST counts, caches and memcgs."""
    summary = summarize(TraceReader.open(trace))
    if as_json:
        print(json.dumps(summary, indent=1))
    else:
        _render(summary, Console(soft_wrap=True))
