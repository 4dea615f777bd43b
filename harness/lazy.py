"""Packages that load their modules on first use (PEP 562), one way for all of them.

``vmcore inspect`` needs the readers, not the verifier; the command line's parser needs
the profiles, not the image builder; the vmcore readers need address ranges, not the
topology oracle.  A package lists its public names and the module each lives in::

    __getattr__ = lazy_exports(__name__, {"verify": "verifier", ...})
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable, Mapping
from typing import Any


def lazy_exports(package: str, table: Mapping[str, str]) -> Callable[[str], Any]:
    """A module ``__getattr__`` that imports ``package.<table[name]>`` for ``name`` once."""

    def __getattr__(name: str) -> Any:
        module = table.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(f"{package}.{module}"), name)
        setattr(sys.modules[package], name, value)    # later lookups skip this function
        return value

    return __getattr__
