"""Whether the replay engine is already compiled, so the first run can say it is not.

numba compiles the model on first use (about 25 s of CPU) and caches the machine code
under ``CACHE_DIR`` (see ``kmemtrace.model``). Without a word, a first replay looks hung:
a 20 M-event replay sat at 0/20 M for 20 s. The cache index of the engine's entry point is
the cheapest sign that the code is there.
"""

from pathlib import Path

from numba.core import config as numba_config

COMPILE_SECONDS = 25  # CPU seconds on this project's 2-core reference machine, idle
_ENTRY_INDEX = "loop.run_events-*.nbi"


def engine_is_compiled() -> bool:
    """True when numba's cache holds the replay loop for this source version."""
    cache_dir = numba_config.CACHE_DIR
    return bool(cache_dir) and any(Path(cache_dir).rglob(_ENTRY_INDEX))
