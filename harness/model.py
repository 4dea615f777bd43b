"""The harness's typed vocabulary: the values every layer and both faces share.

Each is a ``StrEnum``, so its members compare equal to (and serialise as) the strings that
appear on the command line, in JSON and in files.  This module imports nothing heavy: the
command line builds its parser from it without loading QEMU, SSH or the image builder.
"""

from __future__ import annotations

from enum import StrEnum
from typing import TypeVar

from .errors import UsageError

E = TypeVar("E", bound=StrEnum)


class Accel(StrEnum):
    """How QEMU runs the guest: ``auto`` probes KVM with a short boot, else TCG."""

    AUTO = "auto"
    KVM = "kvm"
    TCG = "tcg"


class Flavour(StrEnum):
    """Which Debian kernel flavour a profile's image uses (``custom``: your own kernel)."""

    CLOUD = "cloud"          # smaller, boots faster
    GENERIC = "generic"


class KexecMode(StrEnum):
    """How the capture kernel is loaded."""

    FILE = "file"            # kexec_file_load (kexec -s): kernel-updatable on x86
    CLASSIC = "classic"      # kexec_load (kexec -c), --hotplug when kexec-tools has it
    NONE = "none"            # nothing loaded: a panic cannot be captured


class Firmware(StrEnum):
    """What QEMU runs before the kernel (``-kernel`` boots either way)."""

    QBOOT = "qboot"          # QEMU's minimal firmware: 0.3-0.5 s sooner under TCG
    SEABIOS = "seabios"


class KernelEntry(StrEnum):
    """How the first kernel is started."""

    #: The image's uncompressed vmlinux through its PVH entry when it has one (no emulated
    #: decompressor: ~0.6 s less per TCG boot), else the bzImage.
    AUTO = "auto"
    BZIMAGE = "bzimage"      # always the bzImage and its own decompressor, as a bootloader


class CaptureMode(StrEnum):
    """What the capture kernel writes."""

    HEADERS = "headers"          # ELF header, program headers and notes (first MiB)
    ELF = "elf"                  # makedumpfile -E -d 31
    COMPRESSED = "compressed"    # makedumpfile kdump-compressed
    FULL = "full"                # a plain copy of /proc/vmcore


class Trigger(StrEnum):
    """How the guest is made to panic."""

    SYSRQ = "sysrq"              # echo c > /proc/sysrq-trigger (optionally on one CPU)
    NMI = "nmi"                  # QMP inject-nmi: the boot CPU panics from NMI context
    SYSRQ_MULTI = "sysrq-multi"  # sysrq on several CPUs together: simultaneous panics


class UpdateStrategy(StrEnum):
    """Who keeps the kdump image current after hot-plug."""

    AUTO = "auto"                # kernel when crash_hotplug reads 1, else reload
    KERNEL = "kernel"            # crash hot-plug (6.6+) rewrites the header itself
    RELOAD = "reload"            # reload kdump after each phase settles
    RELOAD_EACH = "reload-each"  # reload kdump after every event
    NONE = "none"                # nobody: the negative control


class TimingKind(StrEnum):
    """How a swarm phase's events are spaced (``hotplug.plan.Timing``)."""

    BURST = "burst"          # back to back
    PACED = "paced"          # one every interval
    WAVES = "waves"          # a wave back to back, an interval between waves


class ContentionKind(StrEnum):
    """What contends for the kexec lock during a swarm (contention.py says how)."""

    RELOAD = "reload"
    UDEV = "udev"
    READERS = "readers"


def values(enum: type[StrEnum]) -> tuple[str, ...]:
    """The strings an option accepts, in declaration order (argparse ``choices``)."""
    return tuple(member.value for member in enum)


def choose(enum: type[E], value: str, option: str) -> E:
    """``value`` as a member of ``enum``, or a ``UsageError`` naming ``option`` and the
    choices (the one way a string from a command line, a file or an API call is typed)."""
    try:
        return enum(value)
    except ValueError:
        raise UsageError(f"{option} must be one of {', '.join(values(enum))}, "
                         f"not {value!r}") from None


UPDATE_HELP = ("how the kdump image follows hot-plug: kernel (crash hot-plug, 6.6+), reload "
               "(reload kdump after each phase settles, as a distro's udev rule ends up "
               "doing), reload-each (after every event), none (negative control); auto picks "
               "kernel when crash_hotplug reads 1, else reload")
