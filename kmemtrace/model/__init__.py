"""The SLUB allocator model the replay runs on (struct-of-arrays, compiled with numba)."""
