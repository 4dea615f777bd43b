"""What one ``matrix list`` or ``matrix run`` covers: the selection, this shard's
iterations, the cells this host skips, the campaign id and the executor's tasks.

Sharding happens before the host's skips: every machine splits the same cells the same
way, and a machine that cannot run a cell says so instead of shifting work elsewhere.
"""

from __future__ import annotations

import datetime
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..campaign.iteration import Task
from ..campaign.recipe import Recipe, iteration_seed
from ..errors import HarnessError
from .expand import Cell, Expansion, expand, host_exclusions
from .model import Definition, HostFacts
from .shard import ShardSpec, Unit, shard, units

PLAN_FILE = "matrix-plan.json"
WHOLE = ShardSpec()
UNKNOWN_HOST = HostFacts()


@dataclass(frozen=True)
class RunPlan:
    definition: Definition
    selectors: tuple[str, ...]
    shard: ShardSpec
    iterations: int
    selected: Expansion               # the selection's cells and its static exclusions
    units: tuple[Unit, ...]           # this shard's iterations, in the order they run
    skipped: tuple[tuple[Unit, str], ...]   # this shard's iterations the host cannot run

    @property
    def runnable(self) -> tuple[Unit, ...]:
        gone = {u.key for u, _ in self.skipped}
        return tuple(u for u in self.units if u.key not in gone)

    @property
    def seconds(self) -> float:
        """Estimated run time of this shard's runnable iterations, one job."""
        return sum(u.cell.cost for u in self.runnable)

    def describe(self) -> str:
        what = " ".join(self.selectors) or "every cell"
        return (f"{self.definition.path}: {len(self.selected.cells)} cells ({what}), "
                f"{len(self.selected.excluded)} excluded, {self.iterations} iteration(s) "
                f"each; shard {self.shard}: {len(self.runnable)} iteration(s), "
                f"~{self.seconds / 60:.1f} min at one job"
                + (f", {len(self.skipped)} skipped on this host" if self.skipped else ""))


def make_plan(definition: Definition, *, selectors: Sequence[str] = (),
              spec: ShardSpec = WHOLE, iterations: int | None = None,
              facts: HostFacts = UNKNOWN_HOST) -> RunPlan:
    selected = expand(definition).select(definition, selectors)
    count = definition.iterations if iterations is None else iterations
    mine = shard(units(selected.cells, count), spec)
    skips = host_exclusions(definition, dict.fromkeys(u.cell for u in mine), facts)
    return RunPlan(definition, tuple(selectors), spec, count, selected, mine,
                   tuple((u, skips[u.cell.name]) for u in mine if u.cell.name in skips))


def host_facts() -> HostFacts:
    """This machine's QEMU version (unknown when QEMU cannot be asked: nothing skipped)."""
    from ..guest.accel import qemu_version

    try:
        return HostFacts(qemu=qemu_version())
    except (HarnessError, OSError):
        return HostFacts()


def campaign_id(spec: ShardSpec, now: datetime.datetime | None = None) -> str:
    """``nightly-<UTC date>-shard<i>of<N>``: the night's shards share the date."""
    day = (now or datetime.datetime.now(datetime.UTC)).strftime("%Y%m%d")
    return f"nightly-{day}-{spec.label}"


def recipe(cell: Cell, *, snapshot: bool = False) -> Recipe:
    """The executor's recipe for a cell: its name, run options and dimension values."""
    return Recipe(cell.name, (*cell.argv, *(("--snapshot",) if snapshot else ())),
                  config=cell.config)


def tasks(plan: RunPlan, *, snapshot: bool = False) -> list[Task]:
    recipes = {c.name: recipe(c, snapshot=snapshot)
               for c in dict.fromkeys(u.cell for u in plan.runnable)}
    # A seeded shape's iterations each draw their own order (seed S, S+1, ...: the same on
    # every machine and night); an unseeded one keeps its fixed order.
    return [Task(recipes[u.cell.name], u.iteration,
                 None if u.cell.seed is None else iteration_seed(u.cell.seed, u.iteration))
            for u in plan.runnable]


def plan_json(plan: RunPlan, campaign: str) -> dict[str, Any]:
    """The plan as the results directory keeps it (``matrix-plan.json``)."""
    return {
        "campaign": campaign, "definition": str(plan.definition.path),
        "selectors": list(plan.selectors), "shard": str(plan.shard),
        "iterations": plan.iterations,
        "cells": [{"cell": u.cell.name, "iteration": u.iteration, "argv": list(u.cell.argv),
                   "expected": u.cell.expected.value, "confidence": u.cell.confidence.value,
                   "why": u.cell.why, "cost": u.cell.cost} for u in plan.runnable],
        "skipped": [{"cell": u.cell.name, "iteration": u.iteration, "reason": why}
                    for u, why in plan.skipped],
        "excluded": [{"cell": e.cell.name, "reason": e.reason}
                     for e in plan.selected.excluded],
    }


def write_plan(plan: RunPlan, campaign: str, results: Path) -> Path:
    results.mkdir(parents=True, exist_ok=True)
    path = results / PLAN_FILE
    path.write_text(json.dumps(plan_json(plan, campaign), indent=2) + "\n")
    return path
