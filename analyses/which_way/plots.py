"""The study's PNG figures (matplotlib, Agg: no display needed on a server).

Each function draws one figure from the sweep's data frame or timelines and returns the
file name it wrote, so the report can embed exactly what exists.
"""

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import pandas as pd

from analyses.which_way.sweep import MAIN_ERA, MAIN_LABELS, Timeline

PERIOD_LABELS = {"way2 period=0.5s": 0.5, "way2": 2.0, "way2 period=10s": 10.0,
                 "way2 period=60s": 60.0}


def _save(fig, out: Path, name: str) -> str:
    name = name.replace(" ", "-")
    fig.tight_layout()
    fig.savefig(out / name, dpi=110)
    plt.close(fig)
    return name


def timeline(tl: Timeline, out: Path) -> str:
    """The fair metrics over one trace: footprint, stranded memory, dying memcgs."""
    fig, axes = plt.subplots(3, 1, figsize=(8, 8), sharex=True)
    for label in MAIN_LABELS:
        s = tl.by_label[label]
        axes[0].plot(tl.t_s, s["total_pages"] * 4 / 1024, label=label)
        axes[1].plot(tl.t_s, s["stranded_bytes"] / 1024, label=label)
        axes[2].plot(tl.t_s, s["dying_memcgs"], label=label)
    for ax, title in zip(axes, ("slab footprint (MiB, modelled caches)",
                                "stranded by offline memcgs (KiB)",
                                "dying memcgs (each era's rule)"), strict=True):
        ax.set_title(title, fontsize=10)
        ax.grid(alpha=0.3)
    axes[0].legend(ncol=4, fontsize=8)
    axes[2].set_xlabel(f"seconds into trace ({tl.group}, run 0, SLUB {MAIN_ERA})")
    return _save(fig, out, f"timeline-{tl.group}.png")


def calibration(calib: list, out: Path) -> str:
    """Model (objcg, started from the kernel's state) vs /sys/kernel/slab, summed pages,
    and the dying-memcg change, per calibrated trace."""
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for c in calib:
        line, = axes[0].plot(c.t_s, c.kernel_pages * 4 / 1024, "-", alpha=0.8,
                             label=f"{c.group} {c.run} kernel")
        axes[0].plot(c.t_s, c.model_pages * 4 / 1024, "--", color=line.get_color(), alpha=0.8)
        if c.dying is not None:
            d, = axes[1].plot(c.dying.t_s, c.dying.kernel, "-", label=f"{c.group} {c.run}")
            axes[1].plot(c.dying.t_s, c.dying.model, "--", color=d.get_color())
            if c.dying.model_pc.notna().any():
                axes[1].plot(c.dying.t_s, c.dying.model_pc, ":", color=d.get_color())
    axes[0].set_title("slab MiB, scored caches: kernel (solid) vs model (dashed)", fontsize=9)
    axes[1].set_title("dying memcgs since start: kernel v1 (solid), model slab-only (dashed), "
                      "with page cache (dotted)",
                      fontsize=9)
    for ax in axes:
        ax.set_xlabel("seconds into trace")
        ax.grid(alpha=0.3)
    if calib:
        axes[0].legend(fontsize=6, ncol=2)
    return _save(fig, out, "calibration.png")


def cpus(df: pd.DataFrame, groups: list[str], out: Path) -> str:
    """Fair metrics against the replayed CPU count, per strategy (median over runs)."""
    sel = df[(df.era == MAIN_ERA) & df.group.isin(groups) & df.label.isin(MAIN_LABELS)]
    metrics = (("footprint_bytes_avg", "footprint avg (MiB)", 2**20),
               ("stranded_bytes_avg", "stranded avg (KiB)", 2**10))
    fig, axes = plt.subplots(len(metrics), len(groups), figsize=(4 * len(groups), 6),
                             squeeze=False)
    for j, g in enumerate(groups):
        for i, (metric, title, unit) in enumerate(metrics):
            ax = axes[i, j]
            for label in MAIN_LABELS:
                s = sel[(sel.group == g) & (sel.label == label)]
                med = s.groupby("cpus")[metric].median() / unit
                ax.plot(med.index, med.to_numpy(), "o-", label=label)
            ax.set_xscale("log", base=2)
            ax.set_title(f"{g}: {title}", fontsize=9)
            ax.grid(alpha=0.3)
            if i == len(metrics) - 1:
                ax.set_xlabel("replayed CPUs (--cpus)")
    axes[0, 0].legend(fontsize=7)
    return _save(fig, out, "cpus.png")


def way2_period(df: pd.DataFrame, groups: list[str], out: Path) -> str:
    """Way #2's trade: a shorter period strands less but interrupts CPUs more."""
    sel = df[(df.era == MAIN_ERA) & df.label.isin(PERIOD_LABELS) & df.group.isin(groups)]
    sel = sel[sel.cpus == sel.groupby("group").cpus.transform("min")].copy()
    sel["period"] = sel.label.map(PERIOD_LABELS)
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for group, g in sel.groupby("group", sort=False):
        for ax, metric in zip(axes, ("stranded_page_seconds", "flush_ipis"), strict=True):
            agg = g.groupby("period")[metric].agg(["median", "min", "max"])
            ax.errorbar(agg.index, agg["median"], yerr=[agg["median"] - agg["min"],
                        agg["max"] - agg["median"]], marker="o", capsize=3, label=group)
    for ax, title in zip(axes, ("stranded page·s", "flush_all IPIs"), strict=True):
        ax.set_xscale("log")
        ax.set_yscale("symlog")
        ax.set_xlabel("way2 reaper period (s)")
        ax.set_title(title, fontsize=10)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7)
    return _save(fig, out, "way2-period.png")


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
