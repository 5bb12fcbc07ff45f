"""Whether the replay engine is already compiled, so the first run can say it is not.

numba compiles the model on first use (about 25 s of CPU) and caches the machine code
under ``CACHE_DIR`` (see ``kmemtrace.model``). Without a word, a first replay looks hung:
a 20 M-event replay sat at 0/20 M for 20 s. The cache index of the engine's entry point is
the cheapest sign that the code is there.

Which index: numba files a function's cache under a folder named after the absolute path of
its source's directory, and stamps the index with a hash of the source, so two checkouts of
the same sources share ``CACHE_DIR`` (same digest) but not their indices. Only this
checkout's index, read by numba's own cache class, tells whether *this* code is compiled.
"""

from pathlib import Path

from numba.core.caching import FunctionCache

COMPILE_SECONDS = 25  # CPU seconds on this project's 2-core reference machine, idle


def engine_is_compiled() -> bool:
    """True when numba's cache (at the current ``CACHE_DIR``) holds the replay loop
    compiled from this checkout's ``replay/loop.py`` as it is now."""
    from kmemtrace.replay.loop import run_events  # deferred: the CLI imports this early

    cache = FunctionCache(run_events.py_func)  # the locator numba itself would use
    overloads = cache._cache_file._load_index()  # {} when missing, stale or another numba
    return any((Path(cache.cache_path) / name).exists() for name in overloads.values())
