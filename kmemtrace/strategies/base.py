"""The one small interface every strategy implements.

A strategy is a named set of decisions (see ``replay/policy.py``) plus its parameters. It
writes its decisions into the policy vector in :meth:`Strategy.configure`; the engine does
all the acting. Adding a strategy is one module and one line in ``strategies/__init__.py``.
"""

from dataclasses import dataclass, field

import numpy as np

from kmemtrace.params import ParamSpec


@dataclass(frozen=True)
class Strategy:
    """Base: subclasses set the class fields and override :meth:`configure`."""

    name: str
    title: str  # one line: what it does
    kernel: str  # where it lived (RFC section, kernel releases)
    params: tuple[ParamSpec, ...] = field(default=())

    def configure(self, pol: np.ndarray, params: dict) -> None:
        """Write this strategy's decisions into ``pol`` (indices from replay.policy)."""
        raise NotImplementedError
