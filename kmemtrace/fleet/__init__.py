"""Many traces at once: every trace x strategy as a task on a Dask cluster.

``run`` drives the cluster (a local one sized to the machine by default), ``task`` is what
a worker runs (one strategy over one trace, with the same engine as ``kmemtrace replay``),
``results`` is the on-disk table the tasks land in, keyed by trace digest so that a rerun
skips done work, and ``summary`` reduces that table to the fleet view.
"""
