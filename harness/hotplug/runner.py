"""Running a swarm: send each phase's events, settle it, keep kdump current, record it all.

``run_swarm(guest, plan, ...)`` is a short loop over small parts::

    preflight (checks)  ->  for each phase: send its events at the plan's pace (sender),
                            let the hook stop the swarm between events (a mid-swarm panic),
                            settle the phase (settle), update kdump (update)
                        ->  final snapshot (topology oracle), kernel-log counts (klog)

Contention (``contention``) starts around the first event; the transcript
(``transcript``) is written whatever happens.  Guest-side failures (a refusal, a phase
that did not settle) are recorded in the result (``result.check()`` raises them);
harness failures raise.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import HarnessError
from ..topology import expect, observe
from . import devices as hp
from . import onlining
from .checks import preflight
from .contention import ContentionInjector, ContentionSpec
from .klog import KlogMarker
from .plan import SwarmPlan
from .report import Hook, HookAction, PhaseReport, SwarmOptions, SwarmProgress, SwarmResult
from .sender import Sender
from .settle import Settler
from .state import SwarmState
from .transcript import SwarmTranscript
from .update import KdumpUpdate, kdump_update, resolve_update

if TYPE_CHECKING:
    from ..guest import Guest


def run_swarm(
    guest: Guest,
    plan: SwarmPlan,
    *,
    options: SwarmOptions | None = None,
    between: Hook | None = None,
    stop_after_events: int | None = None,
    contention: Sequence[ContentionSpec] | ContentionInjector = (),
    transcript_path: Path | None = None,
) -> SwarmResult:
    """Run ``plan`` on ``guest``: send, settle each phase, snapshot, scan the kernel log.

    ``between(progress)`` runs after every event; returning ``HookAction.STOP`` (or
    reaching ``stop_after_events``) ends the swarm at once: no settling, no final
    snapshot, contention left running (``result.injector``) so the caller can panic the
    guest mid-swarm.  The transcript goes to ``transcript_path`` (default: in the guest's
    workdir) whatever happens.
    """
    return _SwarmRun(guest, plan, options or SwarmOptions(), between, stop_after_events,
                     contention, transcript_path).run()


class _SwarmRun:
    def __init__(self, guest: Guest, plan: SwarmPlan, options: SwarmOptions,
                 between: Hook | None, stop_after_events: int | None,
                 contention: Sequence[ContentionSpec] | ContentionInjector,
                 transcript_path: Path | None) -> None:
        self.guest, self.plan, self.between = guest, plan, between
        self.stop_after_events = stop_after_events
        self.injector = (contention if isinstance(contention, ContentionInjector) else
                         ContentionInjector(guest, contention) if contention else None)
        self.transcript_path = transcript_path or guest.workdir / f"{plan.name}-transcript.json"
        strategy = resolve_update(options.update, guest)
        result = SwarmResult(plan, options, strategy, transcript_path=self.transcript_path)
        transcript = SwarmTranscript(
            plan, options, self.injector.specs if self.injector else (),
            guest={"profile": getattr(guest.image, "profile", None),
                   "kernel_release": getattr(guest.image, "kernel_release", None),
                   "accel": guest.accel.name, "config": asdict(guest.config)})
        settle_timeout = options.settle_timeout or guest.timeouts.settle
        self.state = SwarmState(guest, plan, result, transcript, settle_timeout,
                                options.poll_interval, onlining.CpuOnliner(guest))
        self.update: KdumpUpdate = kdump_update(strategy, guest, result, transcript,
                                                settle_timeout)
        self.qmp_mark = len(guest.qmp.transcript.entries)

    @property
    def result(self) -> SwarmResult:
        return self.state.result

    def run(self) -> SwarmResult:
        started = time.monotonic()
        try:
            preflight(self.state)
            if self.injector is not None:
                self.injector.prepare()
            marker = KlogMarker(self.guest, self.plan.name)
            marker.begin()
            self.result.klog_marker = marker
            with self.guest.qmp.listen(*hp.HOTPLUG_EVENTS) as events:
                stopped = self._run_phases(Sender(self.state, events))
            if stopped:
                self.result.stopped_early = True
                self.result.injector = self.injector
                return self.result
            self._finish(marker)
        except BaseException as exc:
            self.state.onliner.close()
            self.state.transcript.add("note", what="error", error=repr(exc))
            if self.injector is not None and not self.injector.stopped:
                self._stop_contention_quietly()
            raise
        finally:
            self._close(started)
        return self.result

    def _run_phases(self, sender: Sender) -> bool:
        """Every phase; True when the hook (or ``stop_after_events``) stopped the swarm."""
        settler = Settler(self.state, sender)
        sender.pace_until(self._start_time())
        done, total = 0, len(self.plan.events)
        for phase_events in self.plan.phases:
            report = PhaseReport(phase_events[0].phase, len(phase_events))
            self.result.phases.append(report)
            start = at = time.monotonic()
            sender.new_phase()
            for event in phase_events:
                at = max(at + event.delay, time.monotonic()) if event.delay else at
                sender.pace_until(at)
                sender.send(event)
                done = self.result.events_sent = done + 1
                if self.update.settles_each_event:
                    settler.settle_event(event)
                    self.update.after_event(event)
                if self._stop_here(SwarmProgress(done, total, event, report.phase,
                                                 time.monotonic() - self.state.transcript.t0)):
                    return True
            report.sent = time.monotonic() - start
            settler.settle_phase(phase_events, report, start)
            self.update.after_phase(report)
        return False

    def _start_time(self) -> float:
        """When the first event goes: contention may start first, or sync on the lock."""
        injector = self.injector
        t0 = time.monotonic() + (injector.lead if injector else 0.0)
        if injector is not None:
            injector.schedule(t0)
            if injector.synced:
                # The first event waits for the guest to hold the kexec lock (see
                # contention.py): a fixed head start depends on the host's load.
                injector.wait_synced(self.guest.timeouts.kdump_load)
                t0 = max(t0, time.monotonic() + injector.sync_delay)
                injector.rebase(t0)
        transcript = self.state.transcript
        transcript.t0 = t0
        transcript.wall0 = time.time() + (t0 - time.monotonic())
        return t0

    def _stop_here(self, progress: SwarmProgress) -> bool:
        verdict = self.between(progress) if self.between else None
        if verdict is HookAction.STOP or (self.stop_after_events is not None
                                          and progress.done >= self.stop_after_events):
            self.state.transcript.add("note", what="stopped", after=progress.done)
            return True
        return False

    def _finish(self, marker: KlogMarker) -> None:
        """Stop contention, take the final snapshots, count the kernel's crash hp lines."""
        if self.injector is not None:
            self.result.contention = self.injector.stop()
        expected = expect(self.guest)
        observed = observe(self.guest, crash_hotplug=True)
        self.state.transcript.add("observation", what="final",
                                  topology=observed.to_json_dict())
        self.result.expected, self.result.observed = expected, observed
        self.result.diff = self.state.diff(expected, observed)
        try:
            self.result.klog = marker.collect()
        except HarnessError as exc:
            # The counts are evidence, not the verdict: say so rather than fail.
            self.result.warnings.append(f"kernel log not scanned: {exc.message}")

    def _stop_contention_quietly(self) -> None:
        assert self.injector is not None
        try:
            self.result.contention = self.injector.stop(timeout=self.guest.timeouts.command)
        except HarnessError:
            pass  # the original error is the one to report; the transcript notes this one

    def _close(self, started: float) -> None:
        """Duration, onlining batches, and the transcript (pointing into qmp.jsonl)."""
        self.result.duration = time.monotonic() - started
        if not self.result.stopped_early:
            self.state.onliner.close()
        transcript = self.state.transcript
        for batch in self.state.onliner.batches:
            transcript.add("online", t=batch["started"],
                           **{k: v for k, v in batch.items() if k != "started"})
        qmp_log = self.guest.qmp.transcript
        if qmp_log.path is not None:
            transcript.point_at_qmp_log(qmp_log.path, qmp_log.first_line + self.qmp_mark,
                                        qmp_log.first_line + len(qmp_log.entries),
                                        self.transcript_path)
        transcript.result = self.result.to_json_dict()
        try:
            transcript.save(self.transcript_path)
        except OSError as exc:
            self.result.failures.append(f"could not write the transcript: {exc}")
