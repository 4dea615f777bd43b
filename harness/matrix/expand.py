"""From a ``Definition`` to cells: the groups' products, exclusions with their reasons, each
cell's ``run`` options and expected result, and ``--select``.

Cells come out in the definition's order (dimension by dimension, each value in the order
the file lists it), never in a dict's or a set's: the listing, the sharding and the names
are the same on every machine and under every ``PYTHONHASHSEED``.
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from ..errors import UsageError
from ..results import Result
from .argv import parse_run
from .definition import NO_CONTENTION
from .model import (
    SUFFIXED,
    Condition,
    Confidence,
    Definition,
    Dimension,
    ExpectRule,
    HostFacts,
    Selection,
    Trait,
)


@dataclass(frozen=True)
class Cell:
    """One combination of dimension values: what it runs and what it should end in."""

    name: str
    values: tuple[tuple[Dimension, str], ...]
    traits: frozenset[Trait]
    argv: tuple[str, ...]              # kdump-harness run options, --expect included
    expected: Result
    confidence: Confidence
    why: str                           # the expectation rule's reason
    cost: float                        # estimated seconds per iteration
    groups: tuple[str, ...]            # the groups that produce it
    seed: int | None = None            # the shape's own --seed: every iteration runs it

    def value(self, dim: Dimension) -> str:
        return dict(self.values)[dim]

    @property
    def config(self) -> tuple[tuple[str, str], ...]:
        """The dimension values and the expectation's confidence, for the result lines."""
        return (*((d.value, v) for d, v in self.values),
                ("confidence", self.confidence.value), ("groups", ",".join(self.groups)))


@dataclass(frozen=True)
class Excluded:
    """A cell that does not run, and why (shown by ``matrix list`` and ``--dry-run``)."""

    cell: Cell
    reason: str


@dataclass(frozen=True)
class Expansion:
    cells: tuple[Cell, ...]
    excluded: tuple[Excluded, ...]

    def select(self, definition: Definition, selectors: Sequence[str]) -> Expansion:
        """Only the cells (and excluded cells) every selector picks."""
        pick = selector(definition, selectors)
        return Expansion(tuple(c for c in self.cells if pick(c)),
                         tuple(e for e in self.excluded if pick(e.cell)))


def cell_name(values: Mapping[Dimension, str], definition: Definition) -> str:
    """PROFILE-SHAPE-TRIGGER-KEXEC, then -TAG-VALUE for contention, update and mode
    when not at their baseline (so the old nightly's cells keep their names)."""
    base = "-".join(values[d] for d in (Dimension.PROFILE, Dimension.SHAPE,
                                        Dimension.TRIGGER, Dimension.KEXEC))
    return base + "".join(f"-{d}-{values[d]}" for d in SUFFIXED
                          if values[d] != definition.baseline(d))


def run_argv(values: Mapping[Dimension, str], definition: Definition,
             expected: Result) -> tuple[str, ...]:
    """The cell's ``kdump-harness run`` options."""
    contention = values[Dimension.CONTENTION]
    return ("--profile", values[Dimension.PROFILE],
            *definition.extra_args(values[Dimension.PROFILE]),
            *definition.shape(values[Dimension.SHAPE]).args,
            *(() if contention == NO_CONTENTION else ("--contention", contention)),
            "--trigger", values[Dimension.TRIGGER], "--kexec", values[Dimension.KEXEC],
            "--update", values[Dimension.UPDATE], "--mode", values[Dimension.MODE],
            "--expect", expected.value)


def expectation(definition: Definition, values: Mapping[Dimension, str],
                traits: frozenset[Trait]) -> ExpectRule:
    """The first rule that matches (the definition ends with one that matches all)."""
    return next(r for r in definition.rules if r.when.matches(values, traits))


def _make_cell(definition: Definition, values: dict[Dimension, str],
               groups: tuple[str, ...]) -> Cell:
    traits = definition.shape(values[Dimension.SHAPE]).traits
    rule = expectation(definition, values, traits)
    return Cell(name=cell_name(values, definition),
                values=tuple((d, values[d]) for d in Dimension), traits=traits,
                argv=run_argv(values, definition, rule.result), expected=rule.result,
                confidence=rule.confidence, why=rule.why, cost=definition.cost(values),
                groups=groups)


def _products(definition: Definition) -> dict[tuple[str, ...], list[str]]:
    """Each distinct combination of values -> the groups producing it, in order."""
    order = {d: {v: i for i, v in enumerate(definition.values(d))} for d in Dimension}
    found: dict[tuple[str, ...], list[str]] = {}
    for group in definition.groups:
        for combo in itertools.product(*(vals for _, vals in group.values)):
            found.setdefault(combo, []).append(group.name)
    # Sorted by each value's position in [dimensions]: the file's order, not insertion's.
    return {k: found[k] for k in sorted(found, key=lambda c: tuple(
        order[d][v] for d, v in zip(Dimension, c, strict=True)))}


def expand(definition: Definition) -> Expansion:
    """Every cell of the matrix, minus the exclusions that do not depend on the host.

    Each runnable cell's argv is parsed by the ``run`` parser: a definition whose options
    ``run`` would refuse is refused here, naming the cell.
    """
    cells: list[Cell] = []
    excluded: list[Excluded] = []
    names: dict[str, tuple[str, ...]] = {}
    for combo, groups in _products(definition).items():
        values = dict(zip(Dimension, combo, strict=True))
        cell = _make_cell(definition, values, tuple(groups))
        if cell.name in names:     # two shapes or profiles whose names run together
            raise UsageError(f"{definition.path}: cells {combo} and {names[cell.name]} are "
                             f"both named {cell.name!r}")
        names[cell.name] = combo
        reason = next((e.reason for e in definition.exclusions if e.host is None
                       and e.when.matches(values, cell.traits)), None)
        if reason is not None:
            excluded.append(Excluded(cell, reason))
            continue
        ns = parse_run(cell.argv, f"{definition.path}: cell {cell.name}")
        cells.append(dataclasses.replace(cell, seed=ns.seed))
    return Expansion(tuple(cells), tuple(excluded))


def host_exclusions(definition: Definition, cells: Iterable[Cell],
                    facts: HostFacts) -> dict[str, str]:
    """Cell name -> why this host skips it (the exclusions with ``host = ...``)."""
    skipped: dict[str, str] = {}
    for cell in cells:
        values = dict(cell.values)
        for exclusion in definition.exclusions:
            if exclusion.host is None or not exclusion.when.matches(values, cell.traits):
                continue
            lacking = facts.lacks(exclusion.host)
            if lacking is not None:
                skipped[cell.name] = f"{exclusion.reason} ({lacking})"
                break
    return skipped


def selector(definition: Definition, selectors: Sequence[str]) -> _Pick:
    """A predicate for ``--select`` words: a selection's name, or DIM=V1,V2 (also
    ``group=NAME`` and ``trait=T``); several words must all match."""
    picks = [_one_selector(definition, text) for text in selectors]
    return _Pick(tuple(picks))


@dataclass(frozen=True)
class _Pick:
    selections: tuple[Selection, ...]

    def __call__(self, cell: Cell) -> bool:
        return all((not s.groups or set(s.groups) & set(cell.groups))
                   and s.when.matches(dict(cell.values), cell.traits)
                   for s in self.selections)


def _one_selector(definition: Definition, text: str) -> Selection:
    if "=" not in text:
        found = definition.selection(text)
        if found is None:
            names = ", ".join(s.name for s in definition.selections)
            raise UsageError(f"--select {text!r}: no such selection in {definition.path} "
                             f"(it has {names}; or use DIMENSION=VALUE[,VALUE])")
        return found
    key, _, raw = text.partition("=")
    wanted = tuple(v for v in raw.split(",") if v)
    if key == "group":
        known = [g.name for g in definition.groups]
        bad = [v for v in wanted if v not in known]
        if bad or not wanted:
            raise UsageError(f"--select {text!r}: groups are {', '.join(known)}")
        return Selection(text, text, groups=wanted)
    if key == "trait":
        try:
            return Selection(text, text, when=Condition(traits=frozenset(map(Trait, wanted))))
        except ValueError:
            raise UsageError(f"--select {text!r}: traits are "
                             f"{', '.join(t.value for t in Trait)}") from None
    try:
        dim = Dimension(key)
    except ValueError:
        raise UsageError(f"--select {text!r}: {key!r} is not a dimension "
                         f"({', '.join(d.value for d in Dimension)}, group, trait)") from None
    bad = [v for v in wanted if v not in definition.values(dim)]
    if bad or not wanted:
        raise UsageError(f"--select {text!r}: {dim} is one of "
                         f"{', '.join(definition.values(dim))}")
    return Selection(text, text, when=Condition(((dim, frozenset(wanted)),)))
