"""The model against what the kernel community measured (research/kernel-strategies.md §2).

Each check states the published figure, what our replay gives for the nearest comparable
quantity, a verdict on direction and rough size, and why it differs where it does. The
replay counts events (lock takes, atomics, IPIs, grace periods), not time: where a figure
is wall time, the verdict says what the model can and cannot say.
"""

from dataclasses import dataclass

import numpy as np
import pandas as pd

PAGE_KIB = 4


@dataclass
class Check:
    source: str
    published: str
    ours: str
    verdict: str
    why: str


def _med(df: pd.DataFrame, label: str, metric: str, era: str) -> pd.Series:
    """Per group: median over runs of ``metric`` for ``label`` in ``era``."""
    sel = df[(df.label == label) & (df.era == era)]
    return sel.groupby("group", sort=False)[metric].median()


def churn_groups(df: pd.DataFrame) -> list[str]:
    """Groups whose traces offline more than one memcg: where churn questions apply."""
    offl = df[df.label == "current"].groupby("group", sort=False)["memcg_offlines"].median()
    return [g for g, n in offl.items() if n > 1]


def objcg_memory(df: pd.DataFrame) -> Check:
    """v5.9: slab memory 58 % (SLUB) / 38 % (SLAB) lower, utilisation up to 45 % better."""
    era = "5.15"  # the SLUB rules of the last per-memcg-cache kernels
    before = _med(df, "way1", "slab_pages_mean", era)
    after = _med(df, "objcg", "slab_pages_mean", era)
    delta = (100 * (after / before - 1)).dropna()
    u0, u1 = _med(df, "way1", "slab_utilisation", era), _med(df, "objcg", "slab_utilisation", era)
    ours = "; ".join(f"{g}: objcg {delta[g]:+.0f} % slab pages, utilisation {u0[g]:.1f} "
                     f"-> {u1[g]:.1f} %" for g in delta.index)
    lower = int((delta < 0).sum())
    verdict = (f"direction reproduced in {lower}/{len(delta)} workloads"
               if lower else "direction NOT reproduced")
    if lower and ((delta < -30) & (delta > -70)).any():
        verdict += "; size of the same order in some"
    return Check(
        "v5.9 obj_cgroup series (Roman Gushchin, 2020)",
        "slab memory lower by 58 % (SLUB) / 38 % (SLAB); utilisation up to 45 % better; "
        "~1 GB per host",
        "time-averaged slab pages of accounted caches, objcg vs way1 (the per-memcg-cache "
        f"design since v4.0), era {era}, median over runs. " + ours,
        verdict,
        "Sharing slabs between memcgs removes per-memcg partial slabs and parked empties, "
        "which the model captures. But a recording of one subtree sees only that subtree's "
        "share of each shared root cache, so under objcg the model's shared caches hold "
        "few objects and their parking floor (min_partial and CPU partial slabs per cache) "
        "weighs as if nobody else used them; the kernel amortises it over the whole host. "
        "The published figures are whole-host slab after boot and "
        "login (every cache, years of churn, 8-16 CPUs); ours are only the accounted objects "
        "of one recorded subtree over seconds on 2 CPUs. Where a workload's objects are "
        "short-lived and freed soon, per-memcg caches cost little and the saving shrinks; "
        "objcg's 8 B/object vector and per-object charge are not counted as slab pages.",
    )


def reparent_dying(df: pd.DataFrame) -> Check:
    """v5.3: dying memcgs 1,560 at day 7 without reparenting, 69 with; 241 MB saved."""
    groups = churn_groups(df)
    era = "5.16"
    rows = []
    for g in groups:
        sel = df[(df.group == g) & (df.era == era)]
        med = sel.groupby("label")[["dying_memcgs_end", "dying_memcgs_peak", "memcg_offlines",
                                    "pinned_pages_end"]].median()
        w1, post = med.loc["way1"], med.loc[["way3", "objcg"]]["dying_memcgs_end"].max()
        kib = PAGE_KIB * w1.pinned_pages_end / max(w1.dying_memcgs_end, 1)
        rows.append((g, w1.dying_memcgs_end, w1.memcg_offlines, post,
                     med.loc["current", "dying_memcgs_end"], kib))
    ours = "; ".join(f"{g}: way1 {a:.0f} dying of {n:.0f} offlined (current {c:.0f}), "
                     f"way3/objcg {p:.0f}; {k:.0f} KiB slab pinned per dying memcg"
                     for g, a, n, p, c, k in rows)
    fewer = sum(1 for _, a, _, p, _, _ in rows if p < a)
    return Check(
        "v5.3 kmem_cache reparenting (Roman Gushchin, 2019)",
        "dying memcgs 56 -> 1,560 over 7 days without, 23 -> 69 with; slab+percpu "
        "difference 241 MB (~165 KiB per extra dying memcg)",
        "offline memcgs still held by an undestroyed cache (pre-5.3 semantics: every slab "
        f"page pins its memcg) at trace end, era {era}, median over runs. " + (ours or "no "
        "churn traces"),
        (f"direction reproduced in {fewer}/{len(rows)} churn workloads; growth per offline "
         "visible, days-long accumulation not" if rows else "not checked"),
        "The model has no pins other than slab, so post-5.3 counts are 0 by construction; "
        "the kernel's remaining ~tens are page cache, percpu and other charges. Our traces "
        "last seconds to a minute, so 'thousands' cannot appear; what can be compared is "
        "the fraction of offlined memcgs left dying and the memory each one holds "
        "(the published KiB include percpu memory, ours only slab pages).",
    )


def way1_free_cost(free: pd.DataFrame) -> Check:
    """June 2014: dead-cache frees 3.5x slower at 64 B, 1.8x at 1 KiB (SLAB); ramfs +8 %."""
    ratio = free.locks_per_1k_dead / free.locks_per_1k_live
    extra = (free.locks_per_1k_dead - free.locks_per_1k_live) / 1000
    ours = "; ".join(f"{s} B: {r:.1f}x list_lock takes ({x:.3f} extra per free)"
                     for s, r, x in zip(free["size"], ratio, extra, strict=True))
    shrinks = ratio.iloc[0] > ratio.iloc[-1]
    return Check(
        "Way #1 cost, Davydov 25 Jun 2014 (SLAB, 1M frees/CPU)",
        "dead-cache frees 3.5x slower at 64 B falling to 1.8x at 1 KiB; removing 1M ramfs "
        "files +8 %",
        "the same experiment as traces (allocate, offline, free all) replayed under way1, "
        "SLUB 5.16; node list_lock takes of the free phase, dead vs live cache. " + ours,
        ("direction reproduced (dead frees cost more"
         + ("; the penalty shrinks with object size" if shrinks else "") + "); size not")
        if (ratio > 1).all() else "direction NOT reproduced",
        "His numbers are SLAB, whose dead caches lost their per-CPU arrays so every free "
        "went through free_block() under the node lock; the model is SLUB, where a dead "
        "cache only takes the lock when a slab un-fills or empties (about twice per slab), "
        "so the per-free penalty is a few hundredths of a lock take, consistent with "
        "Davydov's 2015 note that for SLUB 'the runtime overhead is minimal'. Wall time, "
        "and hence the +8 % ramfs figure, is outside what the model counts.",
    )


def bugzilla_190841(df: pd.DataFrame, gp_s: list[float], rmdir_s: list[float]) -> Check:
    """v4.7-v4.9: 3000 memcg create/remove cycles took 6-9 min instead of 13 s."""
    groups = churn_groups(df)
    sel = df[(df.label == "way1") & (df.era == "5.16") & df.group.isin(groups)]
    per = (sel.caches_created / sel.memcg_offlines.clip(lower=1)).groupby(sel.group).median()
    gp = float(np.median(gp_s)) if gp_s else None
    parts = [f"{g}: {c:.1f} caches per memcg" for g, c in per.items()]
    if gp is not None:
        parts.append(f"one grace period here (membarrier) {1e3 * gp:.1f} ms median, so a "
                     "serial GP per cache costs " + ", ".join(
                         f"{3000 * c * gp / 60:.1f} min per 3000 cycles ({g})"
                         for g, c in per.items()))
    if rmdir_s:
        parts.append(f"rmdir on this 6.18 kernel today: {1e3 * np.median(rmdir_s):.2f} ms "
                     f"median over {len(rmdir_s)} ({3000 * np.median(rmdir_s):.2f} s per 3000)")
    predicted = [3000 * c * gp for c in per] if gp is not None else []
    in_range = [p for p in predicted if 60 <= p <= 1200]
    verdict = ("rough size reproduced: per-cache serial grace periods give minutes"
               if in_range else "cannot be checked here" if not predicted else
               "direction only (serial GPs add time; size off by the cache count)")
    return Check(
        "kernel bugzilla 190841 (Jan 2017)",
        "3000 create/remove cycles: v4.4 13 s; v4.7-v4.9 6-9 min (synchronize_sched() per "
        "cache under slab_mutex); v4.10-rc2 60 s; cgroup.memory=nokmem 13 s",
        "way1's offline synchronisation counted per cache (replay), times a grace period "
        "measured on this machine. " + "; ".join(parts),
        verdict,
        "The replay counts grace periods, it does not wait for them; the seconds come from "
        "multiplying by a GP measured here with membarrier(MEMBARRIER_CMD_GLOBAL). The 2017 "
        "machines had more CPUs (longer GPs) and more caches per memcg than our short "
        "containers touch; the model also ignores slab_mutex contention between rmdirs.",
    )


def johannes_pressure(df: pd.DataFrame) -> Check:
    """Apr 2014 reply: Way #2 'would continue to pin css after cgroup destruction indefinitely'."""
    era = "5.16"
    never = _med(df, "way2 pressure-only", "dead_caches_never_destroyed", era)
    periodic = _med(df, "way2", "dead_caches_never_destroyed", era)
    has_pressure = _med(df, "way2 pressure-only", "caches_destroyed", era)
    ours = "; ".join(f"{g}: {never[g]:.0f} caches never destroyed pressure-only vs "
                     f"{periodic[g]:.0f} with a 2 s reaper" for g in never.index)
    worse = int((never >= periodic).sum())
    return Check(
        "Johannes Weiner's reply to the RFC (21 Apr 2014)",
        "Way #2 on pressure 'would continue to pin css after cgroup destruction "
        "indefinitely'",
        "way2 reaping only on PRESSURE events (the recorder sees none on an idle machine) "
        "vs every 2 s. " + ours,
        f"reproduced in {worse}/{len(never)} workloads" if len(never) else "not checked",
        "Recorded traces carry no pressure events, so pressure-only reaps nothing after "
        "the offline shrink; synthetic traces add Poisson pressure"
        + (" (some caches destroyed)" if (has_pressure > 0).any() else "") + ".",
    )


def all_checks(df, free, gp_s, rmdir_s) -> list[Check]:
    return [objcg_memory(df), reparent_dying(df), way1_free_cost(free),
            bugzilla_190841(df, gp_s, rmdir_s), johannes_pressure(df)]
