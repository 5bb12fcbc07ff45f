"""Peaks taken lazily equal peaks taken after every event.

The loop compares the offline-memcg peaks (dead caches and pages, stranded, dying, pinned,
metadata) only after one of their counters changed (``C_DEAD_CHANGED``). A write site that
forgot to set the flag would miss a peak silently, so this replays a fixture once as usual
and once one event per call with the flag forced on before each, and wants every metric
identical. (Dropping the flag from ``strand()`` moves objcg's stranded peaks
on both fixtures.)
"""

import pytest

import kmemtrace.replay.engine as engine
from kmemtrace.model.state import C_DEAD_CHANGED

from golden.update import golden_metrics

_run_events = engine.run_events


def _every_event(m, pol, ts, kind, cpu, ptr, cache, memcg, aux, aux2, start):
    """``run_events`` one event at a time, every peak compared after each."""
    i = start
    while i < len(ts):
        m.ctr[C_DEAD_CHANGED] = 1
        end = i + 1
        i, need = _run_events(m, pol, ts[:end], kind[:end], cpu[:end], ptr[:end],
                              cache[:end], memcg[:end], aux[:end], aux2[:end], i)
        if need:
            return i, need
    return i, 0


@pytest.mark.parametrize("fixture", ["default", "long-tail"])
def test_lazy_peaks_equal_peaks_after_every_event(monkeypatch, fixture):
    lazy = golden_metrics(fixture)
    monkeypatch.setattr(engine, "run_events", _every_event)
    assert golden_metrics(fixture) == lazy
