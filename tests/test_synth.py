"""Synthetic workloads: determinism, event-count control, and the invariants replay relies on."""

import itertools

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kmemtrace.errors import UsageError
from kmemtrace.synth import WORKLOADS, synthesize, write_synthesis
from kmemtrace.synth.geometry import CACHES
from kmemtrace.trace.meta import CACHE_FIELDS
from kmemtrace.trace.reader import TraceReader
from kmemtrace.trace.schema import GFP_ACCOUNT, ROOT_MEMCG_ID, EventKind, OfflineSource

K = EventKind
SMALL = 30_000


WINDOW = 997  # objects per window for the streamed variant: dozens of window edges


def gen(name: str, seed: int = 1, n: int = SMALL, window: int | None = None, **params):
    synthesis, resolved = synthesize(name, seed=seed, n_events=n,
                                     raw_params={k: str(v) for k, v in params.items()})
    if window is None:
        return synthesis.columns, resolved
    batches = list(synthesis.stream(objects_per_window=window))
    assert len(batches) > 10
    return {k: np.concatenate([b[k] for b in batches]) for k in batches[0]}, resolved


# Every invariant below must also hold where the stream cuts the trace into windows.
@pytest.fixture(scope="module", params=[*((w, None) for w in sorted(WORKLOADS)),
                                        ("container-churn", WINDOW), ("long-tail", WINDOW)],
                ids=lambda p: p[0] + ("" if p[1] is None else "-windowed"))
def trace(request):
    name, window = request.param
    cols, params = gen(name, window=window)
    params["window"] = window
    return name, cols, params


def test_streaming_is_deterministic_and_bounded():
    synthesis, _ = synthesize("container-churn", seed=3, n_events=SMALL, raw_params={})
    first = list(synthesis.stream(objects_per_window=WINDOW))
    again = list(synthesis.stream(objects_per_window=WINDOW))
    assert len(first) == len(again) > 10
    for a, b in zip(first, again, strict=True):
        for col in a:
            np.testing.assert_array_equal(a[col], b[col], err_msg=col)
    # A batch is one window's events plus those that fell due: never the whole trace.
    assert max(len(b["ts_ns"]) for b in first) < SMALL // 5
    assert all(a["ts_ns"][-1] < b["ts_ns"][0] for a, b in itertools.pairwise(first))


def test_same_seed_same_events_other_seed_other_events(trace):
    name, cols, params = trace
    again, _ = gen(name, window=params["window"])
    other, _ = gen(name, seed=2, window=params["window"])
    for col in cols:
        np.testing.assert_array_equal(cols[col], again[col], err_msg=col)
    assert not np.array_equal(cols["ts_ns"], other["ts_ns"])


def test_time_order_and_seq(trace):
    _, cols, _ = trace
    assert np.all(np.diff(cols["ts_ns"]) > 0)
    np.testing.assert_array_equal(cols["seq"], np.arange(len(cols["seq"])))


def test_pointers_alternate_alloc_free(trace):
    """Per pointer: ALLOC, FREE, ALLOC, ... — so no two live objects share a pointer and no
    FREE precedes its ALLOC; a pointer may start with FREE only if it is never allocated
    (objects from before the trace), and those are exactly ``preexisting_frees``."""
    _, cols, params = trace
    obj = np.isin(cols["kind"], [K.ALLOC, K.FREE])
    ptr, kind, cache = cols["ptr"][obj], cols["kind"][obj], cols["cache_id"][obj]
    order = np.argsort(ptr, kind="stable")
    ptr, kind, cache = ptr[order], kind[order], cache[order]
    same = ptr[1:] == ptr[:-1]
    assert not np.any(same & (kind[1:] == kind[:-1])), "two ALLOCs or two FREEs in a row"
    assert np.all(cache[1:][same] == cache[:-1][same]), "FREE names another cache"
    first = np.concatenate([[True], ~same])
    orphan = first & (kind == K.FREE)
    assert orphan.sum() == params["preexisting_frees"]
    allocated = np.unique(ptr[kind == K.ALLOC])
    assert not np.isin(ptr[orphan], allocated).any()


def test_memcg_lifecycle_order(trace):
    _, cols, _ = trace
    kind, memcg, ts = cols["kind"], cols["memcg_id"], cols["ts_ns"]

    def first_ts(k):
        m = kind == k
        ids, idx = np.unique(memcg[m], return_index=True)
        return dict(zip(ids.tolist(), ts[m][idx].tolist(), strict=True))

    mkdir, offline, release = first_ts(K.MEMCG_MKDIR), first_ts(K.MEMCG_OFFLINE), \
        first_ts(K.MEMCG_RELEASE)
    assert np.sum(kind == K.MEMCG_MKDIR) == len(mkdir), "a memcg created twice"
    assert all(i > ROOT_MEMCG_ID for i in mkdir)
    assert all(offline[i] > mkdir[i] for i in offline)
    assert all(release[i] > offline[i] for i in release)
    assert set(release) <= set(offline)
    parents = cols["aux"][kind == K.MEMCG_MKDIR]
    assert set(parents.tolist()) <= set(mkdir) | {ROOT_MEMCG_ID}
    assert np.all(cols["aux"][kind == K.MEMCG_OFFLINE] == OfflineSource.SYNTH)
    allocs = kind == K.ALLOC
    for i, t_off in offline.items():
        mine = allocs & (memcg == i)
        assert ts[mine].min() > mkdir[i]
        assert ts[mine].max() < t_off, "allocation charged to an offline memcg"


def test_alloc_fields(trace):
    _, cols, params = trace
    allocs = cols["kind"] == K.ALLOC
    assert np.all(cols["gfp"][allocs] & GFP_ACCOUNT)
    sizes = np.array([c.size for c in CACHES])
    np.testing.assert_array_equal(cols["bytes"][allocs], sizes[cols["cache_id"][allocs]])
    assert np.all(cols["memcg_id"][allocs] > ROOT_MEMCG_ID)
    assert set(np.unique(cols["cpu"]).tolist()) == set(range(params["ncpus"]))


def test_remote_free_share_follows_the_param():
    cols, _ = gen("steady", n=100_000, remote_free=0.3)
    alloc_cpu = dict(zip(cols["ptr"][cols["kind"] == K.ALLOC].tolist(),
                         cols["cpu"][cols["kind"] == K.ALLOC].tolist(), strict=True))
    frees = np.flatnonzero(cols["kind"] == K.FREE)
    paired = [(alloc_cpu[p], c) for p, c in zip(cols["ptr"][frees].tolist(),
                                                  cols["cpu"][frees].tolist(), strict=True)
              if p in alloc_cpu]
    remote = np.mean([a != f for a, f in paired])
    assert 0.27 < remote < 0.33
    cols, _ = gen("steady", n=20_000, remote_free=0.0)
    pairs = {}
    for k, p, c in zip(cols["kind"].tolist(), cols["ptr"].tolist(), cols["cpu"].tolist(),
                       strict=True):
        if k == K.ALLOC:
            pairs[p] = c
        elif k == K.FREE and p in pairs:
            assert pairs.pop(p) == c


@settings(max_examples=12, deadline=None)
@given(st.sampled_from(sorted(WORKLOADS)), st.integers(5_000, 150_000), st.integers(0, 2**32))
def test_event_count_within_five_percent(name, n, seed):
    cols, _ = gen(name, seed=seed, n=n)
    assert abs(len(cols["ts_ns"]) - n) <= 0.05 * n


def test_container_churn_shape():
    """Nested containers, survivors freed after their memcg's offline, some releases."""
    cols, params = gen("container-churn", n=100_000)
    kind, memcg = cols["kind"], cols["memcg_id"]
    levels = cols["aux2"][kind == K.MEMCG_MKDIR]
    assert (levels == 2).any() and (levels == 1).any()
    offline_ts = dict(zip(memcg[kind == K.MEMCG_OFFLINE].tolist(),
                          cols["ts_ns"][kind == K.MEMCG_OFFLINE].tolist(), strict=True))
    assert len(offline_ts) > params["n_memcgs"] // 2
    owner = dict(zip(cols["ptr"][kind == K.ALLOC].tolist(), memcg[kind == K.ALLOC].tolist(),
                     strict=True))
    late = 0
    for p, t in zip(cols["ptr"][kind == K.FREE].tolist(), cols["ts_ns"][kind == K.FREE].tolist(),
                    strict=True):
        m = owner.get(p)
        late += m in offline_ts and t > offline_ts[m]
    assert late > 0, "no object outlived its memcg"
    assert 0 < np.sum(kind == K.MEMCG_RELEASE) < len(offline_ts)
    assert np.sum(kind == K.PRESSURE) > 0


def test_long_tail_leaves_objects_of_dead_memcgs_live_at_the_end():
    cols, _ = gen("long-tail", n=200_000, survivor_fraction=0.01)
    kind = cols["kind"]
    dead = np.unique(cols["memcg_id"][kind == K.MEMCG_OFFLINE])
    freed = np.unique(cols["ptr"][kind == K.FREE])
    allocs = kind == K.ALLOC
    live_at_end = allocs & ~np.isin(cols["ptr"], freed)
    assert np.isin(cols["memcg_id"][live_at_end], dead).any()


def test_steady_never_offlines():
    cols, _ = gen("steady")
    assert not np.isin(cols["kind"], [K.MEMCG_OFFLINE, K.MEMCG_RELEASE]).any()


@pytest.mark.parametrize("raw", [{"nope": "1"}, {"remote_free": "1.5"}, {"ncpus": "0"},
                                 {"duration": "soon"}])
def test_bad_params_are_usage_errors(raw):
    with pytest.raises(UsageError):
        synthesize("container-churn", seed=1, n_events=10_000, raw_params=raw)


def test_too_few_events_for_the_memcgs_is_a_usage_error():
    with pytest.raises(UsageError, match="too few"):
        synthesize("container-churn", seed=1, n_events=300, raw_params={})


def test_written_trace_meta(tmp_path):
    synthesis, params = synthesize("container-churn", seed=5, n_events=20_000, raw_params={})
    write_synthesis(tmp_path / "t", synthesis, workload="container-churn", seed=5,
                    params=params)
    reader = TraceReader.open(tmp_path / "t")
    meta = reader.meta
    assert meta["source"] == "synth" and meta["complete"]
    assert meta["workload"] == {"name": "container-churn", "seed": 5, "params": params}
    assert meta["kernel"]["release"] == "synthetic"
    assert [c["id"] for c in meta["caches"]] == list(range(len(CACHES)))
    for c in meta["caches"]:
        assert set(CACHE_FIELDS) | {"id", "name", "aliases", "accounted"} <= set(c)
    assert any(c["aliases"] for c in meta["caches"])
    mkdir_ids = set(synthesis.columns["memcg_id"][synthesis.columns["kind"] == K.MEMCG_MKDIR]
                    .tolist())
    assert mkdir_ids | {ROOT_MEMCG_ID} == {m["id"] for m in meta["memcgs"]}
    assert meta["clock"]["start_ns"] <= reader.meta["parts"][0]["ts_min"]
    assert meta["clock"]["end_ns"] >= reader.meta["parts"][-1]["ts_max"]
    back = reader.to_pandas()
    np.testing.assert_array_equal(back["ts_ns"].to_numpy(), synthesis.columns["ts_ns"])
