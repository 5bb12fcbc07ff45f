"""REPORT.md: calibration, the fair-metric ranking with its spread, host size, sensitivity,
the published-figure checks, threats to validity, and the conclusion.

Every number is read from the data at write time; the prose only names what the numbers
measure, and the conclusion's sentences are chosen by comparisons made here. Cells are
median [min–max] over runs.
"""

import math
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from analyses.which_way.calibrate import (
    LIVE_OVER,
    MOVED_PCT,
    SETTLE_S,
    STRATEGY,
    TARGET_DYING_PCT,
    TARGET_MEDIAN_PCT,
    TARGET_WORST_PCT,
    UNSEEN,
    UNSEEN_ALLOCS,
    Calibration,
)
from analyses.which_way.dying import report_section as dying_report_section
from analyses.which_way.published import Check
from analyses.which_way.sweep import CONFIGS, CPUS, ERAS, MAIN_ERA, MAIN_LABELS, TraceSpec
from analyses.which_way.threats import facts

KIB, MIB = 1024, 1024 * 1024
# (column, header, divisor): lower is better for every one of them
FAIR = [("footprint_bytes_avg", "footprint avg MiB", MIB),
        ("stranded_bytes_avg", "stranded avg KiB", KIB),
        ("waste_bytes_avg", "waste avg MiB", MIB),
        ("metadata_bytes_avg", "metadata avg KiB", KIB),
        ("dying_memcgs_avg", "dying memcgs avg", 1),
        ("dying_memcgs_end", "dying end", 1)]
DESTROY = [("destroyed_at_offline", "destroyed at offline", 1),
           ("destroyed_later", "destroyed later", 1),
           ("destroy_latency_p50_s", "later: p50 s", 1),
           ("never_destroyed_live", "never: still live", 1),
           ("never_destroyed_empty", "never: only empty", 1)]
COST = [("list_lock_1k", "list_lock /1k ev", 1), ("atomic_1k", "atomics /1k ev", 1),
        ("percpu_1k", "percpu ops /1k ev", 1), ("flush_ipis", "IPIs", 1),
        ("rcu_grace_periods", "GPs", 1), ("reparent_moves", "reparent moves", 1)]
RANKED = [c for c, _, _ in FAIR[:5]] + ["sync_1k"]



# What the start state cannot tell, measured by the calibration with the start before and
# after it was laid out (model/start.py), and where SLUB parks empty slabs, measured on the
# recording kernel by analyses/which_way/parking.py. The sampling sentences depend on how
# the traces were recorded (:class:`analyses.which_way.calibrate.Sampling`).
REMAINS_PARKING = (
    "What keeps the worst per cache above 25 %, for the small caches with heavy churn "
    "(`bio-184`, `skbuff_small_head`, `biovec-max`: 10⁵–10⁶ allocations, nearly all "
    "freed). (1) Not where SLUB parks empty slabs: the model does as the recording kernel "
    "does. `python -m analyses.which_way.parking` (as root) fills `dnotify_struct` (128 "
    "objects a slab, 2 CPU partial slabs, `min_partial` 5) to 20 slabs from CPU 0 and "
    "empties it; the 6.18 kernel then reports 7 slabs: 5 on the node list with no object, "
    "1 on CPU 0's partial list, 1 active (`slabs`, `partial`, `objects_partial`, "
    "`slabs_cpu_partial`), and the model's 5.16 and 6.8 rules give the same 7, 5, 1, 1 "
    "(`tests/test_slub_parking.py`; `RAWv6`, 12 a slab, by hand: +9 slabs, 5 and 3, "
    "both alike). The rules (mm/slub.c): `put_cpu_partial` drains a CPU's whole list when "
    "it holds `cpu_partial_slabs` = `DIV_ROUND_UP(2 * cpu_partial, objs_per_slab)` "
    "(`slub_set_cpu_partial`); `__put_partials` and `deactivate_slab` discard an empty slab "
    "only once `n->nr_partial >= s->min_partial`; `__slab_free` leaves a CPU partial slab "
    "that empties where it is (6.8+: `if (prior && !on_node_partial) return;`); only "
    "`flush_all` empties the CPU lists (`kmem_cache_shrink`, the sysfs `shrink` file, "
    "cache destruction, CPU and memory hotplug; not memcg offline on 6.x, where caches are "
    "shared). (2) How many of the start's objects are live: `objects` counts every slab a "
    "CPU holds, active or on its partial list, as full (`show_slab_objects`: capacity less "
    "the free slots of node-partial slabs only; the 7 empty `dnotify_struct` slabs above "
    "read 256 \"objects\", none live). ")
REMAINS_SHRUNK = (
    "All {n} traces were recorded with `record --shrink-at-start`: each cache was shrunk "
    "(its sysfs `shrink` file: `kmem_cache_shrink` flushes every CPU's active and partial "
    "slabs to the node list and frees every empty slab) right before the first sample "
    "read it, and the replay shrinks it at that row too (`tests/test_slub_parking.py`, "
    "`tests/test_record_root.py`). So the start is the kernel's, not bounds on it: of "
    "{slabs:,} slabs at the first samples (summed over caches and traces), {cpu:,} were "
    "held by a CPU ({pct:.1f} %), the only ones whose objects no file gives; taken in the "
    "µs since the shrink, the partial ones by a free from a full slab, the active ones "
    "for an allocation, they start as `objects` counts them less one slot a CPU partial "
    "slab and all but one object of each active one (docs/replay.md). Unshrunk, the start "
    "had to be bounded: the CPUs held 645 of 9 388 slabs in churn run 0 of the 15:58 "
    "study, empty ones parked by churn among them, "
    "which no file tells from full ones (`objects` counts a CPU-held slab full: "
    "`show_slab_objects`), and its worst per traced cache was −41 to +50 % a trace, 1 121 "
    "of 1 170 fits on both targets. What is left: (1) small caches. Shrunk, most caches "
    "start with 1–4 slabs, where one slab is 25–100 %: the table of misses below gives "
    "each in whole slabs. A shrunk cache's model starts at its first sample (read "
    "20–250 ms into the trace): its events before it, whose result that sample already "
    "holds, are taken as before the recording (docs/replay.md); replayed on a start laid "
    "out from the sample, they had left `seq_file` one slab over (+100 %) to the end in "
    "five traces of the 22:06 study. (2) Frees the samples prove missed are counted past "
    "a slab's worth (`whatif.unseen_frees`), no longer past 5 % of the start as well: both "
    "bounds of the proof come from samples whose reads agree, and the cushion hid the 454 "
    "frees (2.0 % of 23 073 TIME_WAIT sockets) that classic run 2 of the 2026-11-28 00:58 "
    "study missed for `tw_sock_TCP`, which then stood in the traced worst at +309 % (34 "
    "slabs over the kernel's 11); the same traces' fits on both targets were 986 of 1 031 "
    "with the cushion and without it. ")
REMAINS_CPU = (
    "{with_cpu} of {n} traces also sampled `cpu_slabs` (active and CPU partial slabs), "
    "`partial` and `objects_partial` (in the first round and every 5th after it), {split} "
    "and their start is laid out where the kernel had its slabs (`kmemtrace/model/start.py`, "
    "docs/replay.md): `slabs − partial − cpu_slabs` full slabs off every list, the "
    "node-partial ones on the node list with the `objects_partial` objects, the CPU-held "
    "ones on the CPUs (each CPU's partial list as long as the first round's "
    "`slabs_cpu_partial` says, one active slab on each CPU of the rest; round robin where "
    "the trace does not say). How many objects are live the samples bound from below (a "
    "sample whose reads agree proves the full slabs' capacity plus `objects_partial` live, "
    "less what the trace's own allocations account for) and from above; the start keeps "
    "the fewest they prove, so a CPU-held slab holds no survivor that no sample proves; "
    "what a later sample proves beyond the first fills the active slabs, then spreads "
    "evenly over the CPU partial slabs (filled one by one, they left `pid` in classic "
    "run 2 with 11 empty CPU partial slabs, which the model discarded at a drain where "
    "the kernel kept all 20: −35 %). "
    "The start before it (to 2026-11-27, git `7128321`) was made by events alone, and an "
    "empty slab could not stay where the kernel parks it, so the CPU-held slabs were given "
    "survivors (the active ones half full, the CPU partial ones full but one slot) that no "
    "free ever reached, and they pinned slabs the kernel drained (`bio-184` at about twice "
    "the kernel's slabs in every churn run). The same calibration on the 13:35 study's "
    "traces (2026-11-27; the report before this one): "
    "with kmemtrace at `7128321`, 1 084 of 1 170 cache fits on both targets and a traced "
    "worst of +67 to +133 % a trace (`bio-184` the worst in six traces); laid out with the "
    "CPU partial slabs shared round robin (git `285b7ac`), 1 115 and −32 to +78 %; laid "
    "out as recorded (git `5ccc6c1`), 1 115 and −32 to +74 % (`bio-184` in churn run 1: "
    "+88 %, +75 %, +38 %); with the missed frees counted as below (git `bccb434`), 1 116 "
    "and −35 to +56 %; with the even spread (git `a810553`), 1 121 and −32 to +56 % "
    "(`bio-184` in service run 0: 5 parked slabs drained a second later than the "
    "kernel's); and with what the trace frees before the first sample counted live at "
    "the start (this report's kmemtrace), the same on those traces. This report's traces "
    "were recorded after those rules were set (15:58): with the even spread, 1 121 of "
    "1 170 and −63 to +34 % (`tw_sock_TCP` in classic run 1: 1 090 TIME_WAIT sockets "
    "freed in the 0.24 s before the first sample, which the start had left out); with "
    "them counted, the table above. Where the samples prove more objects live at the "
    "start than later "
    "samples leave room for (which counts the old objects' frees that name the cache, "
    "and the `kfree`s that only their slab page names), the trace missed frees "
    "(`kfree_rcu` batches and bulk frees, which no tracepoint reports, and RCU-callback "
    "frees no BPF program ran for; `kmalloc-192` in a `drop_caches` run of the 12:25 "
    "study, 4 705 objects; `inode_cache`, `dentry` and `eventpoll_epi` in classic run 1, "
    "1 500, 2 383 and 877, which counting every old object's free back, named ones twice, "
    "had hidden until git `bccb434`): such a cache starts as the "
    "kernel had it and is left out of the traced worst with that evidence (the tables "
    "below). Where a trace has no such fields, ")
REMAINS_ESTIMATE = (
    "the prelude takes, at every sample, the CPUs' "
    "slabs (as many as `ncpus × (1 + cpu_partial_slabs)` and `objects` allow) as empty "
    "on the partial lists and half free when active, and keeps no more survivors than the "
    "least `objects(t)` less those and the trace's net allocations. On the study run of "
    "2026-11-26 16:26 (the figures in this paragraph are from it, not from the traces "
    "above), `bio-184` in churn 1 kept 21 instead of 84, and the traced worst, the median "
    "over the caches that moved "
    "and the fits on target all improved. But it is an estimate: caches that do not churn "
    "(`pid`, `inode_cache`, `kmalloc-96`) then started with fewer slabs than the kernel had "
    "(their worst -29 to -76 %; `kmalloc-96` -69 % from the first sample), and "
    "`bio-184` still sat above: replayed with no survivor at "
    "all it is +50 % at worst (churn 1, 57.5 s: 21 model slabs, 14 kernel; median |error| "
    "4.2 %), +118 % with the 84. ")
REMAINS_TIMING = (
    "Sample timing: these caches have hundreds of objects in flight for a few ms, and "
    "a round of samples over ~240 caches takes 10–50 ms. {stamps} "
    "`slabs` is `node_nr_slabs()` (every "
    "slab of the cache, wherever parked), as is the model's count; 6.18's sheaves do not "
    "apply to these caches (only `maple_node` and `vm_area_struct` set `sheaf_capacity`). "
    "`slabs_cpu_partial` would not settle (2), being itself an estimate "
    "(`slabs_cpu_partial_show`: slabs × objects per slab / 2).")


def remains(calib: list[Calibration]) -> str:
    """What keeps the worst error up, worded for how these traces were sampled."""
    n = len(calib)
    with_cpu = sum(1 for c in calib if c.sampling.cpu_rows)
    own = sum(1 for c in calib if c.sampling.own_stamps)
    if with_cpu:
        split = sum(1 for c in calib if c.sampling.cpu_partial_start)
        cpu = REMAINS_CPU.format(
            with_cpu=with_cpu, n=n,
            split=f"{split} of {n} the slabs on each CPU's partial list at the first round "
                  "(`slabs_cpu_partial`, the cache table's `cpu_partial_start`),"
        ) + REMAINS_ESTIMATE
    else:
        cpu = ("These traces sampled `slabs` and `objects` only (recorders before "
               "2026-11-27; later ones also sample `cpu_slabs`, `partial` and "
               "`objects_partial`, which make the start exact but for the CPU-held slabs' "
               "objects), so " + REMAINS_ESTIMATE)
    if own == n:
        stamps = ("Each sample row carries the stamp of its own cache's reads, so a sample "
                  "is paired with the model at the moment it describes, and the prelude "
                  "takes the traced net allocations within 2 ms of it.")
    else:
        stamps = (f"{n - own} of {n} traces stamp a round once, at its start (recorders "
                  "before 2026-11-27), and a cache read later in the round is paired with "
                  "the model as it was then, so a sample can miss a burst the model "
                  "counts; the prelude takes each sample's traced net allocations at their "
                  "lowest within 0.25 s of it.")
    timing = REMAINS_TIMING.format(stamps=stamps)
    shrunk = [c.sampling for c in calib if c.sampling.shrunk]
    if len(shrunk) == n:
        slabs = sum(s.start_slabs for s in shrunk)
        held = sum(s.start_cpu_slabs for s in shrunk)
        return REMAINS_SHRUNK.format(n=n, slabs=slabs, cpu=held,
                                     pct=100 * held / max(slabs, 1)) + "(3) " + timing
    note = (f"{len(shrunk)} of {n} traces were recorded with `--shrink-at-start`; this "
            "paragraph is about the others. " if shrunk else "")
    return note + REMAINS_PARKING + cpu + "(3) " + timing


def fmt(x) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "–"
    if isinstance(x, float) and math.isinf(x):
        return "never"
    if abs(x) >= 1e4:
        return f"{x / 1e3:.0f}k"
    return f"{x:.0f}" if float(x).is_integer() or abs(x) >= 100 else f"{x:.3g}"


def cell(values: pd.Series, div: float = 1) -> str:
    v = values.dropna().astype(float) / div
    if v.empty:
        return "–"
    med, lo, hi = fmt(float(np.median(v))), fmt(float(v.min())), fmt(float(v.max()))
    return med if lo == hi else f"{med} [{lo}–{hi}]"


def table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(r) + " |" for r in rows])


def with_rates(df: pd.DataFrame) -> pd.DataFrame:
    """Per-1,000-event cost columns, so runs of different lengths compare."""
    out = df.copy()
    events = (out.allocs + out.frees).clip(lower=1)
    for src, dst in (("list_lock_takes", "list_lock_1k"), ("atomic_ops", "atomic_1k"),
                     ("percpu_ops", "percpu_1k")):
        out[dst] = 1000 * out[src] / events
    out["sync_1k"] = out.list_lock_1k + out.atomic_1k + out.percpu_1k + 1000 * (
        out.flush_ipis + out.rcu_grace_periods) / events
    return out


def at(df: pd.DataFrame, cpus: int | None = None) -> pd.DataFrame:
    """The main era at ``cpus`` (None: each trace's recorded CPU count)."""
    sel = df[df.era == MAIN_ERA]
    if cpus is None:
        return sel[sel.cpus == sel.groupby("group").cpus.transform("min")]
    return sel[sel.cpus == cpus]


def group_tables(df: pd.DataFrame, group: str) -> str:
    sel = at(df)
    sel = sel[sel.group == group]
    parts = []
    for cols in (FAIR, DESTROY, COST):
        rows = [[f"`{lb}`"] + [cell(sel[sel.label == lb][c], d) for c, _, d in cols]
                for lb in MAIN_LABELS]
        parts.append(table(["strategy"] + [h for _, h, _ in cols], rows))
    return "\n\n".join(parts)


def ranks(df: pd.DataFrame, groups: list[str], cpus: int | None) -> pd.DataFrame:
    """Per (group, run, metric): each strategy's rank (1 = least; ties share the mean)."""
    sel = at(df, cpus)
    sel = sel[sel.group.isin(groups) & sel.label.isin(MAIN_LABELS)]
    long = sel.melt(id_vars=["group", "run", "label"], value_vars=RANKED, var_name="metric")
    long["rank"] = long.groupby(["group", "run", "metric"])["value"].rank(method="average")
    return long


def ranking_table(long: pd.DataFrame) -> tuple[str, pd.Series]:
    rows = []
    overall = long.groupby(["label", "group", "run"])["rank"].mean()
    for lb in MAIN_LABELS:
        r = long[long.label == lb]
        rows.append([f"`{lb}`"] + [cell(r[r.metric == m]["rank"]) for m in RANKED]
                    + [cell(overall.loc[lb])])
    heads = [h for c, h, _ in FAIR if c in RANKED] + ["sync ops /1k ev", "mean rank"]
    order = overall.groupby(level="label").median().sort_values()
    return table(["strategy", *heads], rows), order


def corpus_table(specs: list[TraceSpec], tf: pd.DataFrame, df: pd.DataFrame) -> str:
    sel = at(df)
    sel = sel[sel.label == "objcg"]
    rows = []
    for group, g in tf.groupby("group", sort=False):
        s = sel[sel.group == group]
        variants = sorted({sp.variant for sp in specs if sp.group == group and sp.variant})
        rows.append([group + (f" ({', '.join(variants)})" if variants else ""), str(len(g)),
                     cell(g.events), cell(s.trace_s), cell(s.memcg_offlines),
                     cell(g.memcgs_ours), cell(g.pressure_rows), cell(g.accounted_pct),
                     "; ".join(x for x in g.load if x) or "–"])
    return table(["workload", "runs", "alloc+free events", "trace s", "memcgs offlined (all)",
                  "memcgs ours", "PRESSURE rows", "accounted allocs %",
                  "load at end (1/5/15)"], rows)


def survivors_table(tf: pd.DataFrame) -> str:
    rows = [[g, cell(s.survivors), cell(s.freed_in_trace_pct), cell(s.freed_after_pressure_pct),
             cell(s.p50_after_offline_s)] for g, s in tf.groupby("group", sort=False)]
    return table(["workload", "objects live at their memcg's offline",
                  "% freed before the trace ended", "% freed after the first PRESSURE row",
                  "p50 offline → free s (of those freed)"], rows)


@dataclass
class CalibSummary:
    """The calibration's figures over all traces, for its section and the conclusion."""

    raw_median: float  # median over traces of the raw median (partly by construction)
    settled: float  # ... after the first SETTLE_S
    moved: float  # ... over the caches that moved
    worst: float  # the worst per-cache error of any trace (signed)
    worst_cache: str
    traced_worst: float  # ... over the caches whose events reach the recorder
    traced_worst_cache: str
    n_excluded: int  # cache fits left out of it that are not idle (no event, 0 % error)
    on_target: tuple[int, int]  # caches meeting both targets, caches scored (all traces)
    dying: list  # per trace: (kernel, slab-only model, model with page cache or None)
    dying_err: list[float]  # |model - kernel| / kernel % (with page cache when recorded)
    dying_with_pc: int  # traces whose model had page cache

    @classmethod
    def of(cls, calib: list[Calibration]) -> "CalibSummary":
        def med(xs):
            xs = [x for x in xs if x is not None]
            return float(np.median(xs)) if xs else float("nan")
        fits = [f for c in calib for f in c.seeded.caches if f.raw.worst_pct is not None]
        w = max(fits, key=lambda f: abs(f.raw.worst_pct))
        tw = max((c for c in calib if c.traced_worst_pct is not None),
                 key=lambda c: abs(c.traced_worst_pct))
        dy = [c.dying_error() for c in calib if c.dying_error()]
        on = [c.caches_on_target() for c in calib]
        return cls(med(c.seeded.raw.median_pct for c in calib),
                   med(c.settled.median_pct for c in calib),
                   med(c.moved.median_pct for c in calib), w.raw.worst_pct, w.name,
                   tw.traced_worst_pct, f"{tw.traced_worst_cache}, {tw.group} {tw.run}",
                   sum(1 for c in calib for x in c.excluded if x["worst_pct"] or x["allocs"]
                       or x["frees_traced"] or x["frees_implied"] or x["allocs_implied"]),
                   (sum(o for o, _ in on), sum(n for _, n in on)), dy,
                   [abs((pc if pc is not None else m) - k) / max(abs(k), 1) * 100
                    for k, m, pc in dy],
                   sum(1 for *_, pc in dy if pc is not None))


def _live_over(x: dict) -> str:
    """The trace's live objects against the kernel's ``objects`` where the first exceeds
    the second most (``calibrate.live_over_kernel``), or a dash."""
    over = x.get("live_over")
    return f"{over[0]:,} > {over[1]:,} at {over[2]:.0f} s" if over else "–"


def _why(w: dict) -> str:
    """A worst cache's reason to be left out of the traced worst, with its counts."""
    if not w["untraced"]:
        return "–"
    if w["untraced"] == UNSEEN and w.get("missed"):
        return f"{w['untraced']} ({w['missed']:,} objects)"
    if w["untraced"] == UNSEEN_ALLOCS and w.get("gained"):
        return f"{w['untraced']} ({_gained(w)})"
    return w["untraced"] + (f" ({_live_over(w)})" if w.get("live_over")
                            and w["untraced"] == LIVE_OVER else "")


def _excluded_table(calib: list[Calibration]) -> str:
    """The caches the traced worst leaves out, per cache and reason over all traces."""
    by: dict[tuple[str, str], list] = {}
    for c in calib:
        for x in c.excluded:
            by.setdefault((x["cache"], x["why"]), []).append((c, x))
    rows = sorted(by.items(), key=lambda kv: -max(abs(x["worst_pct"]) for _, x in kv[1]))
    counts = ("allocs", "frees_traced", "frees_implied", "allocs_implied")
    idle = {key for key, xs in by.items()
            if not any(x["worst_pct"] or any(x[k] for k in counts) for _, x in xs)}
    rows = [r for r in rows if r[0] not in idle]
    note = (f"\n\nAlso left out, with no event in any trace and 0 % error in every one (idle "
            f"caches: nothing happened that the model could follow or miss): {len(idle)} "
            f"caches, {', '.join(f'`{n}`' for n, _ in sorted(idle))}." if idle else "")
    return table(
        ["cache", "left out because", "traces", "raw worst % [min–max]", "allocs",
         "traced frees", "implied frees", "implied allocs",
         "most live in trace > kernel objects (trace)", "most frees missed (trace)",
         "slabs gained > traced allocations (trace)"],
        [[name, why, str(len(xs)),
          f"{fmt(min(x['worst_pct'] for _, x in xs))}–{fmt(max(x['worst_pct'] for _, x in xs))}",
          *(f"{sum(x[k] for _, x in xs):,}" for k in counts), _most_over(xs),
          _most_missed(xs), _most_gained(xs)]
         for (name, why), xs in rows]) + note


def _gained(x: dict) -> str:
    """Slabs the kernel gained between two samples against the traced allocations between
    them (``calibrate.slabs_over_allocs``)."""
    gained, allocs, t = x["gained"]
    return f"{gained} slab(s) with {allocs} traced allocation(s), at {t:.0f} s"


def _most_gained(xs: list) -> str:
    """Of one cache's exclusions, the trace where its slabs outgrew its traced allocations
    most."""
    over = [(c, x) for c, x in xs if x.get("gained")]
    if not over:
        return "–"
    c, x = max(over, key=lambda cx: cx[1]["gained"][0] - cx[1]["gained"][1])
    return f"{_gained(x)} ({c.group} {c.run})"


def _most_missed(xs: list) -> str:
    """Of one cache's exclusions, the trace where the kernel's samples prove the most
    frees missed (``whatif.unseen_frees``)."""
    c, x = max(xs, key=lambda cx: cx[1].get("missed", 0))
    return f"{x['missed']:,} ({c.group} {c.run})" if x.get("missed") else "–"


def _most_over(xs: list) -> str:
    """Of one cache's exclusions, the trace where its live objects exceed the kernel's
    ``objects`` most."""
    over = [(c, x) for c, x in xs if x.get("live_over")]
    if not over:
        return "–"
    c, x = max(over, key=lambda cx: cx[1]["live_over"][0] - cx[1]["live_over"][1])
    return f"{_live_over(x)} ({c.group} {c.run})"


def calibration_section(calib: list[Calibration], previous: tuple[str, str] | None) -> str:
    if not calib:
        return "No trace carried /sys/kernel/slab samples: nothing could be calibrated."
    rows = []
    for c in calib:
        ok, n = c.caches_on_target()
        d = c.dying_error()
        rows.append([f"{c.group} {c.run}", str(n), f"{ok}/{n}",
                     fmt(c.seeded.raw.median_pct), fmt(c.seeded.raw.worst_pct),
                     fmt(c.settled.median_pct), f"{c.n_moved}", fmt(c.moved.median_pct),
                     fmt(c.moved.worst_pct),
                     f"{fmt(c.traced_worst_pct)} ({len(c.excluded)} left out)",
                     fmt(c.empty.median_pct), fmt(c.seeded.corrected.median_pct),
                     f"{d[0]:+.0f} / {d[1]:+.0f} / " + (f"{d[2]:+.0f}" if d[2] is not None
                                                         else "–") if d else "–"])
    main = table(["trace", "caches scored", f"caches ≤{TARGET_MEDIAN_PCT:.0f} % median and "
                  f"≤{TARGET_WORST_PCT:.0f} % worst", "raw median %", "raw worst %",
                  f"raw median % after {SETTLE_S:.0f} s",
                  f"caches that moved ≥{MOVED_PCT:.0f} %", "their raw median %",
                  "their raw worst %", "raw worst % of the caches whose events are traced",
                  "raw median % if started empty", "baseline-corrected median %",
                  "dying memcgs since start, kernel / slab-only model / with page cache"],
                 rows)
    worst_rows = sorted(((c, w) for c in calib for w in c.worst),
                        key=lambda cw: -abs(cw[1]["worst_pct"]))[:12]
    worst_table = table(
        ["trace", "cache", "raw worst %", "at s", "kernel pages then (start)",
         "model pages then", "allocs in trace", "frees naming it", "traced frees",
         "implied frees", "implied allocs", "left out because"],
        [[f"{c.group} {c.run}", w["cache"] + (f" (+{w['merged']} merged)" if w["merged"] else ""),
          fmt(w["worst_pct"]), f"{w['t_s']:.0f}",
          f"{w['kernel_pages']} ({w['kernel_pages_start']})", str(w["model_pages"]),
          f"{w['allocs']:,}", f"{w['frees']:,}", f"{w['frees_traced']:,}",
          f"{w['frees_implied']:,}", f"{w['allocs_implied']:,}", _why(w)]
         for c, w in worst_rows])
    left_out = _excluded_table(calib)
    over_fits = sorted(((c, x) for c in calib for x in c.over_target),
                     key=lambda cx: -abs(cx[1]["worst_pct"]))
    over_table = table(
        ["trace", "cache", "raw worst %", "at s", "kernel pages then", "model pages then",
         "pages a slab", "most slabs off (any sample)", "samples over the target"],
        [[f"{c.group} {c.run}", x["cache"], fmt(x["worst_pct"]), f"{x['t_s']:.0f}",
          str(x["kernel_pages"]), str(x["model_pages"]), str(x["slab_pages"]),
          str(x["most_slabs_off"]), f"{x['samples_over']} of {x['samples']}"]
         for c, x in over_fits])
    first = calib[0]
    big = sorted(first.seeded.caches, key=lambda f: -int(f.kernel_pages[-1]))[:12]
    per = table(["cache", "merged with", "kernel pages end", "model pages end",
                 "raw median %", "raw worst %"],
                [[f.name, ", ".join(f.merged_with[:3]) or "–", str(int(f.kernel_pages[-1])),
                  str(int(f.model_pages[-1])), fmt(f.raw.median_pct), fmt(f.raw.worst_pct)]
                 for f in big])
    k = CalibSummary.of(calib)
    all_med, settled, moved, worst = k.raw_median, k.settled, k.moved, k.worst
    dy, dy_err, dy_pc = k.dying, k.dying_err, k.dying_with_pc
    verdict = (
        f"Slab pages: raw median error {all_med:.1f} % over all traces (target "
        f"≤{TARGET_MEDIAN_PCT:.0f} %: {'met' if all_med <= TARGET_MEDIAN_PCT else 'NOT met'}), "
        f"partly by construction; after the first {SETTLE_S:.0f} s {fmt(float(settled))} %, "
        f"and {fmt(float(moved))} % over the caches that moved ≥{MOVED_PCT:.0f} % "
        "(medians over traces; these are the figures that are not zero by construction); "
        f"worst per cache {worst:+.0f} % (`{k.worst_cache}`; target ≤{TARGET_WORST_PCT:.0f} "
        f"%: {'met' if abs(worst) <= TARGET_WORST_PCT else 'NOT met'} — the table "
        "says how many caches meet it); over the caches whose frees and allocations reach "
        f"the recorder {k.traced_worst:+.0f} % (`{k.traced_worst_cache}`; "
        f"{'met' if abs(k.traced_worst) <= TARGET_WORST_PCT else 'NOT met'}: "
        f"{len(over_fits)} fits miss it; "
        f"{sum(x['most_slabs_off'] <= 1 for _, x in over_fits)} of them stay within one slab "
        "of the kernel at every sample), "
        f"{k.n_excluded} cache fits left out (besides idle caches), each listed below with "
        "why. "
        + (f"The report this one replaced ({previous[0]}) gave worst per cache "
           f"{previous[1]}. " if previous else "")
        + (f"Dying memcgs: the model's change ({dy_pc} of {len(dy)} traces with page "
           "cache, the rest slab-only) differs from the kernel's by "
           f"{np.median(dy_err):.0f} % median (target ≤{TARGET_DYING_PCT:.0f} %: "
           f"{'met' if np.median(dy_err) <= TARGET_DYING_PCT else 'NOT met'})."
           if dy else "Dying memcgs: no kernel count was sampled beside these traces."))
    return (
        f"Strategy `{STRATEGY}` (what 6.x runs), SLUB era {MAIN_ERA}, started from the "
        "kernel's slabs and objects at record start (first `/sys/kernel/slab` sample; "
        "objects of unknown owner; frees of pointers the trace never allocated free them). "
        "Errors are (model − kernel) / kernel per cache and sample, over every cache the "
        "model held a slab for; 'worst' is the largest magnitude.\n\n"
        f"{main}\n\n**{verdict}**\n\n{remains(calib)}\n\n"
        f"Largest caches of {first.group} run {first.run} "
        f"(pages at the last sample):\n\n{per}\n\n"
        "The worst caches over all traces, with what the trace holds for each: a cache whose "
        "frees do not reach the tracepoints (`maple_node` and `kmalloc-96` on 6.18: "
        "`kmem_cache_free_bulk` and `kfree_rcu` batches, which no tracepoint reports and "
        "which needs kprobes or fentry here) shows far fewer frees than allocations, and "
        "the model keeps those objects alive until their addresses are allocated again "
        f"(the implied frees of `kmemtrace info`).\n\n{worst_table}\n\n"
        "How each object's life ended is read off its address's next event: a FREE (traced "
        "free, whichever cache it names: `kfree` names none), another ALLOC (implied free: "
        "the kernel never hands out a live object twice, so its free reached no BPF "
        "program), or, after a FREE, another FREE (implied allocation). A cache is left "
        "out of the traced worst when its implied frees are at least its traced frees, "
        "its implied allocations at least its allocations, nothing of it reached the "
        "trace, or the trace holds more of its objects live than the kernel's `objects` "
        "at some sample: `objects` is an upper bound on the live objects (it counts the "
        "CPU-held slabs' free slots as used), and an object the trace allocated counts "
        "live until the FREE of its address (one allocated again with no FREE between "
        "counts not at all), taken at its lowest within the span of the sample's reads, "
        "so more of them than `objects` proves that frees went missing, however few "
        "implied frees show (`kfree_rcu` batches go through `kfree_bulk`, which no "
        "tracepoint reports), or the kernel's slabs grew between two samples by more than "
        "the cache's traced allocations around them: a slab is made only for an allocation "
        "(`allocate_slab()`), so those prove allocations no program saw (`pde_opener` gets "
        "an empty CPU slab with no `kmem_cache_alloc` event for it: an ftrace instance "
        "filtered on its name saw none in the 12 of 40 tries where a shrunk `pde_opener` "
        "had a slab again 0.3 s later, this machine at rest; the kmalloc tracepoint names "
        "no cache, so a `memdup_user-8` allocation, a `kmem_buckets` cache of 6.11 on, is "
        "filed under `kmalloc-8` by its size). Its error is then the recorder's blind spot "
        "on this kernel "
        "(no kprobes: "
        "docs/recording.md, \"Frees no probe sees\"), not the model's. Left out, over all "
        f"traces:\n\n{left_out}\n\n"
        "The traced cache fits that miss the worst-case target, with how far off in whole "
        "slabs (a slab is the model's and the kernel's unit: a cache of 3 slabs one slab "
        "off is 33 % off) and for how many samples:\n\n"
        + (over_table if over_fits else "none.") + "\n\n"
        "Dying memcgs: v1 has no `nr_dying_descendants`; the kernel figure is the memory "
        "line's `num_cgroups` in `/proc/cgroups` (every memcg not yet freed, dying ones "
        "included) minus the memcg directories listed under `/sys/fs/cgroup/memory`, "
        "sampled each second by the driver; whole system, like the trace. The model's "
        "figure is its own rule for 6.x (an offline memcg is held while its obj_cgroup "
        "has charged objects), alone and with the page cache the trace recorded (PAGE_CACHE "
        "rows: a charged folio holds its memcg until it leaves the cache; docs/replay.md). "
        "Only changes since the start compare: memcgs already dying before the recording "
        "are invisible to the model, and so are folios cached before it, tmpfs folios and "
        "other charges (socket memory), which also hold dying memcgs.")


def host_size(df: pd.DataFrame, groups: list[str]) -> tuple[str, list[str]]:
    """Rank order per metric at the smallest and largest CPU count; what changes."""
    lo, hi = min(CPUS), max(CPUS)
    rows, changed = [], []
    for g in groups:
        for col, head, div in [*FAIR[:2], ("sync_1k", "sync ops /1k ev", 1)]:
            best = {}
            for n in (lo, hi):
                sel = at(df, n)
                sel = sel[(sel.group == g) & sel.label.isin(MAIN_LABELS)]
                med = sel.groupby("label")[col].median().sort_values()
                best[n] = list(med.index)
            vals = []
            for n in CPUS:
                sel = at(df, n)
                sel = sel[(sel.group == g) & (sel.label == "objcg")]
                vals.append(cell(sel[col], div))
            same = best[lo][:3] == best[hi][:3]
            order = [" < ".join(f"`{x}`" for x in best[n][:3]) for n in (lo, hi)]
            rows.append([g, head, *order, "same" if same else "**changes**", *vals])
            if not same:
                changed.append(f"{g} / {head}")
    return table(["workload", "metric", f"best three at {lo} CPUs", f"best three at {hi}",
                  "order"] + [f"`objcg` at {n}" for n in CPUS], rows), changed


def sensitivity(df: pd.DataFrame, groups: list[str]) -> str:
    main = at(df)
    main = main[main.group.isin(groups)]
    labels = [lb for lb in CONFIGS if lb.startswith("way2")]
    period = table(["workload"] + [f"`{lb}`" for lb in labels],
                   [[g] + [cell(main[(main.group == g) & (main.label == lb)]
                                .stranded_page_seconds) for lb in labels] for g in groups])
    w1 = table(["workload", "`way1` (RFC: last page) stranded page·s", "GPs",
                "`way1 v4.0 trigger` stranded page·s", "GPs"],
               [[g] + [cell(main[(main.group == g) & (main.label == lb)][m])
                       for lb in ("way1", "way1 v4.0 trigger")
                       for m in ("stranded_page_seconds", "rcu_grace_periods")]
                for g in groups])
    w4 = table(["workload", "`way4` stranded page·s", "never destroyed",
                "`way4 drop_empty` stranded page·s", "never destroyed"],
               [[g] + [cell(main[(main.group == g) & (main.label == lb)][m])
                       for lb in ("way4", "way4 drop_empty")
                       for m in ("stranded_page_seconds", "dead_caches_never_destroyed")]
                for g in groups])
    eras = sorted(df.era.unique(), key=list(ERAS).index)
    era_rows = []
    for g in groups:
        for lb in MAIN_LABELS:
            sel = df[(df.group == g) & (df.label == lb)]
            sel = sel[sel.cpus == sel.cpus.min()]
            era_rows.append([g, f"`{lb}`"] + [cell(sel[sel.era == e].stranded_page_seconds)
                                              for e in eras])
    era = table(["workload", "strategy"] + [f"SLUB {e}" for e in eras], era_rows)
    return (f"### Way #2 reaper period (stranded page·s)\n\n{period}\n\n"
            f"### Way #1: the RFC's trigger vs v4.0's\n\n{w1}\n\n"
            f"### Way #4 with and without Way #1's drop-empty\n\n{w4}\n\n"
            f"### SLUB era (stranded page·s)\n\n{era}")


def checks_section(checks: list[Check]) -> str:
    return "\n\n".join(
        f"### {c.source}\n\n* **Published:** {c.published}\n* **Ours:** {c.ours}\n"
        f"* **Verdict:** {c.verdict}\n* **Why / limits:** {c.why}" for c in checks)


def threats_section(tf: pd.DataFrame, calib: list[Calibration], changed: list[str],
                    df: pd.DataFrame) -> str:
    if tf.empty:
        return "No recorded traces: nothing measured."
    merged = [(f.merged_with != (), int(f.kernel_pages[-1])) for c in calib
              for f in c.seeded.caches]
    m_n = sum(1 for m, _ in merged if m)
    m_pages = 100 * sum(p for m, p in merged if m) / max(sum(p for _, p in merged), 1)
    real = at(df)
    real = real[(real.source == "real") & (real.label == "objcg")]
    unknown = 100 * real.frees_unknown.sum() / max((real.frees + real.frees_unknown).sum(), 1)
    implied = int(real.frees_implied.sum())
    others = 100 * (1 - tf.memcgs_ours.sum() / max(tf.memcgs.sum(), 1))
    unseen_allocs = [{x["cache"] for x in c.excluded if x["why"] == UNSEEN_ALLOCS}
                     for c in calib]
    return "\n".join([
        f"* **2-CPU VM.** Per-CPU parking grows with CPUs. Replayed at {', '.join(map(str, CPUS))}"
        " CPUs (`--cpus`, tasks hashed onto CPUs): the best-three order changes for "
        + (", ".join(changed) if changed else "no workload and metric") + " (host size "
        "table). Timing (grace periods, lock hold times) is not scaled.",
        f"* **SLUB merging.** {m_n} of {len(merged)} scored caches are merged with others; "
        f"they hold {m_pages:.0f} % of the scored kernel pages. Per-cache figures of a "
        "merged cache are the sum of its aliases.",
        f"* **Objects alive before the recording.** {cell(tf.objects_at_start)} objects at "
        f"start per trace (first sample); {unknown:.1f} % of the frees in the strategy "
        "replays named objects allocated before the recording (counted, not modelled: the "
        "per-strategy replays start empty; only the calibration starts from the kernel).",
        f"* **Frees the tracepoints miss.** Lost per trace: {cell(tf.lost_total)} (nested "
        f"probes {cell(tf.lost_nested)}); `kmem_cache_free_bulk` is not probed on this "
        f"kernel (no kprobes): such frees show up only when the address is reused "
        f"({implied} implied frees over all traces).",
        f"* **Allocations the tracepoints miss.** In {sum(map(bool, unseen_allocs))} of "
        f"{len(calib)} traces the kernel's slabs grew between two samples by more than a "
        "cache's traced allocations (a slab is made only for an allocation): "
        + (", ".join(f"`{n}`" for n in sorted(set().union(*unseen_allocs))) or "none")
        + ". Their error is left out of the calibration's traced worst. Two causes are "
        "known: `pde_opener` gets an empty CPU slab with no `kmem_cache_alloc` event for "
        "it (ftrace agrees), and the kmalloc tracepoint names no cache, so a "
        "`kmem_buckets` allocation (`memdup_user-<n>`) is filed under `kmalloc-<n>` "
        "(docs/recording.md).",
        f"* **Accounting scope.** {cell(tf.accounted_pct)} % of allocations were "
        "memcg-accounted (`__GFP_ACCOUNT` or a SLAB_ACCOUNT cache); the rest are charged to "
        "no memcg in every era from 4.5 on, and are in the footprint of shared caches only.",
        f"* **Interrupt context.** {cell(tf.free_irq_pct)} % of frees and "
        f"{cell(tf.alloc_irq_pct)} % of allocations ran in softirq/hardirq (RCU callbacks "
        "included); interrupt-context allocations are charged to no memcg.",
        f"* **Other helpers' work.** The recordings are whole-system on a shared machine: "
        f"{others:.0f} % of the memcgs in the traces were not ours; of all allocations, "
        f"{cell(tf.allocs_ours_pct)} % were charged to the study's memcgs and "
        f"{cell(tf.allocs_others_pct)} % to other non-root memcgs (other helpers' work; "
        "the rest is the root: kernel threads, the recorder, the driver). The load at each "
        "run's end is in the traces table. Their objects are real traffic in shared "
        "caches, but vary between runs: that is part of the spread.",
        "* **Lifetimes.** No driver sleep frees an object, and no run is padded with one: "
        "each family repeats its work until the recording is 60 s long. The driver sets "
        "the amount of work (files per job, a hog or `drop_caches` every third classic "
        "job, requests per service life, memory limits), not when an object is freed.",
    ])


def conclusion(df: pd.DataFrame, groups: list[str], calib: list[Calibration]) -> str:
    lo, hi = min(CPUS), max(CPUS)
    out = []
    tables = {}
    for n in (lo, hi):
        t, order = ranking_table(ranks(df, groups, n))
        tables[n] = (t, order)
        out.append(f"Ranks at {n} CPUs over the workloads ({', '.join(groups)}) and their "
                   f"runs, SLUB {MAIN_ERA} (1 = least; cells median [min–max] over "
                   f"workload × run):\n\n{t}")
    o_lo, o_hi = tables[lo][1], tables[hi][1]
    k = CalibSummary.of(calib) if calib else None
    calibrated = k is not None and k.settled <= TARGET_MEDIAN_PCT
    out.append(
        f"* By mean rank, the order at {lo} CPUs is "
        + " < ".join(f"`{x}`" for x in o_lo.index) + f"; at {hi} CPUs "
        + " < ".join(f"`{x}`" for x in o_hi.index) + ". "
        + ("The first place holds at both host sizes." if o_lo.index[0] == o_hi.index[0]
           else "The first place changes with host size."))
    if k is None:
        out.append("* Nothing was calibrated: treat the memory figures as the model's.")
    else:
        dy_med = float(np.median(k.dying_err)) if k.dying_err else float("nan")
        out.append(
            f"* Calibration: the model reproduces the recording kernel's slab pages with a "
            f"raw median error of {fmt(k.settled)} % after the first {SETTLE_S:.0f} s "
            f"({fmt(k.moved)} % over the caches that moved; target ≤{TARGET_MEDIAN_PCT:.0f} "
            f"%: {'met' if calibrated else 'NOT met'}); {k.on_target[0]} of "
            f"{k.on_target[1]} cache fits meet both per-cache targets, and the worst is "
            f"{k.worst:+.0f} % (`{k.worst_cache}`; target ≤{TARGET_WORST_PCT:.0f} %: "
            f"{'met' if abs(k.worst) <= TARGET_WORST_PCT else 'NOT met'}); over the caches "
            f"whose frees and allocations reach the recorder {k.traced_worst:+.0f} % "
            f"(`{k.traced_worst_cache}`; "
            f"{'met' if abs(k.traced_worst) <= TARGET_WORST_PCT else 'NOT met'}). Dying memcgs: "
            f"{fmt(dy_med)} % median error against the kernel's count (target "
            f"≤{TARGET_DYING_PCT:.0f} %: "
            f"{'met' if dy_med <= TARGET_DYING_PCT else 'NOT met'}; page cache in the model "
            f"for {k.dying_with_pc} of {len(k.dying)} traces). "
            + ("So the memory figures rest on a model calibrated for 6.x (other eras' rules "
               "are extrapolations of it)" if calibrated else "Treat the memory figures as "
               "the model's, not the kernel's") + "; the dying-memcg figures that rank "
            "strategies are the slab-only share (page cache holds memcgs alike under every "
            "strategy).")
    out.append(
        "* What this cannot tell: fleet-scale accumulation over days, wall-time costs "
        "(the replay counts events), kernels other than the recording one (only 6.x is "
        "calibrated), and memcg pins other than slab.")
    return "\n\n".join(out)


def previous_worst(path: Path) -> tuple[str, str] | None:
    """(date, worst per cache) of the REPORT.md about to be replaced, so that a change of
    the model shows its before and after in the report itself."""
    if not path.exists():
        return None
    text = path.read_text()
    date = re.search(r"^\* \*\*date:\*\* (.+)$", text, re.M)
    worst = re.search(r"worst per cache ([+-]?[\d.]+ %(?: \(`[^`]+`)?)", text)
    if not (date and worst):
        return None
    return date.group(1), worst.group(1) + (")" if "(" in worst.group(1) else "")


def write_report(path, *, header: dict, df: pd.DataFrame, groups: list[str],
                 specs: list[TraceSpec], calib: list[Calibration], checks: list[Check],
                 figures: list[str], free: pd.DataFrame) -> None:
    df = with_rates(df)
    tf = facts(specs)
    head = "\n".join(f"* **{k}:** {v}" for k, v in header.items())
    per_group = "\n\n".join(f"### {g}\n\n{group_tables(df, g)}" for g in df.group.unique())
    figs = "\n\n".join(f"![{f}]({f})" for f in figures)
    size_table, changed = host_size(df, groups)
    free_rows = [[str(r.size), str(r.objs_per_slab), f"{r.locks_per_1k_live:.2f}",
                  f"{r.locks_per_1k_dead:.2f}", f"{r.published_ratio:.2f}x"]
                 for r in free.itertuples()]
    free_tab = table(["size B", "objs/slab", "locks /1k frees live", "locks /1k frees dead",
                      "Davydov SLAB time dead/live"], free_rows)
    text = f"""# Which way? The 2014 RFC's dead kmem caches, answered with data

{head}

The RFC ("how should we deal with dead memcgs' kmem caches?", Davydov, April 2014) asks
how to destroy per-memcg kmem caches whose memcg went offline with objects in them.
Every trace below is replayed under the RFC's baseline (`current`), its four ways, the
5.3–5.8 design (`reparent`) and the 5.9+ design (`objcg`); see `kmemtrace replay
--list-strategies` and research/kernel-strategies.md §4. Cells are median [min–max] over
runs. The metrics are the replay's fair ones (docs/replay.md), defined alike for every
strategy; nothing here is zero by construction for one strategy only.

## Traces

Whole-system recordings (`kmemtrace record --all-objects`, every memcg; memory pressure
from the vmscan tracepoints; page cache charged to memcgs from the filemap tracepoints).
Workload families: see `analyses/which_way/jobs.py`; each repeats its real work (file
jobs, containers, service lives) until the recording is at least 60 s long, and each runs
under a memory limit that its own work exceeds, so the PRESSURE rows are the kernel's.

{corpus_table(specs, tf, df)}

What outlived our job memcgs (objects they allocated, still live at their offline), and
when the kernel freed them — these lifetimes are the input every strategy is judged on:

{survivors_table(tf) if not tf.empty else "No recorded traces."}

## Calibration against kernel truth

{calibration_section(calib, previous_worst(path))}

{dying_report_section(calib, TARGET_DYING_PCT)}

## Results per workload (SLUB {MAIN_ERA}, recorded CPUs)

Footprint = all slab pages; stranded = memory held only because of offline memcgs; waste
= slab bytes − live object bytes; metadata = structs dead memcgs keep alive; dying memcgs
by each era's rule. Destroy classes count cache instances (objcg has none to destroy).
Costs per 1,000 alloc+free events.

{per_group}

## Host size (`--cpus`)

Replayed at {', '.join(map(str, CPUS))} CPUs: each recorded CPU split into N/2, tasks
hashed onto them by pid (docs/replay.md). Medians over runs.

{size_table}

## Sensitivity

{sensitivity(df, groups)}

## Figures

{figs}

## Checks against published measurements

{checks_section(checks)}

Davydov's benchmark as traces (allocate N, offline, free all; way1, SLUB 5.16):

{free_tab}

## Threats to validity

{threats_section(tf, calib, changed, df)}

## Conclusion

{conclusion(df, groups, calib)}
"""
    path.write_text(text)
