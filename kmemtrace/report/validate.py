"""Model fidelity: the model's slab pages against the kernel's own /sys/kernel/slab samples.

Pure computation over :func:`kmemtrace.metrics.slab_samples`; nothing here prints.

Two errors are given, because the raw one is biased by construction:

* raw: (model - kernel) / kernel. The kernel counts every object of the (possibly
  merged) cache, including objects allocated before the recording began and, by default,
  objects that are not memcg-accounted; the model only knows what the trace holds.
* baseline-corrected: each cache's first sample is taken as the offset between the two
  (kernel - model at that moment) and added to every later model count, so what is
  compared is the *change* since the first sample. The first sample is then exact by
  construction and is left out of the corrected statistics.

Errors are signed percentages of the kernel's count; a cache's "worst" is the error of
largest magnitude, its "median" the median of the magnitudes. Samples where the kernel
reports no slabs have no relative error and are left out. Caches for which the model
never held a slab at a sample time were not touched by the trace (or only by objects the
recorder filtered out): they are listed, not scored, or they would flatten the median.
"""

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class ErrorStats:
    """Median |error| and the error of largest magnitude (signed), in %, over n samples."""

    median_pct: float | None
    worst_pct: float | None
    n: int

    @classmethod
    def of(cls, err: np.ndarray) -> "ErrorStats":
        err = err[np.isfinite(err)]
        if not len(err):
            return cls(None, None, 0)
        return cls(float(np.median(np.abs(err))), float(err[np.argmax(np.abs(err))]),
                   len(err))


@dataclass(frozen=True)
class CacheFit:
    """One cache's samples: kernel and model pages over time, and their errors."""

    cache_id: int
    name: str
    merged_with: tuple[str, ...]  # other caches SLUB merged into this one
    t_s: np.ndarray
    kernel_pages: np.ndarray
    model_pages: np.ndarray
    raw: ErrorStats
    corrected: ErrorStats


@dataclass(frozen=True)
class Validation:
    """Every sampled cache the model held slabs for, and the errors over all of them."""

    strategy: str
    samples: int
    caches: tuple[CacheFit, ...]
    untouched: tuple[str, ...]  # sampled caches the model never held a slab for
    raw: ErrorStats
    corrected: ErrorStats
    t_s: np.ndarray  # per round (k-th sample of every cache): mean time
    total_kernel_pages: np.ndarray  # per round, summed over scored caches
    total_model_pages: np.ndarray  # per round, baseline-corrected, summed
    all_objects: bool | None  # did the recorder see unaccounted objects too (None: unknown)


def pct_error(model: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    """(model - kernel) / kernel in %, NaN where the kernel count is 0."""
    kernel = kernel.astype(float)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(kernel > 0, 100.0 * (model - kernel) / kernel, np.nan)


def merged_aliases(cache: dict) -> tuple[str, ...]:
    """Names SLUB merged into this cache (not itself, not the ':0000192' slab id)."""
    return tuple(a for a in cache.get("aliases") or ()
                 if a != cache["name"] and not a.startswith(":"))


def validate(samples: dict[str, np.ndarray], caches: list[dict], start_ns: int,
             strategy: str, all_objects: bool | None = None) -> Validation:
    """Fit per cache and overall from ``slab_samples(run)`` and the trace's cache table."""
    by_id = {int(c["id"]): c for c in caches}
    fits, untouched = [], []
    for cid in dict.fromkeys(samples["cache_id"].tolist()):
        sel = samples["cache_id"] == cid
        cache = by_id.get(cid, {"name": f"cache {cid}", "order": 0})
        if not samples["model_slabs"][sel].any():
            untouched.append(cache["name"])
            continue
        fits.append(_fit(cid, cache, samples, sel, start_ns))
    raw = np.concatenate([pct_error(f.model_pages, f.kernel_pages) for f in fits] or [[]])
    corrected = np.concatenate([_corrected(f.model_pages, f.kernel_pages)[1:] for f in fits]
                               or [[]])
    t, kernel, model = _rounds(fits)
    return Validation(strategy, len(samples["ts_ns"]), tuple(fits), tuple(untouched),
                      ErrorStats.of(raw), ErrorStats.of(corrected), t, kernel, model,
                      all_objects)


def _fit(cid: int, cache: dict, samples: dict, sel: np.ndarray, start_ns: int) -> CacheFit:
    pages_per_slab = 1 << int(cache.get("order", 0))
    kernel = samples["kernel_slabs"][sel].astype(np.int64) * pages_per_slab
    model = samples["model_slabs"][sel].astype(np.int64) * pages_per_slab
    return CacheFit(cid, cache["name"], merged_aliases(cache),
                    (samples["ts_ns"][sel] - start_ns) / 1e9, kernel, model,
                    ErrorStats.of(pct_error(model, kernel)),
                    ErrorStats.of(_corrected(model, kernel)[1:]))


def _baseline(model: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    """The model's pages shifted by the first sample's offset from the kernel's."""
    return model + (kernel[0] - model[0])


def _corrected(model: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    return pct_error(_baseline(model, kernel), kernel)


def _rounds(fits: list[CacheFit]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Totals per round (the k-th sample of each cache), over the rounds all caches have."""
    n = min((len(f.t_s) for f in fits), default=0)
    if n == 0:
        return np.zeros(0), np.zeros(0, np.int64), np.zeros(0, np.int64)
    t = np.mean([f.t_s[:n] for f in fits], axis=0)
    kernel = np.sum([f.kernel_pages[:n] for f in fits], axis=0)
    model = np.sum([_baseline(f.model_pages, f.kernel_pages)[:n] for f in fits], axis=0)
    return t, kernel, model
