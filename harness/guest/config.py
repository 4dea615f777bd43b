"""What shapes one guest: its configuration, its run states, what it reports once up.

``GuestConfig`` is frozen and validated when built: every field is coerced to its type
(``Accel``, ``KexecMode``, ``CaptureMode``, ``Firmware``, ``KernelEntry``) and every
value QEMU or the kernel would refuse later is refused here, naming the option.
"""

from __future__ import annotations

import enum
from dataclasses import asdict, dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any, Protocol

from ..errors import UsageError
from ..model import Accel, CaptureMode, Firmware, KernelEntry, KexecMode, choose, values
from ..units import GiB, MiB, size_option


class ImageLike(Protocol):
    """What the guest needs from a built image (``harness.images.GuestImage``).

    Read-only members, so that frozen dataclasses such as ``GuestImage`` satisfy it.
    """

    @property
    def profile(self) -> str: ...
    @property
    def kernel_path(self) -> Path: ...
    @property
    def initrd_path(self) -> Path: ...
    @property
    def kernel_release(self) -> str: ...


class GuestState(enum.Enum):
    """Commands need ``RUNNING``; after a panic only the console and QMP mean anything."""

    NEW = "new"
    LAUNCHING = "launching"
    RUNNING = "running"
    PANICKED = "panicked"
    STOPPED = "stopped"


KEXEC_MODES = values(KexecMode)
CAPTURE_MODES = values(CaptureMode)
#: The typed fields and the option that names each in error messages.
_TYPED: tuple[tuple[str, type[StrEnum], str], ...] = (
    ("kexec", KexecMode, "--kexec"), ("capture_mode", CaptureMode, "--mode"),
    ("accel", Accel, "--accel"), ("firmware", Firmware, "firmware"),
    ("kernel_entry", KernelEntry, "kernel entry"))


@dataclass(frozen=True)
class GuestConfig:
    """How to shape and boot one guest (independent of which image)."""

    memory: int = 1 * GiB
    cpus: int = 2
    max_cpus: int = 8
    memory_slots: int = 64
    max_memory: int = 20 * GiB
    crashkernel: str = "256M"
    kexec: KexecMode = KexecMode.FILE
    kexec_hotplug: bool = True           # classic only: pass --hotplug when supported
    capture_mode: CaptureMode = CaptureMode.HEADERS
    memhp_default_state: str | None = "online_movable"
    accel: Accel = Accel.AUTO
    firmware: Firmware = Firmware.QBOOT
    kernel_entry: KernelEntry = KernelEntry.AUTO
    crash_debug: bool = True
    kernel_args: tuple[str, ...] = ()
    capture_args: tuple[str, ...] = ()   # extra capture-kernel command line words
    qemu_args: tuple[str, ...] = ()      # extra QEMU arguments (e.g. a cold-plugged virtio-mem)
    dump_disks: bool = True
    wait_kdump: bool = True
    #: Boots tried again when one fails with a known emulator fault (TCG only; each failed
    #: attempt's evidence is kept in ``boot-attempt-N/``; see console.EMULATOR_FAULTS).
    boot_retries: int = 1
    #: Start from a snapshot of this guest taken kdump-ready (``guest.snapshot``): made
    #: once per image, configuration, QEMU version and accelerator, restored in ~0.2 s.
    snapshot: bool = False
    #: This guest's swarms will unplug vCPUs: TCG stays multi-threaded (QEMU 10.0's
    #: round-robin TCG aborts on an unplug; ``guest.tcg_threads``).
    cpu_unplug: bool = False

    def __post_init__(self) -> None:
        for name, kind, option in _TYPED:
            object.__setattr__(self, name, choose(kind, getattr(self, name), option))
        self.validate()

    def validate(self) -> None:
        """Refuse what QEMU or the guest would refuse later (``UsageError``)."""
        if self.memory < 512 * MiB:
            raise UsageError(f"--memory {size_option(self.memory)}: below 512M leaves no room "
                             "for a crashkernel")
        if self.memory % (128 * MiB):
            raise UsageError(f"--memory {size_option(self.memory)} is not a multiple of 128M "
                             "(the guest's memory block)")
        if self.max_memory < self.memory:
            raise UsageError(f"--memory {size_option(self.memory)} is more than --maxmem "
                             f"{size_option(self.max_memory)} (the ceiling for boot plus "
                             "hot-added memory): raise --maxmem or lower --memory")
        if not 1 <= self.cpus <= self.max_cpus:
            raise UsageError(f"--boot-cpus {self.cpus} must be between 1 and --maxcpus "
                             f"{self.max_cpus}")
        if self.max_cpus > 255:
            raise UsageError(f"--maxcpus {self.max_cpus}: more than 255 vCPUs needs "
                             "x2APIC/IOMMU setup the harness does not do")
        if self.boot_retries < 0:
            raise UsageError(f"boot retries must be >= 0, not {self.boot_retries}")

    def to_json_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class PhaseTimes:
    """Host-side wall times of the boot phases, in seconds from QEMU's launch."""

    qemu_started: float = 0.0
    userspace: float | None = None
    ssh_ready: float | None = None
    kdump_loaded: float | None = None
    kdump_ready: float | None = None
    guest_uptime_userspace: float | None = None
    guest_kdump_load: float | None = None       # the load itself, measured in the guest
    restore: float | None = None                # a snapshot's guest running again

    def as_dict(self) -> dict[str, float | None]:
        return asdict(self)


@dataclass(frozen=True)
class Readiness:
    """What the guest reports once it is up (``/harness/readiness``)."""

    values: dict[str, str] = field(default_factory=dict)

    @classmethod
    def parse(cls, text: str) -> Readiness:
        """``KEY=VALUE`` lines; anything else is ignored."""
        return cls(dict(line.split("=", 1) for line in text.splitlines() if "=" in line))

    def get(self, key: str, default: str = "") -> str:
        return self.values.get(key, default)

    @property
    def kdump_loaded(self) -> bool:
        return self.get("kexec_crash_loaded") == "1"

    def summary(self) -> str:
        keys = ["release", "kdump_syscall", "kexec_crash_loaded", "crashkernel",
                "crash_hotplug_cpu", "crash_hotplug_memory", "cpus_online", "cpus_possible",
                "mem_total_kb"]
        return "\n".join(f"  {k:22} {self.get(k) or '-'}" for k in keys)
