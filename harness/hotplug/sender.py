"""Sending a swarm's events to QEMU at the plan's pace, and following QEMU's answers.

``Sender.send`` turns one ``SwarmEvent`` into its QMP commands (``devices``), records
the action in the transcript with the commands it sent, and tells the tracker what to
wait for.  ``pump`` feeds QEMU's hot-plug events (``_OST``, ``DEVICE_DELETED``, size
changes) to the tracker and hands each newly plugged vCPU to the onliner at once, as
udev would.  ``pace_until`` is the plan's timing, not a wait for the guest.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from ..errors import HotplugNotHonoured, UsageError
from . import devices as hp
from . import tracker
from .plan import Action, SwarmEvent

if TYPE_CHECKING:
    from ..guest.qmp import EventWaiter
    from .state import SwarmState

#: Queries the runner makes for itself: not part of what an action sent.
_BOOKKEEPING = ("query-hotpluggable-cpus", "query-memory-devices")


class Sender:
    def __init__(self, state: SwarmState, events: EventWaiter) -> None:
        self.state = state
        self.qmp = state.guest.qmp
        self.events = events
        self.free_slots: list[hp.FreeCpuSlot] | None = None
        # By identity: two events may be equal (e.g. the same resize twice).
        self.index_of = {id(e): i for i, e in enumerate(state.plan.events)}

    def new_phase(self) -> None:
        """Free vCPU slots are asked again in each phase (unplugs free some)."""
        self.free_slots = None

    def pace_until(self, when: float) -> None:
        """Keep following QEMU's events until ``when`` on the monotonic clock."""
        while True:
            self.pump()
            left = when - time.monotonic()
            if left <= 0:
                return
            time.sleep(min(left, 0.01))

    def send(self, event: SwarmEvent) -> None:
        """Send ``event``'s QMP commands; the transcript records them with the action."""
        mark = len(self.qmp.transcript.entries)
        sent_at = time.monotonic()
        entry = self.state.transcript.add(
            "action", t=sent_at, index=self.index_of[id(event)], phase=event.phase,
            action=event.action.value, device=event.device, size=event.size)
        try:
            self._dispatch(event, sent_at)
        finally:
            entry["qmp"] = [e["msg"] for e in self.qmp.transcript.entries[mark:]
                            if e["kind"] == "command"
                            and e["msg"].get("execute") not in _BOOKKEEPING]
            entry["t_end"] = time.monotonic()
        self.pump()

    def _dispatch(self, event: SwarmEvent, at: float) -> None:
        s, qmp, dev = self.state, self.qmp, event.device
        if event.action is Action.PLUG_DIMM:
            assert event.size is not None
            s.tracker.sent(dev, tracker.OpKind.PLUG, at=at)
            hp.plug_dimm(qmp, dev, event.size)
        elif event.action is Action.UNPLUG_DIMM:
            if dev not in s.memdevs:
                s.remember_memdevs(qmp.execute("query-memory-devices"))
            s.tracker.sent(dev, tracker.OpKind.UNPLUG, at=at)
            hp.unplug(qmp, dev)
        elif event.action is Action.PLUG_CPU:
            slot = self._cpu_slot(event)
            s.tracker.sent(dev, tracker.OpKind.PLUG, at=at)
            hp.plug_cpu(qmp, dev, slot)
            s.cpu_ids.add(dev)
            if not event.online:
                s.offline_cpus.add(dev)
        elif event.action is Action.UNPLUG_CPU:
            s.tracker.sent(dev, tracker.OpKind.UNPLUG, at=at)
            s.cpu_unplugs.add(dev)
            hp.unplug(qmp, dev)
        elif event.action is Action.RESIZE_VIRTIO_MEM:
            assert event.size is not None
            s.tracker.sent(dev, tracker.OpKind.RESIZE, target_size=event.size, at=at)
            hp.resize_virtio_mem(qmp, dev, event.size)

    def _cpu_slot(self, event: SwarmEvent) -> hp.FreeCpuSlot:
        if self.free_slots is None:
            self.free_slots = hp.free_cpu_slots(self.qmp.execute("query-hotpluggable-cpus"))
        if event.cpu_slot is not None:
            pinned = hp.FreeCpuSlot(event.cpu_driver or "", event.cpu_slot)
            for slot in self.free_slots:
                if slot.props == pinned.props:
                    self.free_slots.remove(slot)
                    return slot if not event.cpu_driver else pinned
            raise HotplugNotHonoured(f"{event.label()}: vCPU slot {pinned.label()} is not free")
        if not self.free_slots:
            raise UsageError(f"{event.label()}: no free vCPU slot left (raise maxcpus)")
        return self.free_slots.pop(0)

    def pump(self) -> None:
        """Feed the QMP events that arrived to the tracker (without waiting)."""
        s = self.state
        for event in self.events.drain():
            op = s.tracker.feed(event)
            if op is None:
                continue
            if op.refused and op.describe() not in s.result.failures:
                s.result.failures.append(op.describe())
            info = event.get("data", {}).get("info", {})
            if (op.kind is tracker.OpKind.PLUG and op.done_at is not None
                    and event.get("event") == hp.OST_EVENT and info.get("slot-type") == "CPU"
                    and op.device in s.cpu_ids and op.device not in s.offline_cpus):
                # The _OST names the slot by cpu-index: online it now, as udev would.
                s.onliner.submit(int(info["slot"]))
