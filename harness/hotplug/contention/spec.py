"""Contention specs: what contends for the kexec lock, where and when (parsed from
``KIND[:key=value,...]`` on the command line)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from enum import StrEnum
from typing import Any

from ...errors import UsageError
from ...model import ContentionKind, choose, values

KINDS = values(ContentionKind)
#: Sources that reload kdump, and so hold the kexec lock.
RELOADING = ("reload", "udev")
#: The boot option that makes kexec_file_load's long loop preemptible (see above).
PREEMPT_FULL = "preempt=full"

class Sync(StrEnum):
    """When a reload's swarm starts: once the guest reports the kexec lock held, or at a
    fixed offset from the reload's start."""

    LOCK = "lock"
    NONE = "none"


#: The reload's capture initrd is padded with this many MiB of zeros by default (the
#: kernel's initramfs unpacker skips zero padding).  Debian's and Fedora's kdump initrds
#: are 20-60 MiB; the harness's own is 10 MiB, and kexec_file_load holds the kexec lock
#: while it digests and copies the segments, so the padding gives the reload a distro's
#: lock window.  Measured here with two CPU hogs on the host: unpadded, a 16-DIMM burst
#: outlasted the window (14 of 32 block events failed, the rest repaired the header);
#: see the module docstring.
DEFAULT_RELOAD_PAD_MIB = 32
#: What the reload script prints once the kexec lock is seen held (see the module doc).
LOCKED_MARK = "HARNESS-LOCKED"
#: The interrupt line QEMU's q35 ACPI SCI uses (hot-plug GPEs arrive on it).
ACPI_IRQ = 9
DIR = "/run/harness/contention"


@dataclass(frozen=True)
class ContentionSpec:
    """One contention source.

    ``cpu``: guest CPU to pin to (``None``: the ACPI-IRQ CPU for ``reload``, unpinned for
    the others).  ``offset``: seconds from the swarm's first event, negative for before.
    ``count``: reloads back to back (``reload``) or concurrent readers (``readers``).
    ``sync``: ``lock`` (``reload`` only, its default): the reload starts at once and the
    swarm ``max(offset, 0)`` seconds after the guest reports that the first load holds
    the kexec lock; ``none``: the reload starts ``offset`` seconds from the swarm.
    """

    kind: ContentionKind
    cpu: int | None = None
    offset: float = -0.3
    count: int = 1
    #: None: ``lock`` for reload, ``none`` for the others.
    sync: Sync | None = None
    #: MiB of zeros after the reload's capture initrd (None: DEFAULT_RELOAD_PAD_MIB for
    #: reload, 0 for udev, whose reloads are a distro's own).
    pad: int | None = None

    def __post_init__(self) -> None:
        kind = choose(ContentionKind, self.kind, "contention kind")
        object.__setattr__(self, "kind", kind)
        reload = kind is ContentionKind.RELOAD
        sync = (Sync.LOCK if reload else Sync.NONE) if self.sync is None else self.sync
        object.__setattr__(self, "sync", choose(Sync, sync, f"contention {kind}: sync"))
        if self.pad is None:
            object.__setattr__(self, "pad", DEFAULT_RELOAD_PAD_MIB if reload else 0)
        if self.sync is Sync.LOCK and not reload:
            raise UsageError(f"contention {kind}: only reload can sync on the kexec lock")
        if self.count < 1:
            raise UsageError(f"contention {kind}: count must be at least 1")
        if self.cpu is not None and self.cpu < 0:
            raise UsageError(f"contention {kind}: cpu must be a guest CPU number")
        if (self.pad or 0) < 0 or (self.pad and not reload):
            raise UsageError(f"contention {kind}: pad (MiB) is for reload, and not negative")

    def label(self) -> str:
        cpu = "acpi-irq" if self.cpu is None and self.kind == "reload" else self.cpu
        when = (f"swarm {max(self.offset, 0.0):+.2f} s after the lock is held" if self.synced
                else f"offset={self.offset:+.2f} s")
        pad = f", pad={self.pad}M" if self.pad else ""
        return f"{self.kind}(cpu={cpu}, {when}, count={self.count}{pad})"

    @property
    def synced(self) -> bool:
        return self.sync is Sync.LOCK

    def to_json_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json_dict(cls, d: dict[str, Any]) -> ContentionSpec:
        pad = d.get("pad")
        return cls(kind=ContentionKind(d["kind"]), cpu=d.get("cpu"),
                   offset=float(d.get("offset", -0.3)), count=int(d.get("count", 1)),
                   sync=Sync(d["sync"]) if d.get("sync") else None,
                   pad=int(pad) if pad is not None else 0)


def boot_args_for(specs: Sequence[ContentionSpec], kernel_args: Sequence[str] = ()
                  ) -> tuple[str, ...]:
    """Kernel command line words a guest needs for ``specs`` (unless the user chose a
    preemption model in ``kernel_args`` already)."""
    if any(s.kind in RELOADING for s in specs) and not any(
            a.startswith("preempt=") for a in kernel_args):
        return (PREEMPT_FULL,)
    return ()


def parse_contention(text: str) -> ContentionSpec:
    """``reload``, ``reload:cpu=1,offset=-0.3,count=2,sync=none``, ``readers:count=8``."""
    kind, _, rest = text.partition(":")
    spec = ContentionSpec(choose(ContentionKind, kind.strip(), "contention kind"))
    for item in filter(None, (p.strip() for p in rest.split(","))):
        key, sep, value = item.partition("=")
        if not sep:
            raise UsageError(f"contention option {item!r} in {text!r}: use key=value")
        try:
            if key == "cpu":
                spec = replace(spec, cpu=None if value in ("irq", "acpi") else int(value))
            elif key == "offset":
                spec = replace(spec, offset=float(value))
            elif key == "count":
                spec = replace(spec, count=int(value))
            elif key == "sync":
                spec = replace(spec, sync=choose(Sync, value, f"contention {kind}: sync"))
            elif key == "pad":
                spec = replace(spec, pad=int(value.removesuffix("M")))
            else:
                raise UsageError(f"unknown contention option {key!r} in {text!r} "
                                 "(cpu, offset, count, sync, pad)")
        except ValueError:
            raise UsageError(f"contention option {item!r} in {text!r} is not a number") from None
    return spec
