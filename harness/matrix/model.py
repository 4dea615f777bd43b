"""The matrix's vocabulary: dimensions, shape traits, how sure an expectation is, and the
frozen pieces a definition file is made of (``definition.py`` builds them from TOML)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

from ..results import Result


class Dimension(StrEnum):
    """One axis of the matrix, in the order cells are named and listed."""

    PROFILE = "profile"
    SHAPE = "shape"
    CONTENTION = "contention"
    TRIGGER = "trigger"
    KEXEC = "kexec"
    UPDATE = "update"
    MODE = "mode"


#: The dimensions whose non-baseline value is added to a cell's name (with its own tag).
SUFFIXED = (Dimension.CONTENTION, Dimension.UPDATE, Dimension.MODE)


class Trait(StrEnum):
    """What a shape does, read from its ``run`` options (never declared by hand)."""

    MEMORY_ADD = "memory-add"
    MEMORY_UNPLUG = "memory-unplug"     # a DIMM unplug or a virtio-mem shrink
    CPU_ADD = "cpu-add"
    CPU_UNPLUG = "cpu-unplug"
    VIRTIO_MEM = "virtio-mem"


class Confidence(StrEnum):
    """How sure a cell's expected result is (the report weighs a miss by it)."""

    KNOWN = "known"                  # a test or a recorded run shows it
    DERIVED = "derived"              # follows from the mechanism; no run has shown it yet
    UNPREDICTABLE = "unpredictable"  # depends on timing: the more frequent result


class HostRequirement(StrEnum):
    """Something the machine running a shard must offer, else the cell is skipped there."""

    QEMU_CPU_UNPLUG = "qemu-cpu-unplug"   # QEMU 8+ (harness.hotplug.QEMU_SURVIVES_CPU_UNPLUG)


@dataclass(frozen=True)
class HostFacts:
    """What the host offers, gathered once per run (None: unknown, nothing is skipped)."""

    qemu: tuple[int, int, int] | None = None

    def lacks(self, requirement: HostRequirement) -> str | None:
        """Why this host cannot run a cell needing ``requirement`` (None: it can)."""
        from ..hotplug.checks import QEMU_SURVIVES_CPU_UNPLUG

        if requirement is HostRequirement.QEMU_CPU_UNPLUG and self.qemu is not None \
                and self.qemu < QEMU_SURVIVES_CPU_UNPLUG:
            return f"this host's QEMU is {'.'.join(map(str, self.qemu))}"
        return None


@dataclass(frozen=True)
class Condition:
    """A ``when`` table: every named dimension's value, and every named trait, must match.

    An empty condition matches every cell.
    """

    values: tuple[tuple[Dimension, frozenset[str]], ...] = ()
    traits: frozenset[Trait] = frozenset()

    def matches(self, values: Mapping[Dimension, str], traits: frozenset[Trait]) -> bool:
        return (all(values[dim] in allowed for dim, allowed in self.values)
                and self.traits <= traits)


@dataclass(frozen=True)
class Shape:
    """A hot-plug shape: ``run`` options and the traits read from them."""

    name: str
    args: tuple[str, ...]
    why: str
    traits: frozenset[Trait]


@dataclass(frozen=True)
class Group:
    """One crossed part of the matrix: each dimension's values (baseline where unnamed)."""

    name: str
    why: str
    values: tuple[tuple[Dimension, tuple[str, ...]], ...]


@dataclass(frozen=True)
class Exclusion:
    """Cells that cannot work, and why; ``host`` makes it depend on the machine."""

    when: Condition
    reason: str
    host: HostRequirement | None = None


@dataclass(frozen=True)
class ExpectRule:
    """The expected result of the cells it matches (the first matching rule wins)."""

    when: Condition
    result: Result
    confidence: Confidence
    why: str


@dataclass(frozen=True)
class Selection:
    """A named subset: cells of ``groups`` (empty: any) that match ``when``."""

    name: str
    why: str
    groups: tuple[str, ...] = ()
    when: Condition = Condition()


@dataclass(frozen=True)
class Definition:
    """A whole matrix file, validated (``definition.load``)."""

    path: Path
    iterations: int
    dimensions: tuple[tuple[Dimension, tuple[str, ...]], ...]
    profile_args: tuple[tuple[str, tuple[str, ...]], ...]
    shapes: tuple[Shape, ...]
    cost_base: float
    costs: tuple[tuple[Dimension, str, float], ...]
    groups: tuple[Group, ...]
    exclusions: tuple[Exclusion, ...]
    rules: tuple[ExpectRule, ...]
    selections: tuple[Selection, ...]

    def values(self, dim: Dimension) -> tuple[str, ...]:
        return dict(self.dimensions)[dim]

    def baseline(self, dim: Dimension) -> str:
        return self.values(dim)[0]

    def shape(self, name: str) -> Shape:
        return next(s for s in self.shapes if s.name == name)

    def selection(self, name: str) -> Selection | None:
        return next((s for s in self.selections if s.name == name), None)

    def extra_args(self, profile: str) -> tuple[str, ...]:
        return dict(self.profile_args).get(profile, ())

    def cost(self, values: Mapping[Dimension, str]) -> float:
        """Estimated seconds of one iteration of the cell with these values."""
        return self.cost_base + sum(c for dim, value, c in self.costs if values[dim] == value)
