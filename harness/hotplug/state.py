"""What the parts of one swarm run share: the guest, the result being built, the
transcript, and what this run has plugged so far."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ..topology import MemoryDevice, Topology, TopologyDiff, diff_topology, expected_from_qmp
from . import devices as hp
from . import onlining, tracker

if TYPE_CHECKING:
    from ..guest import Guest
    from .plan import SwarmPlan
    from .report import SwarmResult
    from .transcript import SwarmTranscript


@dataclass
class SwarmState:
    guest: Guest
    plan: SwarmPlan
    result: SwarmResult
    transcript: SwarmTranscript
    settle_timeout: float
    poll_interval: float
    onliner: onlining.CpuOnliner
    tracker: tracker.HotplugTracker = field(default_factory=tracker.HotplugTracker)
    memdevs: dict[str, MemoryDevice] = field(default_factory=dict)
    offline_cpus: set[str] = field(default_factory=set)    # vCPU ids to leave offline
    cpu_ids: set[str] = field(default_factory=set)         # vCPU ids plugged by this run
    cpu_unplugs: set[str] = field(default_factory=set)     # vCPU ids unplugged by this run
    baseline_present: tuple[int, ...] = ()

    def remember_memdevs(self, reply: Sequence[dict[str, Any]]) -> None:
        """Note the memory devices QEMU reports (``query-memory-devices``)."""
        topo = expected_from_qmp(reply, [], [], boot_memory=None, taken_at=time.time())
        for dev in topo.memory_devices:
            self.memdevs[dev.id] = dev

    def diff(self, expected: Topology, observed: Topology) -> TopologyDiff:
        """The oracle's comparison, knowing what this run removed and left offline."""
        by_path = {s.qom_path: s.cpu_index for s in expected.cpu_slots if s.qom_path}
        offline = {by_path[hp.peripheral_path(d)] for d in self.offline_cpus
                   if by_path.get(hp.peripheral_path(d)) is not None}
        return diff_topology(expected, observed, removed=self.result.removed,
                             cpus_offline={i for i in offline if i is not None})
