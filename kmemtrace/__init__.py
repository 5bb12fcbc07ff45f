"""kmemtrace: record slab events attributed to memory cgroups, replay them under each
dead-kmem-cache destruction strategy (2014 linux-mm RFC, Ways 1-4, obj_cgroup) and compare."""

import os

# Arrow's allocator for the whole process, chosen before pyarrow first allocates (the
# Parquet reader's own buffers use the C++ default pool, which ``pa.set_memory_pool`` does
# not change). A replay decodes batches on one thread and frees them on others; the default
# (mimalloc) kept more of those pages resident the longer the trace, so peak RSS minus the
# models' state crept up with length (docs/replay.md, "RSS against trace length,
# accounted"); jemalloc kept it flat. A user's own choice of the variable is kept.
os.environ.setdefault("ARROW_DEFAULT_MEMORY_POOL", "jemalloc")

__version__ = "0.1.0"
