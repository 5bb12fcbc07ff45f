"""Charts from a fixture replay: every file written, a real PNG, and "never" kept."""

from pathlib import Path

import numpy as np
import pytest
from matplotlib.image import imread

from kmemtrace.replay.engine import replay
from kmemtrace.report.comparison import Comparison
from kmemtrace.report.plots import CHARTS, colour, latency_bins, write_plots
from kmemtrace.strategies import REGISTRY, select
from kmemtrace.trace.reader import open_trace

FIXTURE = Path(__file__).parent.parent / "fixtures" / "steady"


@pytest.fixture(scope="module")
def cmp() -> Comparison:
    return Comparison.from_replay(replay(open_trace(FIXTURE), select("all", {}), samples=50))


def test_every_chart_is_a_nonblank_png(cmp, tmp_path):
    paths = write_plots(cmp, tmp_path / "plots")
    assert sorted(p.name for p in paths) == sorted(f"{stem}.png" for stem in CHARTS)
    for path in paths:
        pixels = imread(path)
        assert pixels.shape[0] > 200 and pixels.shape[1] > 400, path.name
        assert pixels[..., :3].std() > 0.01, f"{path.name} is blank"


def test_never_destroyed_caches_get_their_own_bin(cmp):
    labels, counts = latency_bins(cmp.latencies_s)
    assert labels[-1] == "never"
    for name, lat in cmp.latencies_s.items():
        assert counts[name][-1] == np.isinf(lat).sum(), name
        assert counts[name].sum() == len(lat), f"{name}: a latency fell outside every bin"


def test_latency_bins_by_hand():
    labels, counts = latency_bins({"a": np.array([0.0, 0.05, 0.5, 3.0, np.inf, np.inf]),
                                   "b": np.array([])})
    assert labels == ["<10ms", "10ms–100ms", "100ms–1s", "1s–10s", "never"]
    assert counts["a"].tolist() == [1, 1, 1, 1, 2]
    assert counts["b"].tolist() == [0, 0, 0, 0, 0]


def test_strategy_colours_are_distinct_and_stable():
    colours = [colour(name) for name in REGISTRY]
    assert len(set(colours)) == len(colours)
    assert colours == [colour(name) for name in REGISTRY]
