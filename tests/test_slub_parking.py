"""Where SLUB (v5.16+) parks the empty slabs of a cache emptied from one CPU: the model on
paper, and the model against the live kernel (analyses/which_way/parking.py).

On paper (the module docstring of analyses.which_way.parking): 20 full slabs of 128
objects (``dnotify_struct``: 2 CPU partial slabs, ``min_partial`` 5), emptied in
allocation order from CPU 0, leave 7 empty slabs: 5 on the node list (the drains add
empty slabs until ``nr_partial`` reaches ``min_partial``, then discard), 1 on CPU 0's
partial list, 1 active. Before v5.16 the budget was 30 free objects (``pobjects``), counted
when a slab is pushed, at its first free: 1 each. 19 pushes count 19 and never drain, so
all 19 empty slabs stay on CPU 0's list (what b47291ef02b0 fixed by counting slabs).
"""

import pytest

from analyses.which_way import parking

DNOTIFY = {"object_size": 32, "size": 32, "objs_per_slab": 128, "order": 0,
           "min_partial": 5, "cpu_partial": 120}
N = 20 * 128


@pytest.mark.parametrize("era", ["5.16", "6.8"])
def test_a_cache_emptied_from_one_cpu_keeps_the_kernels_seven_slabs(era):
    assert parking.model(N, era, DNOTIFY) == {"slabs": 7, "partial": 5, "cpu0_partial": 1,
                                              "cpu0_active": 1}


@pytest.mark.parametrize("era", ["3.14", "5.16", "6.8"])
def test_a_cache_shrunk_before_its_sample_keeps_no_empty_slab(era):
    """``record --shrink-at-start`` shrank the cache right before the sample was read: the
    replay shrinks it at that row, so the 7 parked empty slabs (19 before v5.16) go, as
    ``kmem_cache_shrink`` frees every empty slab wherever it is parked."""
    assert parking.model(N, era, DNOTIFY | {"shrunk_at_start": True}) == {
        "slabs": 0, "partial": 0, "cpu0_partial": 0, "cpu0_active": 0}
    assert parking.model(N, era, DNOTIFY | {"shrunk_at_start": False})["slabs"] > 0


@pytest.mark.parametrize("era", ["3.14", "5.15"])
def test_before_516_the_stale_object_count_parks_them_all(era):
    assert parking.model(N, era, DNOTIFY) == {"slabs": 20, "partial": 0, "cpu0_partial": 19,
                                              "cpu0_active": 1}


@pytest.mark.root
def test_the_live_kernel_parks_where_the_model_does():
    """The kernel's own counts, read from /sys/kernel/slab/dnotify_struct/, after the
    workload: its change is the model's state (the cache is shrunk first, and nothing
    else on a test host takes dnotify registrations)."""
    before, after = parking.workload(N)
    model = parking.model(N, "6.8", parking.geometry_of())
    assert after["slabs"] - before["slabs"] == model["slabs"]
    assert after["partial"] - before["partial"] == model["partial"]
    assert after["objects_partial"] == before["objects_partial"]  # the node list's are empty
    cpu0 = after["cpu_partial_slabs"].get(0, 0) - before["cpu_partial_slabs"].get(0, 0)
    assert cpu0 == model["cpu0_partial"]
