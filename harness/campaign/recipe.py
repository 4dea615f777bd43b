"""A recipe: the ``kdump-harness run`` options one campaign iteration runs, seeded.

A recipe is the ``run`` command's own options (argv words), so everything ``run`` can do a
campaign can repeat, each recipe is validated by the same parser and checks as ``run``
before anything starts, and a failing iteration is replayed by pasting one command line.
Iteration ``i`` of a campaign with base seed ``S`` runs with ``--seed S+i``: the swarm's
order (and with ``--random`` the whole plan) comes from it.
"""

from __future__ import annotations

import argparse
import contextlib
import shlex
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ..errors import UsageError
from .line import Kind

if TYPE_CHECKING:
    from ..guest import GuestConfig
    from ..job import JobSpec

#: Options a recipe may not carry: the campaign decides where evidence and output go.
CAMPAIGN_OWNED = ("--out", "--json")
SEED_SPACE = 1 << 31


def iteration_seed(base: int, iteration: int) -> int:
    """The seed of iteration ``iteration`` in a campaign seeded ``base``."""
    return (base + iteration) % SEED_SPACE


@dataclass(frozen=True)
class Recipe:
    """``name``: the recipe or matrix cell; ``argv``: ``run`` options; ``config``: the
    cell's dimension values, carried into every result line for the report."""

    name: str
    argv: tuple[str, ...]
    kind: Kind = Kind.CRASH
    config: tuple[tuple[str, str], ...] = ()

    def __post_init__(self) -> None:
        if not self.name or any(c in self.name for c in "/ \t\n"):
            raise UsageError(f"recipe name {self.name!r}: needs a name without spaces or '/'")
        object.__setattr__(self, "kind", Kind(self.kind))
        for word in self.argv:
            if word.split("=", 1)[0] in CAMPAIGN_OWNED:
                raise UsageError(f"recipe {self.name}: {word} is the campaign's to decide "
                                 "(results go to --results DIR)")

    def namespace(self, seed: int | None = None) -> argparse.Namespace:
        """The ``run`` options parsed, with ``--seed`` when given; ``UsageError`` naming
        the recipe and argparse's complaint if they do not parse."""
        from ..cli import parse_run_options

        seed_words = ("--seed", str(seed)) if seed is not None else ()
        return parse_run_options((*self.argv, *seed_words), f"recipe {self.name}")

    @contextlib.contextmanager
    def configured(self, ns: argparse.Namespace) -> Iterator[tuple[GuestConfig, JobSpec]]:
        """The guest and job ``ns`` (this recipe parsed) describe, under the harness
        settings its options set (--accel, --mirror, --locked), as ``kdump-harness run``
        gets them from ``harness.cli.main``."""
        from .. import settings
        from ..cli import _setting_options
        from ..cli.run import job_inputs

        with settings.configured(settings.from_sources(cli=_setting_options(ns))):
            yield job_inputs(ns)

    def validate(self) -> None:
        """Refuse what ``run`` would refuse, naming the recipe (nothing is started)."""
        from ..cli.run import job_inputs

        try:
            job_inputs(self.namespace(seed=0))
        except UsageError as exc:
            if str(exc).startswith(f"recipe {self.name}:"):
                raise
            raise UsageError(f"recipe {self.name}: {exc}") from None

    @property
    def dimensions(self) -> dict[str, str]:
        return dict(self.config)

    def replay(self, seed: int | None) -> str:
        """The command that runs one iteration of this recipe again."""
        seed_words = ("--seed", str(seed)) if seed is not None else ()
        if self.kind is Kind.AUDIT:
            # The swarm again on a fresh guest (the campaign's guest had earlier swarms).
            return shlex.join(("kdump-harness", "repro", "--audit", "-n", "1", *self.argv,
                               *seed_words))
        return shlex.join(("kdump-harness", "run", *self.argv, *seed_words))
