"""Audited swarms: one guest serves many swarms, each checked by the live header audit.

The kernel rewrites the elfcorehdr in place on every hot-plug event (6.6+), so the crash
is not needed to ask whether the header is accurate: read it from guest memory (QMP
``pmemsave``) after the swarm settles and verify it against the live topology
(``harness.live_audit``).  Each swarm's devices get the iteration's prefix (``i7-dimm3``)
and are unplugged again afterwards (the *reset*, not judged: on 6.12/7.2 the removal
itself leaves the last block described until the next event rewrites the header), so
the next swarm starts from the boot topology.  A reset that fails retires the guest: the
next iteration boots a fresh one.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import time
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import HarnessError
from ..results import Result, classify
from .iteration import LineMaker, Task, Where, staleness, write_audit_evidence
from .line import ResultLine

if TYPE_CHECKING:
    from ..guest import Guest, GuestConfig
    from ..hotplug import SwarmPlan
    from ..job import JobSpec


class AuditGuests:
    """The guest a worker keeps between audit iterations (one per recipe at a time)."""

    def __init__(self, where: Where) -> None:
        self.where = where
        self.guest: Guest | None = None
        self.recipe: str | None = None
        self.booted = 0

    def get(self, task: Task, ns: argparse.Namespace, config: GuestConfig) -> Guest:
        if self.guest is not None and self.recipe == task.recipe.name and self.guest.alive():
            return self.guest
        self.close()
        from ..cli.common import build_image_from_args
        from ..guest import Guest

        image = build_image_from_args(ns)
        self.booted += 1
        workdir = (self.where.results / "guests" /
                   f"{task.recipe.name}-{os.getpid()}-{self.booted}")
        workdir.mkdir(parents=True, exist_ok=True)
        guest = Guest(image, config, workdir)
        guest.__enter__()
        self.guest, self.recipe = guest, task.recipe.name
        return guest

    def close(self) -> None:
        if self.guest is not None:
            guest, self.guest, self.recipe = self.guest, None, None
            guest.shutdown()


def prefixed(plan: SwarmPlan, prefix: str) -> SwarmPlan:
    """``plan`` with the DIMM and vCPU ids prefixed (unique across a guest's swarms)."""
    from ..hotplug import Action

    own = (Action.PLUG_DIMM, Action.UNPLUG_DIMM, Action.PLUG_CPU, Action.UNPLUG_CPU)
    events = tuple(dataclasses.replace(e, device=prefix + e.device) if e.action in own else e
                   for e in plan.events)
    return dataclasses.replace(plan, events=events)


def reset_plan(plan: SwarmPlan) -> SwarmPlan | None:
    """Unplug what ``plan`` left plugged and shrink its virtio-mem back to nothing."""
    from ..hotplug import Action, SwarmEvent

    plugged: dict[str, Action] = {}
    resized: set[str] = set()
    for e in plan.events:
        if e.action.adds:
            plugged[e.device] = e.action
        elif e.action.removes:
            plugged.pop(e.device, None)
        else:
            resized.add(e.device)
    undo = {Action.PLUG_DIMM: Action.UNPLUG_DIMM, Action.PLUG_CPU: Action.UNPLUG_CPU}
    events = [SwarmEvent(undo[a], d) for d, a in plugged.items()]
    events += [SwarmEvent(Action.RESIZE_VIRTIO_MEM, d, 0) for d in sorted(resized)]
    if not events:
        return None
    return dataclasses.replace(plan, events=tuple(events), name=f"{plan.name}-reset", seed=None)


def run_audit(task: Task, where: Where, guests: AuditGuests) -> ResultLine:
    """One audited swarm on the worker's guest (booted on first use)."""
    from .. import settings
    from ..cli import _setting_options
    from ..cli.run import job_inputs

    ns = task.recipe.namespace(task.seed)
    maker = LineMaker(task, where, ns)
    with settings.configured(settings.from_sources(cli=_setting_options(ns))):
        config, spec = job_inputs(ns)
        try:
            guest = guests.get(task, ns, config)
        except HarnessError as exc:
            guests.close()
            return maker.make(classify(exc), spec.expect, f"boot: {exc}")
        try:
            return _audited_swarm(task, where, guests, guest, spec, maker)
        except HarnessError as exc:
            guests.close()     # the guest's state is unknown now: the next one is fresh
            return maker.make(classify(exc), spec.expect, str(exc),
                              kernel_release=getattr(guest.image, "kernel_release", ""),
                              accel=guest.accel.name)


def _audited_swarm(task: Task, where: Where, guests: AuditGuests, guest: Guest,
                   spec: JobSpec, maker: LineMaker) -> ResultLine:
    from ..hotplug import run_swarm
    from ..live_audit import audit

    out = where.evidence_dir(task)
    out.mkdir(parents=True, exist_ok=True)
    plan = prefixed(spec.plan, f"i{task.iteration}-")
    t0 = time.monotonic()
    swarm = run_swarm(guest, plan, options=spec.swarm_options, contention=spec.contention,
                      transcript_path=out / "transcript.json")
    if not swarm.settled:
        swarm.check()          # raises HotplugNotHonoured naming what did not settle
    settled = time.monotonic() - t0
    checked = audit(guest)
    result = Result(checked.report.verdict.value)
    write_audit_evidence(out, checked.report, {
        "guest": str(guest.workdir), "header_at": hex(checked.location.addr),
        "header_found_by": checked.location.source})
    reset = _reset(guest, plan, spec, guests, out)
    klog = swarm.klog
    return maker.make(result, spec.expect, f"the live header is {result.value}",
                      kernel_release=getattr(guest.image, "kernel_release", ""),
                      accel=guest.accel.name,
                      trylock_failures=klog.trylock_failures if klog else None,
                      staleness=staleness(checked.report),
                      times={"swarm_settle": settled, "audit": checked.seconds,
                             "reset": reset})


def _reset(guest: Guest, plan: SwarmPlan, spec: JobSpec, guests: AuditGuests,
           out: Path) -> float | None:
    """Unplug the swarm's devices; a failure retires the guest (said in reset.txt)."""
    from ..hotplug import SwarmOptions, run_swarm

    undo = reset_plan(plan)
    if undo is None:
        return 0.0
    t0 = time.monotonic()
    try:
        result = run_swarm(guest, undo, options=SwarmOptions(update=spec.swarm_options.update),
                           transcript_path=out / "reset-transcript.json")
        result.check()
    except HarnessError as exc:
        (out / "reset.txt").write_text(f"reset failed, guest retired: {exc}\n")
        guests.close()
        return None
    return time.monotonic() - t0
