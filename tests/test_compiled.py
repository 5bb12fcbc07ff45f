"""``engine_is_compiled()`` reads this checkout's numba cache index, not any in the folder.

Two checkouts of the same sources share numba's ``CACHE_DIR`` (it is named after a digest
of the sources), but numba files each one's machine code under its own path, so a compiled
checkout must not make another one say "compiled" and then compile for 25 s unannounced.
"""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

from numba.core.caching import UserProvidedCacheLocator

import kmemtrace
from kmemtrace.model.compiled import engine_is_compiled
from kmemtrace.replay.engine import replay
from kmemtrace.strategies import select
from kmemtrace.trace.reader import open_trace

PACKAGE = Path(kmemtrace.__file__).resolve().parent
FIXTURE = PACKAGE.parent / "fixtures" / "steady"
_ASK = ("import json, kmemtrace; from numba.core import config; "
        "from kmemtrace.model.compiled import engine_is_compiled as f; "
        "print(json.dumps([kmemtrace.__file__, config.CACHE_DIR, f()]))")


def test_this_checkout_is_compiled_after_a_replay():
    replay(open_trace(FIXTURE), select("way1", {}), samples=10)
    assert engine_is_compiled()


def test_another_checkout_of_the_same_sources_is_not_compiled(tmp_path):
    replay(open_trace(FIXTURE), select("way1", {}), samples=10)  # this one is compiled
    other = tmp_path / "checkout"
    shutil.copytree(PACKAGE, other / "kmemtrace", ignore=shutil.ignore_patterns("__pycache__"))
    env = {**os.environ, "PYTHONPATH": str(other)}
    env.pop("NUMBA_CACHE_DIR", None)
    from numba.core import config

    try:
        out = subprocess.run([sys.executable, "-c", _ASK], cwd=other, env=env, check=True,
                             capture_output=True, text=True).stdout
        where, cache_dir, compiled = json.loads(out)
        assert Path(where).resolve().parent == other / "kmemtrace"
        assert cache_dir == config.CACHE_DIR  # the same sources: the same cache folder
        assert compiled is False
    finally:  # the folders numba made for the copy's modules
        for d in (other / "kmemtrace").rglob("*"):
            if d.is_dir():
                sub = UserProvidedCacheLocator.get_suitable_cache_subpath(str(d / "x.py"))
                shutil.rmtree(Path(config.CACHE_DIR) / sub, ignore_errors=True)
