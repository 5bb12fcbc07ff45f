"""``kmemtrace info TRACE``: what was recorded first; ``--all`` for the rest.

A whole-host recording knows 235 caches and every merged alias; printing them all buried
what a reader came for (the command, the memcgs, which caches the events hit, what was
lost). The default view leads with those and names what ``--all`` would add; ``--verify``
reads every byte and says what it could not verify.
"""

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from kmemtrace.cli import app
from kmemtrace.report.format import param_value
from kmemtrace.synth import WORKLOADS
from kmemtrace.trace.reader import TraceReader
from kmemtrace.trace.summary import summarize
from kmemtrace.trace.verify import verify

TOP_CACHES = 10  # caches shown without --all, most allocations first
TOP_MEMCGS = 10


def _probe_rows(plan: list[dict]) -> list[tuple[str, str, bool, str]]:
    """(probe, type, attached, why) per attach-plan entry (see record/probes.py)."""
    return [(str(e.get("probe", "?")), str(e.get("type", "")), e.get("status") == "attached",
             str(e.get("why", ""))) for e in plan]


def _what(s: dict) -> str:
    """The recorded command, or the synthetic workload with its parameters in units."""
    w = s["workload"]
    if w:
        workload = WORKLOADS.get(str(w.get("name")))
        specs = {p.name: p for p in workload.params} if workload else {}
        params = " ".join(f"{k}={param_value(specs.get(k), v)}"
                          for k, v in (w.get("params") or {}).items())
        return f"synth {w.get('name')} seed={w.get('seed')} {params}".rstrip()
    command = " ".join(map(str, s["command"])) or "(no command recorded)"
    cgroup = (s["record"] or {}).get("cgroup")
    return command + (f"  [cgroup {cgroup}]" if cgroup else "")


def _render(s: dict, console: Console, show_all: bool) -> None:
    kv = console.print
    for line in s["warnings"]:
        kv(f"[bold yellow]warning:[/] {line}", highlight=False)
    kernel = s["kernel"]
    kv(f"[bold]{s['path']}[/]  format {s['format_version']}, "
       f"{'complete' if s['complete'] else 'INCOMPLETE'}", highlight=False)
    kv(f"what       {s['source']}: {_what(s)}", highlight=False, markup=False)
    kv(f"kernel     {kernel.get('release', '?')}"
       + ("  [emulated VM: times are stretched]" if kernel.get("emulated_vm") else ""),
       highlight=False, markup=False)
    kv(f"recorded   {s['created_utc']} on {s['host']}, {s['ncpus']} CPUs, "
       f"{s['clock']['span_s']:.3f} s", highlight=False)
    if s["early_events_ns"]:
        kv(f"           the first events precede the clock start by "
           f"{s['early_events_ns'] / 1e6:.1f} ms (in flight while probes attached); "
           "replay starts at them", highlight=False)
    counts = ", ".join(f"{k} {n:,}" for k, n in s["counts"].items())
    kv(f"events     {s['events']:,} in {s['parts']['count']} parts "
       f"({s['parts']['bytes'] / 1e6:.1f} MB): {counts}", highlight=False)
    lost = s["lost"]
    if lost["total"]:
        reasons = ", ".join(f"{k}={v:,}" for k, v in lost["by_reason"].items())
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
           f"still live in the trace ({top}); frees no probe saw (LOST FREE_UNSEEN, "
           "docs/recording.md 'Frees no probe sees')", style="yellow", highlight=False)
    else:
        kv("implied    0 frees missing (no address allocated twice while live)",
           highlight=False)
    _probes(s, console, show_all)
    _memcgs(s, console, show_all)
    _caches(s, console, show_all)


def _probes(s: dict, console: Console, show_all: bool) -> None:
    probes = _probe_rows(s["attach_plan"])
    if not probes:
        console.print("probes     none (not a recording)", highlight=False)
        return
    missing = [p for p in probes if not p[2]]
    console.print(f"probes     {len(probes) - len(missing)} of {len(probes)} attached",
                  highlight=False)
    shown = probes if show_all else missing
    if shown:
        table = Table("probe", "type", "status", "why", title_justify="left",
                      title="attach plan" if show_all else "missing probes")
        for name, kind, ok, why in shown:
            table.add_row(name, kind, "[green]attached[/]" if ok else "[red]missing[/]", why)
        console.print(table)


def _memcgs(s: dict, console: Console, show_all: bool) -> None:
    m = s["memcgs"]
    console.print(f"memcgs     {m['known']} known ({m['in_meta']} in meta.json, "
                  f"{m['created']} mkdir'ed), {m['offlined']} offlined, {m['released']} "
                  "released", highlight=False)
    # Those with life-cycle events are what the replay is about; the rest is the tree.
    lived = [p for p in s["memcg_paths"] if p["events"]]
    shown = s["memcg_paths"] if show_all else lived[:TOP_MEMCGS]
    if not shown:
        return
    table = Table("id", "path", "events in the trace", title="memcgs", title_justify="left")
    for p in shown:
        table.add_row(str(p["id"]), p["path"] or "?", ", ".join(
            e.removeprefix("MEMCG_").lower() for e in p["events"]))
    console.print(table)
    if len(shown) < len(s["memcg_paths"]):
        console.print(f"           {len(s['memcg_paths']) - len(shown)} more memcg(s) "
                      "(--all)", highlight=False)


def _caches(s: dict, console: Console, show_all: bool) -> None:
    caches = s["caches"]
    events = {int(k): v for k, v in s["cache_events"].items()}
    order = list(events) + [c["id"] for c in caches if c["id"] not in events]
    shown = order if show_all else [cid for cid in order if cid in events][:TOP_CACHES]
    table = Table("id", "cache", "allocs", "frees", "size", "objs/slab", "order",
                  title="caches" + ("" if show_all else " with events"), title_justify="left")
    merged = []
    for cid in shown:
        n = events.get(cid, {"allocs": 0, "frees": 0})
        if cid < 0:
            table.add_row("-1", "(unknown cache)", f"{n['allocs']:,}", f"{n['frees']:,}",
                          "", "", "")
            continue
        c = caches[cid]
        aliases = c.get("aliases") or []
        if aliases:
            merged.append(f"{c['name']} is a merged cache: {', '.join(aliases)} are aliases "
                          "of it and are counted under its name")
        table.add_row(str(cid), c["name"] + (" *" if aliases else ""), f"{n['allocs']:,}",
                      f"{n['frees']:,}", str(c["size"]), str(c["objs_per_slab"]),
                      str(c["order"]))
    if shown:
        console.print(table)
    for line in merged:
        console.print(f"* {line}", highlight=False, markup=False)
    hidden = len(caches) - len([cid for cid in shown if cid >= 0])
    if hidden:
        console.print(f"           {hidden} more cache(s) without events here (--all)",
                      highlight=False)


@app.command()
def info(
    trace: Annotated[Path, typer.Argument(help="Trace directory.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print the summary as JSON.")] = False,
    show_all: Annotated[bool, typer.Option(
        "--all", help="Every cache, memcg and probe, not only those the events touch.")] = False,
    check: Annotated[bool, typer.Option(
        "--verify", help="Read every part in full and check it against meta.json's "
        "digests; say what could not be verified.")] = False,
) -> None:
    """What a trace recorded: command, kernel, events, LOST, memcgs, the caches they hit."""
    reader = TraceReader.open(trace)
    verified = verify(reader) if check else None
    summary = summarize(reader)
    if as_json:
        if verified is not None:
            summary["verify"] = {"lines": verified.lines(), "parts": verified.parts,
                                 "hashed": verified.hashed}
        print(json.dumps(summary, indent=1))
        return
    console = Console(soft_wrap=True)
    _render(summary, console, show_all)
    for line in verified.lines() if verified else []:
        console.print(f"verify     {line}", highlight=False)
