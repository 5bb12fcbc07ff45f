"""``validate`` results as 72-column text and JSON, caveats included.

The caveats are part of the result, not small print: a raw error of -90% on a cache the
recorder barely saw says nothing about the model, and the reader must be told why.
"""

import json
import textwrap
from dataclasses import asdict

from kmemtrace import __version__
from kmemtrace.report.text import WIDTH
from kmemtrace.report.validate import ErrorStats, Validation

NO_SAMPLES = ("the trace has no SLAB_SAMPLE events, so there is nothing to validate "
              "against: `kmemtrace record` samples /sys/kernel/slab every "
              "--sample-interval; synthetic traces have none")
MAX_ROUNDS = 10  # over-time rows printed; JSON has them all
_NAME_W = 22


def caveats(v: Validation) -> list[str]:
    """What biases the errors, for this trace."""
    seen = {True: "every slab object (--all-objects)",
            False: "only memcg-accounted objects",
            None: "an unknown subset of objects"}[v.all_objects]
    out = [f"The kernel counts every object of a cache; the recorder saw {seen}.",
           "Objects allocated before the recording began are not in the trace. The raw "
           "error counts them against the model; the baseline-corrected error takes each "
           "cache's first sample as the offset and compares the change since then "
           "(first samples left out)."]
    merged = [f.name for f in v.caches if f.merged_with]
    if merged:
        out.append(f"{len(merged)} scored cache(s) marked * are merged: the kernel's count "
                   "includes their aliases' objects.")
    if v.untouched:
        out.append(f"{len(v.untouched)} sampled cache(s) never held a modelled slab (the "
                   "trace saw none of their objects) and are not scored.")
    return out


def _stats(s: ErrorStats) -> str:
    if s.n == 0:
        return "no samples to score"
    return f"median {s.median_pct:.3g}%, worst {s.worst_pct:+.3g}% (n={s.n})"


def _pct(x: float | None, signed: bool = True) -> str:
    if x is None:
        return "–"
    x = round(x) or 0  # no "-0"
    return f"{x:+d}" if signed else f"{x:d}"


def render_validate_text(v: Validation, trace_name: str, kernel: str, note: str = "") -> str:
    """Summary, caveats, per-cache table and totals over time; no line over 72 columns."""
    lines = [f"trace     {trace_name}", f"kernel    {kernel}", f"strategy  {v.strategy}"]
    if note:
        lines += textwrap.wrap(note, WIDTH, initial_indent="note      ",
                               subsequent_indent=" " * 10)
    if v.samples == 0:
        return "\n".join(lines + textwrap.wrap(NO_SAMPLES, WIDTH, break_on_hyphens=False)) + "\n"
    lines += [f"samples   {v.samples:,} SLAB_SAMPLE events; {len(v.caches)} caches scored",
              f"raw       {_stats(v.raw)}", f"baseline  {_stats(v.corrected)}", ""]
    for c in caveats(v):
        lines += textwrap.wrap(c, WIDTH, initial_indent="- ", subsequent_indent="  ")
    lines += ["", "pages at the last sample; error in % of the kernel's count",
              f"{'cache':<{_NAME_W}} {'kernel':>7} {'model':>7} {'raw':>7} {'worst':>7} "
              f"{'base':>7} {'worst':>7}"]
    for f in sorted(v.caches, key=lambda f: -int(f.kernel_pages[-1])):
        name = (f.name + ("*" if f.merged_with else ""))[:_NAME_W]
        lines.append(f"{name:<{_NAME_W}} {int(f.kernel_pages[-1]):>7} "
                     f"{int(f.model_pages[-1]):>7} {_pct(f.raw.median_pct, False):>7} "
                     f"{_pct(f.raw.worst_pct):>7} {_pct(f.corrected.median_pct, False):>7} "
                     f"{_pct(f.corrected.worst_pct):>7}")
    lines.append("raw, base: median |error|; worst: largest, signed; *: merged cache")
    if len(v.t_s):
        lines += ["", "over time, all scored caches (model baseline-corrected)",
                  f"{'t (s)':>8} {'kernel pages':>13} {'model pages':>12} {'error %':>8}"]
        for i in _spread(len(v.t_s), MAX_ROUNDS):
            k, m = int(v.total_kernel_pages[i]), int(v.total_model_pages[i])
            err = f"{100 * (m - k) / k:+.1f}" if k else "–"
            lines.append(f"{v.t_s[i]:>8.2f} {k:>13,} {m:>12,} {err:>8}")
    return "\n".join(line.rstrip() for line in lines) + "\n"


def _spread(n: int, at_most: int) -> list[int]:
    """Up to ``at_most`` indices spread evenly over 0..n-1, first and last included."""
    if n <= at_most:
        return list(range(n))
    return sorted({round(i * (n - 1) / (at_most - 1)) for i in range(at_most)})


def validate_json(v: Validation, trace_path: str, kernel: str, note: str = "") -> str:
    caches = [{"cache_id": f.cache_id, "name": f.name, "merged_with": list(f.merged_with),
               "t_s": f.t_s.tolist(), "kernel_pages": f.kernel_pages.tolist(),
               "model_pages": f.model_pages.tolist(), "raw": asdict(f.raw),
               "corrected": asdict(f.corrected)} for f in v.caches]
    doc = {"kmemtrace_version": __version__, "trace": trace_path, "kernel": kernel,
           "strategy": v.strategy, "note": note or None, "samples": v.samples,
           "verdict": None if v.samples else NO_SAMPLES,
           "raw": asdict(v.raw), "corrected": asdict(v.corrected),
           "caveats": caveats(v) if v.samples else [], "caches": caches,
           "untouched": list(v.untouched),
           "over_time": {"t_s": v.t_s.tolist(), "kernel_pages": v.total_kernel_pages.tolist(),
                         "model_pages": v.total_model_pages.tolist()}}
    return json.dumps(doc, indent=1, allow_nan=False) + "\n"
