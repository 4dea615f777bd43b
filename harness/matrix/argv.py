"""A shape's traits, read from what the ``run`` parser makes of its options.

The matrix never interprets run options itself: the ``run`` command's parser reads them
(the same complaint as ``kdump-harness run``), and the traits the expectation
rules match on come from the parsed values, so a shape cannot claim a trait its options
do not have.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from ..units import parse_size
from .model import Trait


def parse_run(argv: Sequence[str], where: str) -> argparse.Namespace:
    """``argv`` as ``kdump-harness run`` parses it; argparse's complaint names ``where``."""
    from ..cli import parse_run_options

    return parse_run_options(argv, where)


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
