"""Snapshots of a live guest: the only part of the package that talks to QEMU or a guest.

``expect`` asks QMP (the ``expected`` snapshot), ``observe`` runs one SSH command in the
guest (the ``observed`` snapshot), ``snapshot`` takes both.  ``Guest`` is imported for type
checking only, so importing ``harness.topology`` never loads the guest machinery.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from .expected import expected_from_qmp
from .model import Topology
from .observed import observe_command, parse_observation

if TYPE_CHECKING:
    from ..guest import Guest


def expect(guest: Guest) -> Topology:
    """What QEMU says the machine has (three or four cheap QMP queries)."""
    qmp = guest.qmp
    memory = qmp.execute("query-memory-devices")
    hotpluggable = qmp.execute("query-hotpluggable-cpus")
    cpus = qmp.execute("query-cpus-fast")
    summary = qmp.execute("query-memory-size-summary")
    return expected_from_qmp(memory, hotpluggable, cpus,
                             boot_memory=int(summary["base-memory"]), taken_at=time.time())


def observe(guest: Guest, *, crash_hotplug: bool = True) -> Topology:
    """The guest's own view, with one SSH command (see ``observe_command``).  With the
    guest's clock in it, ``guest.clock_offset`` (host minus guest) is brought up to date:
    the panic window CRASHTIME is checked against is in the guest's clock."""
    before = time.time()
    result = guest.run(observe_command(crash_hotplug=crash_hotplug), check=True)
    topology = parse_observation(result.stdout, taken_at=time.time())
    if topology.guest_clock is not None:
        guest.clock_offset = (before + topology.taken_at) / 2 - topology.guest_clock
    return topology


def snapshot(guest: Guest, *, crash_hotplug: bool = True) -> tuple[Topology, Topology]:
    """``(expected, observed)`` now.  The panic code calls this just before a panic.

    QMP first, then the guest: both take well under a second, and the guest view is
    the one a vmcore is checked against, so it is taken last, closest to the panic.
    """
    expected = expect(guest)
    observed = observe(guest, crash_hotplug=crash_hotplug)
    return expected, observed
