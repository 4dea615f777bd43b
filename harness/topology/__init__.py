"""The topology oracle: what the guest should have, what it shows, and how they differ.

A ``Topology`` is a JSON-serialisable snapshot of the machine's CPUs and memory.
``expected`` snapshots come from QMP (``query-memory-devices``, ``query-hotpluggable-cpus``,
``query-cpus-fast``); ``observed`` ones from inside the guest (``/proc/iomem``, the CPU
masks in sysfs, memory block states, the crash_hotplug sysfs files).  The verifier
compares a vmcore with the observed snapshot taken just before the panic, and uses the
QMP view to name DIMMs.

Address ranges are half-open ``[start, end)`` everywhere in the harness: /proc/iomem's
inclusive ends are converted once, when parsed.

Module map, in pipeline order (every public name is importable from this package):

``ranges``
    ``AddressRange`` and the O(n log n) range algebra (``merge_ranges``,
    ``subtract_ranges``, ``intersect_ranges``).
``kernel_formats``
    The kernel's text formats: ``parse_iomem`` (``IomemEntry``), ``system_ram_ranges``,
    ``crash_kernel_ranges``, ``parse_cpu_list``, ``format_cpu_list``, and the
    ``crashkernel=,cma`` ranges from sysfs (``parse_range_lines``) or the boot log
    (``crash_cma_ranges``).
``model``
    The snapshot: ``Topology`` (and its JSON), ``MemoryDevice``, ``CpuSlot`` and
    ``check_devices_disjoint``.  Pure data.
``observed``
    The guest's view, pure: ``observe_command`` (one shell command) and
    ``parse_observation`` (its output -> an observed ``Topology``).
``expected``
    QEMU's view, pure: ``expected_from_qmp`` and ``device_memory_base`` (q35 layout).
``live``
    The only module that talks to a running guest: ``expect`` (QMP), ``observe`` (SSH)
    and ``snapshot`` (both).  It imports ``harness.guest`` for type checking only, so
    importing this package (as ``harness.vmcore`` does, for ranges and the model) loads
    no guest machinery.
``diff``
    ``diff_topology``: expected vs observed -> ``TopologyDiff`` of ``Mismatch`` records.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..lazy import lazy_exports
from .kernel_formats import (
    GUEST_CLOCK_COMMAND,
    IomemEntry,
    crash_cma_ranges,
    crash_kernel_ranges,
    format_cpu_list,
    parse_cpu_list,
    parse_guest_clock,
    parse_iomem,
    parse_range_lines,
    system_ram_ranges,
)
from .model import CpuSlot, MemoryDevice, Topology, check_devices_disjoint
from .ranges import AddressRange, intersect_ranges, merge_ranges, subtract_ranges

if TYPE_CHECKING:
    from .diff import Mismatch, TopologyDiff, diff_topology
    from .expected import device_memory_base, expected_from_qmp
    from .live import expect, observe, snapshot
    from .observed import observe_command, parse_observation

#: The oracle's parts load on first use: the vmcore readers need only ranges and the model.
__getattr__ = lazy_exports(__name__, {
    "Mismatch": "diff", "TopologyDiff": "diff", "diff_topology": "diff",
    "device_memory_base": "expected", "expected_from_qmp": "expected",
    "expect": "live", "observe": "live", "snapshot": "live",
    "observe_command": "observed", "parse_observation": "observed"})

__all__ = [
    "GUEST_CLOCK_COMMAND",
    "AddressRange",
    "CpuSlot",
    "IomemEntry",
    "MemoryDevice",
    "Mismatch",
    "Topology",
    "TopologyDiff",
    "check_devices_disjoint",
    "crash_cma_ranges",
    "crash_kernel_ranges",
    "device_memory_base",
    "diff_topology",
    "expect",
    "expected_from_qmp",
    "format_cpu_list",
    "intersect_ranges",
    "merge_ranges",
    "observe",
    "observe_command",
    "parse_cpu_list",
    "parse_guest_clock",
    "parse_iomem",
    "parse_observation",
    "parse_range_lines",
    "snapshot",
    "subtract_ranges",
    "system_ram_ranges",
]
