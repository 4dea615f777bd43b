"""A shape's traits, read from what the ``run`` parser makes of its options.

The matrix never interprets run options itself: the ``run`` command's parser reads them
(the same complaint as ``kdump-harness run``), and the traits the expectation
rules match on come from the parsed values, so a shape cannot claim a trait its options
do not have.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import io
from collections.abc import Sequence

from ..errors import UsageError
from ..units import parse_size
from .model import Trait


@functools.cache
def _parser() -> argparse.ArgumentParser:
    from ..cli import build_parser

    return build_parser()


def parse_run(argv: Sequence[str], where: str) -> argparse.Namespace:
    """``argv`` as ``kdump-harness run`` parses it; argparse's complaint names ``where``.

    ``Recipe.namespace`` does the same but builds the parser per call (~45 ms): a hundred
    cells would take seconds, so the matrix keeps one parser.
    """
    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            return _parser().parse_args(["run", *argv])
    except SystemExit:
        complaint = [line for line in err.getvalue().splitlines() if line.strip()]
        reason = complaint[-1].split("error: ", 1)[-1] if complaint else "not run options"
        raise UsageError(f"{where}: {reason} (in: {' '.join(argv) or '(none)'})") from None


def shape_traits(argv: Sequence[str], where: str) -> frozenset[Trait]:
    """What a shape's options make the swarm do."""
    ns = parse_run(argv, where)
    traits: set[Trait] = set()
    if ns.dimms or ns.virtio_mem:
        traits.add(Trait.MEMORY_ADD)
    if ns.virtio_mem:
        traits.add(Trait.VIRTIO_MEM)
        grow, _, shrink = ns.virtio_mem.partition(":")
        if shrink and parse_size(shrink) < parse_size(grow):
            traits.add(Trait.MEMORY_UNPLUG)       # a shrink removes memory like an unplug
    if ns.unplug:
        traits.add(Trait.MEMORY_UNPLUG)
    if ns.add_cpus:
        traits.add(Trait.CPU_ADD)
    if ns.unplug_cpus:
        traits.add(Trait.CPU_UNPLUG)
    return frozenset(traits)
