"""A synthetic guest whose dump and topology agree, for the vmcore tests to break one at a time.

Imported by the tests as ``vmcore_guest`` (a unique name: no clash with other conftests).

The guest: 2 GiB of boot RAM with a 256 MiB crashkernel reservation carved out of it, two
256 MiB DIMMs above 4 GiB, 4 possible CPUs of which 2 are online, CPU 0 busy when it panicked.
"""

from __future__ import annotations

from dataclasses import replace

from harness.topology import AddressRange, MemoryDevice, Topology
from harness.vmcore.writer import CoreSpec, GiB, MiB, SyntheticCpu, default_vmcoreinfo

RELEASE = "6.12.0-test"
CRASH_TIME = 1_700_000_000
CRASH_KERNEL = AddressRange(0x3000_0000, 0x4000_0000)
DIMMS = (
    MemoryDevice("dimm0", "dimm", 4 * GiB, 256 * MiB, slot=0),
    MemoryDevice("dimm1", "dimm", 4 * GiB + 256 * MiB, 256 * MiB, slot=1),
)
SYSTEM_RAM = (AddressRange(0x1000, 0x9_FC00), AddressRange(MiB, 2 * GiB),
              AddressRange(4 * GiB, 4 * GiB + 512 * MiB))
# What the kernel's header describes: System RAM minus [0, 1 MiB) minus Crash kernel, one
# PT_LOAD per resource (each DIMM is its own System RAM resource).
DUMP_RAM = (AddressRange(MiB, CRASH_KERNEL.start), AddressRange(CRASH_KERNEL.end, 2 * GiB),
            DIMMS[0].range, DIMMS[1].range)
BUSY = SyntheticCpu(pid=4242, rip=0xFFFF_FFFF_8123_4567)
IDLE = SyntheticCpu(pid=0, rip=0xFFFF_FFFF_81F0_0000)


def make_spec(**changes: object) -> CoreSpec:
    """The dump of the synthetic guest, with ``changes`` applied."""
    spec = CoreSpec(cpus=(BUSY, IDLE), ram=DUMP_RAM,
                    vmcoreinfo=default_vmcoreinfo(RELEASE, crash_time=CRASH_TIME))
    return replace(spec, **changes)  # type: ignore[arg-type]


def make_topology(**changes: object) -> Topology:
    """The guest's topology just before the panic, with ``changes`` applied."""
    topology = Topology(
        source="observed", taken_at=CRASH_TIME - 1.0, kernel_release=RELEASE,
        system_ram=SYSTEM_RAM, crash_kernel=(CRASH_KERNEL,), cpus_possible=(0, 1, 2, 3),
        cpus_present=(0, 1), cpus_online=(0, 1), memory_devices=DIMMS)
    return replace(topology, **changes)  # type: ignore[arg-type]


PANIC_WINDOW = (CRASH_TIME - 3.0, CRASH_TIME + 1.0)
DMESG = ("[   42.000000] sysrq: Trigger a crash\n"
         "[   42.000100] Kernel panic - not syncing: sysrq triggered crash\n")
