"""kmemtrace: record slab events attributed to memory cgroups, replay them under each
dead-kmem-cache destruction strategy (2014 linux-mm RFC, Ways 1-4, obj_cgroup) and compare."""

__version__ = "0.1.0"
