"""Audited swarms: one guest serves many swarms, each checked by the live header audit.

The kernel rewrites the elfcorehdr in place on every hot-plug event (6.6+), so the crash
is not needed to ask whether the header is accurate: read it from guest memory (QMP
``pmemsave``) after the swarm settles and verify it against the live topology
(``harness.live_audit``).  Each swarm's devices get the iteration's prefix (``i7-dimm3``)
and stay: the next swarm adds to what the guest has (its header must describe all of
it), until a swarm would not fit (DIMM slots, --maxmem, the memmap budget, vCPU slots,
QEMU's TCG contexts): then the guest is retired and a fresh one (restored from the
snapshot with --snapshot) takes the swarm.  Unplugging everything after each swarm was
measured slower than a fresh restored guest (1.35 s per swarm against one 0.8 s restore
every few swarms).  A virtio-mem device is shrunk back to nothing after each swarm, so
the next grow is a grow again (that *reset* is not judged).
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import shutil
import time
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import HarnessError, UsageError
from ..results import Result, classify
from .iteration import LineMaker, Task, Where, staleness, write_audit_evidence
from .line import ResultLine

if TYPE_CHECKING:
    from ..guest import Guest, GuestConfig
    from ..hotplug import SwarmEvent, SwarmPlan
    from ..job import JobSpec


class AuditGuests:
    """The guest a worker keeps between audit iterations (one per recipe at a time)."""

    def __init__(self, where: Where) -> None:
        self.where = where
        self.guest: Guest | None = None
        self.recipe: str | None = None
        self.booted = 0
        self.history: list[SwarmEvent] = []   # every event the guest has had
        self.fresh = False                    # the last get() booted the guest
        self.needed = False                   # kept evidence points at the guest's logs
        self.workdir: Path | None = None      # the newest guest's evidence directory

    def get(self, task: Task, ns: argparse.Namespace, config: GuestConfig,
            plan: SwarmPlan) -> Guest:
        """The worker's guest for ``task``: the one it has when ``plan`` still fits on it,
        else a fresh one (another recipe, a dead QEMU, no room left)."""
        from ..hotplug import fit_for_plan

        if (self.guest is not None and self.recipe == task.recipe.name and self.guest.alive()
                and self.fits(plan, config)):
            self.fresh = False
        else:
            self.close()
            self.guest = self._boot(task, ns, fit_for_plan(config, plan))
            self.recipe, self.history, self.fresh = task.recipe.name, [], True
        self.history += plan.events
        return self.guest

    def fits(self, plan: SwarmPlan, config: GuestConfig) -> bool:
        """Whether ``plan`` fits on top of every swarm the guest has had."""
        from ..hotplug import Action, check_memory_budget

        both = dataclasses.replace(plan, events=(*self.history, *plan.events))
        try:
            check_memory_budget(both, config)    # slots, --maxmem, memmap (conservative)
        except UsageError:
            return False
        plugs = both.count(Action.PLUG_CPU)
        present = config.cpus + plugs - both.count(Action.UNPLUG_CPU)
        # QEMU 10.0 under TCG never gives a vCPU thread's TCG context back on unplug; a
        # plug past maxcpus threads aborts it (tcg_register_thread: n < tcg_max_ctxs).
        assert self.guest is not None
        if both.count(Action.UNPLUG_CPU) and self.guest.host_fit.tcg_threads.mode == "single":
            return False    # round-robin TCG cannot unplug (guest.tcg_threads): a new guest
        threads = config.cpus + plugs if self.guest.accel.name == "tcg" else present
        return max(present, threads) <= config.max_cpus

    def _boot(self, task: Task, ns: argparse.Namespace, config: GuestConfig) -> Guest:
        from ..cli.common import build_image_from_args
        from ..guest import Guest

        image = build_image_from_args(ns)
        self.booted += 1
        self.workdir = (self.where.results / "guests" /
                        f"{task.recipe.name}-{os.getpid()}-{self.booted}")
        self.workdir.mkdir(parents=True, exist_ok=True)
        guest = Guest(image, config, self.workdir)
        guest.__enter__()
        return guest

    def close(self) -> None:
        """Shut the guest down; its directory goes too unless kept evidence points at
        it (its dump disks always go: an audit writes no dump, and they are 22 GiB
        apparent size that would swamp an artifact upload)."""
        if self.guest is None:
            return
        guest, self.guest, self.recipe = self.guest, None, None
        guest.shutdown()
        if self.needed:
            for disk in guest.workdir.glob("*.img"):
                disk.unlink(missing_ok=True)
        else:
            shutil.rmtree(guest.workdir, ignore_errors=True)
        self.needed = False


def prefixed(plan: SwarmPlan, prefix: str) -> SwarmPlan:
    """``plan`` with the DIMM and vCPU ids prefixed (unique across a guest's swarms)."""
    from ..hotplug import Action

    own = (Action.PLUG_DIMM, Action.UNPLUG_DIMM, Action.PLUG_CPU, Action.UNPLUG_CPU)
    events = tuple(dataclasses.replace(e, device=prefix + e.device) if e.action in own else e
                   for e in plan.events)
    return dataclasses.replace(plan, events=events)


def reset_plan(plan: SwarmPlan) -> SwarmPlan | None:
    """Shrink every virtio-mem device ``plan`` resized back to nothing (else None)."""
    from ..hotplug import Action, SwarmEvent

    resized = sorted({e.device for e in plan.events if e.action is Action.RESIZE_VIRTIO_MEM})
    if not resized:
        return None
    events = tuple(SwarmEvent(Action.RESIZE_VIRTIO_MEM, d, 0) for d in resized)
    return dataclasses.replace(plan, events=events, name=f"{plan.name}-reset", seed=None)


def run_audit(task: Task, where: Where, guests: AuditGuests) -> ResultLine:
    """One audited swarm on the worker's guest (booted on first use)."""
    ns = task.recipe.namespace(task.seed)
    maker = LineMaker(task, where, ns)
    with task.recipe.configured(ns) as (config, spec):
        try:
            guest = guests.get(task, ns, config, prefixed(spec.plan, f"i{task.iteration}-"))
        except HarnessError as exc:
            _point_at_guest(where.evidence_dir(task), guests)
            guests.close()
            return maker.make(classify(exc), spec.expect, f"boot: {exc}")
        try:
            return _audited_swarm(task, where, guests, guest, spec, maker)
        except HarnessError as exc:
            _point_at_guest(where.evidence_dir(task), guests)
            guests.close()     # the guest's state is unknown now: the next one is fresh
            return maker.make(classify(exc), spec.expect, str(exc),
                              kernel_release=getattr(guest.image, "kernel_release", ""),
                              accel=guest.accel.name)


def _point_at_guest(out: Path, guests: AuditGuests) -> None:
    """An iteration that failed keeps a pointer to its guest's evidence (console, QMP)."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "guest.txt").write_text(f"{guests.workdir}\n")
    guests.needed = True


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
    if result is not spec.expect or where.keep_evidence:
        guests.needed = True          # audit.json names the guest's directory
    reset = _reset(guest, plan, spec, guests, out)
    klog = swarm.klog
    return maker.make(result, spec.expect, f"the live header is {result.value}",
                      kernel_release=getattr(guest.image, "kernel_release", ""),
                      accel=guest.accel.name,
                      trylock_failures=klog.trylock_failures if klog else None,
                      staleness=staleness(checked.report),
                      snapshot=guest.restored_from is not None,
                      times={"swarm_settle": settled, "audit": checked.seconds,
                             "reset": reset, "restore": guest.times.restore if guests.fresh
                             else None, "boot_to_kdump_ready": guest.times.kdump_ready
                             if guests.fresh else None})


def _reset(guest: Guest, plan: SwarmPlan, spec: JobSpec, guests: AuditGuests,
           out: Path) -> float | None:
    """Shrink the swarm's virtio-mem back; a failure retires the guest (reset.txt)."""
    from ..hotplug import SwarmOptions, run_swarm

    undo = reset_plan(plan)
    if undo is None:
        return None
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
