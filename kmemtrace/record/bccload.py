"""Import Debian's BCC (python3-bpfcc) from a venv, safely.

BCC's Python module is not on PyPI: the PyPI package called ``bcc`` is an unrelated lattice
library. Debian installs the real one into the system interpreter's dist-packages, which a
venv does not see. We add that directory to ``sys.path`` only for the duration of the import
(so nothing else from the system site leaks into the venv), then check that what we got has
BCC's ``BPF`` class and libbcc behind it.
"""

import importlib
import sys
from pathlib import Path
from types import ModuleType

from kmemtrace.errors import KernelSupportError

SYSTEM_DIST = Path("/usr/lib/python3/dist-packages")
INSTALL_TIP = "apt-get install python3-bpfcc bpfcc-tools (BCC is not the PyPI package 'bcc')"


def load_bcc() -> ModuleType:
    """Return the ``bcc`` module or raise a one-line KernelSupportError."""
    cached = sys.modules.get("bcc")
    if cached is not None and hasattr(cached, "BPF"):
        return cached
    added = str(SYSTEM_DIST) not in sys.path
    if added:
        sys.path.append(str(SYSTEM_DIST))
    try:
        module = importlib.import_module("bcc")
    except ImportError as exc:
        raise KernelSupportError(f"BCC python module not found ({exc})", tip=INSTALL_TIP) from None
    except OSError as exc:  # libbcc.so missing or broken
        raise KernelSupportError(f"BCC is installed but libbcc failed to load: {exc}",
                                 tip=INSTALL_TIP) from None
    finally:
        if added:
            sys.path.remove(str(SYSTEM_DIST))
    if not hasattr(module, "BPF") or not hasattr(module, "lib"):
        sys.modules.pop("bcc", None)
        raise KernelSupportError(
            f"the 'bcc' module at {getattr(module, '__file__', '?')} is not BCC "
            "(probably the PyPI lattice library)",
            tip=f"pip uninstall bcc; {INSTALL_TIP}",
        )
    return module
