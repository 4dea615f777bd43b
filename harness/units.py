"""Sizes: the one place they are parsed and written.

Two spellings, for two readers::

    parse_size("256M") == 256 * MiB        what options, JSON and QEMU arguments say
    size_option(256 * MiB) == "256M"       the exact inverse, for options and QEMU arguments
    format_size(1536 * MiB) == "1.50 GiB"  for people (reports, messages about memory)
"""

from __future__ import annotations

import re

from .errors import UsageError

KiB = 1 << 10
MiB = 1 << 20
GiB = 1 << 30
TiB = 1 << 40

#: x86_64 guests with less than 64 GiB use 128 MiB memory blocks; DIMMs must be multiples.
DEFAULT_MEMORY_BLOCK = 128 * MiB

_SIZE = re.compile(r"^\s*(\d+)\s*([KMGT]?)(i?B)?\s*$", re.IGNORECASE)
_SCALE = {"": 1, "K": KiB, "M": MiB, "G": GiB, "T": TiB}


def parse_size(text: str) -> int:
    """Parse ``256M``, ``1G``, ``4096`` (bytes), ``2GiB`` into bytes."""
    m = _SIZE.match(text)
    if not m:
        raise UsageError(f"not a size: {text!r} (use e.g. 256M or 1G)")
    return int(m.group(1)) * _SCALE[m.group(2).upper()]


def size_option(nbytes: int) -> str:
    """``268435456`` -> ``256M``: the largest whole unit, as options and QEMU spell it."""
    for unit, scale in (("T", TiB), ("G", GiB), ("M", MiB), ("K", KiB)):
        if nbytes and nbytes % scale == 0:
            return f"{nbytes // scale}{unit}"
    return str(nbytes)


def format_size(nbytes: int) -> str:
    """``268435456`` -> ``256 MiB``; ``1610612736`` -> ``1.50 GiB``: for people."""
    for unit, shift in (("TiB", 40), ("GiB", 30), ("MiB", 20), ("KiB", 10)):
        if nbytes >= 1 << shift:
            value = nbytes / (1 << shift)
            return f"{value:.0f} {unit}" if value == int(value) else f"{value:.2f} {unit}"
    return f"{nbytes} bytes"
