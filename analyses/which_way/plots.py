"""The study's PNG figures (matplotlib, Agg: no display needed on a server).

Each function draws one figure from the sweep's data frame or timelines and returns the
file name it wrote, so the report can embed exactly what exists.
"""

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from analyses.which_way.sweep import ERAS, MAIN_ERA, MAIN_LABELS, Timeline

PERIOD_LABELS = {"way2 period=0.5s": 0.5, "way2": 2.0, "way2 period=10s": 10.0,
                 "way2 period=60s": 60.0}
COSTS = ("list_lock_takes", "atomic_ops", "percpu_ops", "flush_ipis", "rcu_grace_periods")


def _save(fig, out: Path, name: str) -> str:
    name = name.replace(" ", "-")
    fig.tight_layout()
    fig.savefig(out / name, dpi=110)
    plt.close(fig)
    return name


def timeline(tl: Timeline, out: Path) -> str:
    """Pinned pages (live + empty slabs of dead caches), dead caches and dying memcgs."""
    fig, axes = plt.subplots(3, 1, figsize=(8, 8), sharex=True)
    for label in MAIN_LABELS:
        s = tl.by_label[label]
        axes[0].plot(tl.t_s, s["dead_live_pages"] + s["dead_empty_pages"], label=label)
        axes[1].plot(tl.t_s, s["dead_caches"], label=label)
        axes[2].plot(tl.t_s, s["dying_memcgs"], label=label)
    for ax, title in zip(axes, ("pages pinned by dead memcgs' caches", "dead caches",
                                "dying memcgs held by slab (pre-5.3 rule)"), strict=True):
        ax.set_title(title, fontsize=10)
        ax.grid(alpha=0.3)
    axes[0].legend(ncol=3, fontsize=8)
    axes[2].set_xlabel(f"seconds into trace ({tl.group}, era {MAIN_ERA})")
    return _save(fig, out, f"timeline-{tl.group}.png")


def way2_period(df: pd.DataFrame, out: Path) -> str:
    """Way #2's trade: a shorter period pins less but interrupts CPUs more."""
    sel = df[(df.era == MAIN_ERA) & df.label.isin(PERIOD_LABELS)].copy()
    sel["period"] = sel.label.map(PERIOD_LABELS)
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for group, g in sel.groupby("group", sort=False):
        for ax, metric in zip(axes, ("pinned_page_seconds", "flush_ipis"), strict=True):
            agg = g.groupby("period")[metric].agg(["median", "min", "max"])
            ax.errorbar(agg.index, agg["median"], yerr=[agg["median"] - agg["min"],
                        agg["max"] - agg["median"]], marker="o", capsize=3, label=group)
    for ax, title in zip(axes, ("pinned page·s", "flush_all IPIs"), strict=True):
        ax.set_xscale("log")
        ax.set_yscale("symlog")
        ax.set_xlabel("way2 reaper period (s)")
        ax.set_title(title, fontsize=10)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7)
    return _save(fig, out, "way2-period.png")


def eras(df: pd.DataFrame, group: str, out: Path) -> str:
    """How each strategy's pinning moves with the SLUB era's parking rules."""
    sel = df[(df.group == group) & df.label.isin(MAIN_LABELS)]
    med = sel.groupby(["label", "era"])["pinned_page_seconds"].median().unstack("era")
    med = med.reindex(index=list(MAIN_LABELS), columns=list(ERAS))
    fig, ax = plt.subplots(figsize=(8, 4))
    x = np.arange(len(med.index))
    w = 0.8 / len(ERAS)
    for i, era in enumerate(ERAS):
        ax.bar(x + i * w, med[era].fillna(0), w, label=f"SLUB {era}")
    ax.set_xticks(x + 0.4 - w / 2, med.index)
    ax.set_ylabel("pinned page·s (median)")
    ax.set_title(f"pinning by era ({group})", fontsize=10)
    ax.legend(fontsize=8)
    ax.grid(axis="y", alpha=0.3)
    return _save(fig, out, f"eras-{group}.png")


def hot_path(df: pd.DataFrame, group: str, out: Path) -> str:
    """Synchronisation events per 1,000 trace events, per strategy (log scale)."""
    sel = df[(df.group == group) & (df.era == MAIN_ERA) & df.label.isin(MAIN_LABELS)].copy()
    events = (sel.allocs + sel.frees).clip(lower=1)
    for c in COSTS:
        sel[c] = 1000 * sel[c] / events
    med = sel.groupby("label")[list(COSTS)].median().reindex(list(MAIN_LABELS))
    fig, ax = plt.subplots(figsize=(9, 4))
    x = np.arange(len(COSTS))
    w = 0.8 / len(MAIN_LABELS)
    for i, label in enumerate(MAIN_LABELS):
        ax.bar(x + i * w, med.loc[label].to_numpy() + 1e-3, w, label=label)
    ax.set_xticks(x + 0.4 - w / 2, COSTS, fontsize=8)
    ax.set_yscale("log")
    ax.set_ylabel("per 1,000 alloc+free events")
    ax.set_title(f"hot-path and offline costs ({group}, era {MAIN_ERA})", fontsize=10)
    ax.legend(ncol=3, fontsize=8)
    ax.grid(axis="y", alpha=0.3)
    return _save(fig, out, f"hot-path-{group}.png")


def free_cost(free: pd.DataFrame, out: Path) -> str:
    """Way #1's dead-cache free penalty by object size: model (SLUB) vs Davydov (SLAB)."""
    fig, ax = plt.subplots(figsize=(7, 4))
    ax.plot(free["size"], free.locks_per_1k_dead / free.locks_per_1k_live, "o-",
            label="model, SLUB: list_lock takes dead/live")
    ax.plot(free["size"], free.published_ratio, "s--", label="Davydov 2014, SLAB: time dead/live")
    ax.set_xscale("log", base=2)
    ax.set_xlabel("object size (B)")
    ax.set_ylabel("dead / live")
    ax.set_title("cost of freeing into a dead cache (Way #1)", fontsize=10)
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    return _save(fig, out, "free-cost.png")
