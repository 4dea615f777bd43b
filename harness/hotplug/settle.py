"""Settling a phase: until QEMU and the guest both show everything the phase did.

One deadline covers the whole settle.  First QEMU must report every device done (``_OST``
for a plug, ``DEVICE_DELETED`` for an unplug, the new size for a virtio-mem resize; some
are asked for directly where QEMU's events are not enough), then the onliner must have
onlined the hot-added vCPUs, then the guest is polled until the topology oracle finds no
mismatch (onlining stragglers itself, as a fallback).  Whatever is still missing at the
deadline is named in the phase report.  Between polls the guest's health is checked, so
a dead QEMU, a panic or a refused DIMM ends the wait at once.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

from ..errors import HarnessError, HotplugNotHonoured
from ..timeouts import Deadline, poll
from ..topology import Topology, expect, observe
from . import devices as hp
from . import onlining, tracker
from .plan import Action, SwarmEvent

if TYPE_CHECKING:
    from .report import PhaseReport
    from .sender import Sender
    from .state import SwarmState

#: How often QEMU is asked directly for what its events may not report.
_QUERY_INTERVAL = 0.1


class Settler:
    def __init__(self, state: SwarmState, sender: Sender) -> None:
        self.state = state
        self.sender = sender
        self.qmp = state.guest.qmp

    def settle_phase(self, phase_events: Sequence[SwarmEvent], report: PhaseReport,
                     start: float) -> None:
        """QMP completion, onlining and the guest's view, under one deadline."""
        s = self.state
        deadline = Deadline(s.settle_timeout, f"phase {report.phase} settling")
        left = self.settle_ops([e.device for e in phase_events], deadline)
        report.qmp_done = time.monotonic() - start
        report.missing += [op.describe() for op in left]
        online_before = s.onliner.seconds
        if not s.onliner.wait_idle(deadline.remaining()):
            report.missing.append("onlining hot-added vCPUs did not finish")
        report.online_time += s.onliner.seconds - online_before
        if any(e.action is Action.PLUG_CPU for e in phase_events):
            report.cpus_onlined = time.monotonic() - start
        for index, why in sorted(s.onliner.failed.items()):
            s.transcript.add("note", what="online failed", cpu_index=index, error=why)
        self._record_latencies(phase_events, report)
        self._settle_guest(report, start, deadline)
        if report.missing:
            s.result.failures.append(f"phase {report.phase} did not settle within "
                                     f"{s.settle_timeout:.0f} s: " + "; ".join(report.missing))

    def settle_event(self, event: SwarmEvent) -> None:
        """QEMU's completion of one event and its vCPU onlining (for reload-each)."""
        deadline = Deadline(self.state.settle_timeout, f"{event.label()} settling")
        self.settle_ops([event.device], deadline)
        self.state.onliner.wait_idle(deadline.remaining())

    def settle_ops(self, devices: Iterable[str], deadline: Deadline) -> list[tracker.DeviceOp]:
        """Wait until QEMU reported every op on ``devices`` done; returns what is left."""
        devices = list(devices)
        ops = self.state.tracker
        next_query = [0.0]

        def done() -> bool:
            self.sender.pump()
            pending = ops.pending(devices)
            polled = [op for op in pending if op.kind is tracker.OpKind.RESIZE
                      or op.device in self.state.cpu_unplugs]
            if polled and time.monotonic() >= next_query[0]:
                self._poll_ops(polled)
                next_query[0] = time.monotonic() + _QUERY_INTERVAL
            return not ops.pending(devices)

        poll(done, deadline=deadline, interval=0.01,
             health=lambda: self.state.guest.check_health(
                 "waiting for " + ", ".join(op.device for op in ops.pending(devices)),
                 grace=0))   # between polls: a live QEMU must not cost a 0.5 s wait each
        return ops.pending(devices)

    def _poll_ops(self, ops: Sequence[tracker.DeviceOp]) -> None:
        """Ask QEMU directly where its events are not enough.

        MEMORY_DEVICE_SIZE_CHANGE is rate-limited (one a second per device); and QEMU 7.2
        under TCG sends DEVICE_DELETED for an unplugged vCPU's lapic child but not always
        for the vCPU itself, though the vCPU is gone from query-cpus-fast.
        """
        s = self.state
        if any(op.kind is tracker.OpKind.RESIZE for op in ops):
            s.remember_memdevs(self.qmp.execute("query-memory-devices"))
        present: dict[str, int] | None = None
        for op in ops:
            if op.kind is tracker.OpKind.RESIZE:
                dev = s.memdevs.get(op.device)
                if dev is not None:
                    op.last_size = dev.size
                    if dev.size == op.target_size:
                        op.done_at = time.monotonic()
            else:
                if present is None:
                    present = hp.cpu_indexes(self.qmp.execute("query-cpus-fast"))
                if op.device not in present:
                    op.done_at = time.monotonic()

    def _record_latencies(self, phase_events: Sequence[SwarmEvent],
                          report: PhaseReport) -> None:
        for event in phase_events:
            op = self.state.tracker.ops.get(event.device)
            if op is not None and op.done_at is not None:
                key = f"phase {report.phase} {event.device} {op.kind.value}"
                self.state.result.latencies[key] = round(op.done_at - op.sent_at, 4)
                if event.action is Action.UNPLUG_DIMM:
                    self._dimm_removed(event.device)

    def _dimm_removed(self, device: str) -> None:
        s = self.state
        dev = s.memdevs.pop(device, None)
        if dev is not None:
            s.result.removed.append(dev)
        try:
            hp.drop_backend(self.qmp, device)
        except HarnessError as exc:
            s.transcript.add("note", what="object-del failed", device=device, error=exc.message)

    def _settle_guest(self, report: PhaseReport, start: float, deadline: Deadline) -> None:
        """Poll the guest (onlining hot-added vCPUs) until the oracle finds no mismatch."""
        s = self.state
        attempted: dict[int, int] = {}
        last: dict[str, Any] = {}

        def settled() -> bool:
            expected = expect(s.guest)
            observed = observe(s.guest, crash_hotplug=False)
            report.polls += 1
            last["observed"] = observed
            to_online = [c for c in self._cpus_to_online(expected, observed)
                         if attempted.get(c, 0) < 2]
            if to_online:
                self._online_stragglers(to_online, attempted, report, start)
                return False
            last["diff"] = diff = s.diff(expected, observed)
            s.transcript.add("observation", what=f"settle phase {report.phase}",
                             mismatches=[str(m) for m in diff.mismatches])
            return diff.ok

        ok = poll(settled, deadline=deadline, interval=s.poll_interval,
                  health=lambda: s.guest.check_health(f"settling phase {report.phase}",
                                                      grace=0))
        observed = last["observed"].to_json_dict() if "observed" in last else None
        if ok:
            report.settled = time.monotonic() - start
            s.transcript.add("observation", what=f"settled phase {report.phase}",
                             topology=observed)
            return
        if "diff" in last:
            report.missing += [str(m) for m in last["diff"].mismatches]
        else:
            report.missing.append("hot-added vCPUs could not be onlined")
        s.transcript.add("observation", what=f"unsettled phase {report.phase}",
                         topology=observed)

    def _online_stragglers(self, cpus: list[int], attempted: dict[int, int],
                           report: PhaseReport, start: float) -> None:
        s = self.state
        for c in cpus:
            attempted[c] = attempted.get(c, 0) + 1
        try:
            took = onlining.online_cpus(s.guest, cpus)
        except HotplugNotHonoured as exc:
            took = 0.0
            s.transcript.add("note", what="online failed", cpus=cpus, error=str(exc))
        report.online_time += took
        report.cpus_onlined = time.monotonic() - start
        s.transcript.add("online", cpus=cpus, seconds=took, fallback=True)

    def _cpus_to_online(self, expected: Topology, observed: Topology) -> list[int]:
        """Guest CPUs behind this run's vCPU plugs that are present, offline and wanted
        (a fallback: the onliner normally got them all as their ``_OST`` arrived)."""
        s = self.state
        present, online = set(observed.cpus_present), set(observed.cpus_online)
        by_path = {slot.qom_path: slot.cpu_index for slot in expected.cpu_slots if slot.qom_path}
        by_index = {index: cpu for cpu, index in observed.cpu_firmware_ids}
        if observed.cpu_firmware_ids:
            cpus = []
            for device in (d for d in s.cpu_ids if d not in s.offline_cpus):
                index = by_path.get(hp.peripheral_path(device))
                cpu = by_index.get(index) if index is not None else None
                if cpu is not None:
                    s.result.cpu_map[device] = cpu
                    if cpu in present and cpu not in online:
                        cpus.append(cpu)
            return sorted(cpus)
        # No ACPI object links: online new CPUs, keeping as many offline as were asked for.
        new = sorted(present - set(s.baseline_present) - online)
        keep_offline = len([d for d in s.offline_cpus if hp.peripheral_path(d) in by_path])
        return new[:max(0, len(new) - keep_offline)]
