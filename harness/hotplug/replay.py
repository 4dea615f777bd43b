"""Replay: run a recorded swarm again on a fresh guest and compare what it did.

``replay_plan`` pins every vCPU plug to the slot it took (and, with
``timing="recorded"``, spaces events as they really were); ``replay`` runs it and
``compare_actions`` says whether the same QMP commands went out in the same order.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import UsageError
from .plan import Action, SwarmPlan
from .report import Hook, SwarmResult
from .transcript import SwarmTranscript

if TYPE_CHECKING:
    from ..guest import Guest

def replay_plan(transcript: SwarmTranscript, *, timing: str = "plan") -> SwarmPlan:
    """The recorded plan with each vCPU plug pinned to the slot it took.

    ``timing="recorded"`` replaces each event's delay with the gap actually measured
    between sends, instead of the plan's nominal timing.
    """
    if timing not in ("plan", "recorded"):
        raise UsageError(f"replay timing must be plan or recorded, not {timing!r}")
    actions = {int(a["index"]): a for a in transcript.actions()}
    events = list(transcript.plan.events)
    last_rel: dict[int, float] = {}
    for i, event in enumerate(events):
        action = actions.get(i)
        if action is None:
            continue
        if event.action is Action.PLUG_CPU and event.cpu_slot is None:
            for cmd in action.get("qmp", []):
                if cmd.get("execute") == "device_add":
                    args = dict(cmd.get("arguments", {}))
                    driver = str(args.pop("driver"))
                    args.pop("id", None)
                    event = replace(event, cpu_driver=driver,
                                    cpu_slot=tuple(sorted((k, int(v)) for k, v in args.items())))
        if timing == "recorded" and action.get("rel") is not None:
            rel = float(action["rel"])
            prev = last_rel.get(event.phase)
            event = replace(event, delay=0.0 if prev is None else max(0.0, rel - prev))
            last_rel[event.phase] = rel
        events[i] = event
    return replace(transcript.plan, events=tuple(events))


def action_signature(action: dict[str, Any]) -> tuple[Any, ...]:
    """What must be equal for two runs to have done the same thing at one step."""
    cmds = tuple((c.get("execute"), json.dumps(c.get("arguments", {}), sort_keys=True))
                 for c in action.get("qmp", []))
    return (action.get("action"), action.get("device"), action.get("size"), cmds)


def compare_actions(original: Sequence[dict[str, Any]],
                    replayed: Sequence[dict[str, Any]]) -> list[str]:
    """Differences between two runs' actions (empty: the replay did the same thing)."""
    out: list[str] = []
    if len(original) != len(replayed):
        out.append(f"the original sent {len(original)} events, the replay {len(replayed)}")
    for a, b in zip(original, replayed, strict=False):
        if action_signature(a) != action_signature(b):
            out.append(f"event {a.get('index')}: original {action_signature(a)}, "
                       f"replay {action_signature(b)}")
    return out


@dataclass
class ReplayResult:
    """A replayed swarm and how its actions compare with the original's."""

    result: SwarmResult
    differences: list[str]

    @property
    def same_actions(self) -> bool:
        return not self.differences


def replay(guest: Guest, transcript: SwarmTranscript, *, timing: str = "plan",
           transcript_path: Path | None = None, between: Hook | None = None) -> ReplayResult:
    """Run a recorded swarm again on ``guest`` and compare the actions taken."""
    from .runner import run_swarm  # the runner records transcripts: import it late

    plan = replay_plan(transcript, timing=timing)
    result = run_swarm(guest, plan, options=transcript.options, between=between,
                       contention=transcript.contention, transcript_path=transcript_path)
    new = SwarmTranscript.load(result.transcript_path) if result.transcript_path else None
    replayed = new.actions() if new else []
    return ReplayResult(result, compare_actions(transcript.actions(), replayed))
