"""A built guest image: the ``GuestImage`` record and its ``image.json``.

One image is a directory in the cache (``cache.py`` says where; ``builder.py`` writes it)::

    vmlinuz          the bzImage: kexec'd as the capture kernel, and what QEMU boots
                     (-kernel) when there is no vmlinux
    vmlinux          the same kernel uncompressed, when it has a PVH entry point: QEMU boots
                     it directly and skips the emulated decompressor (see pvh.py)
    userspace.cpio   the guest userspace
    capture.cpio     the capture kernel's initrd as is: the part of the userspace it uses
    initrd.cpio      userspace.cpio + a second cpio with /boot/vmlinuz and /boot/capture.cpio:
                     the first kernel's initrd (Linux unpacks concatenated archives in order)
    config           the kernel's .config, when known
    image.json       what was built (GuestImage fields), written last: its presence means
                     the image is complete
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

from ..errors import ImageBuildError
from .kconfig import parse_kernel_config

#: The flavour of an image built with your own kernel instead of one of Debian's.
CUSTOM_FLAVOUR = "custom"
#: The files every complete image has (``vmlinux`` and ``config`` are optional).
IMAGE_FILES = ("vmlinuz", "userspace.cpio", "capture.cpio", "initrd.cpio", "image.json")

#: package -> (version in the lock, version used); None where one side lacks the package.
Drift = Mapping[str, tuple[str | None, str | None]]


def format_drift(drift: Drift) -> str:
    """``name locked -> used, ...`` ("-" where one side lacks the package)."""
    return ", ".join(f"{name} {old or '-'} -> {new or '-'}"
                     for name, (old, new) in sorted(drift.items()))


def is_complete(directory: Path) -> bool:
    """Whether ``directory`` holds a finished image (image.json goes in last)."""
    return all((directory / name).is_file() for name in IMAGE_FILES)


@dataclass(frozen=True)
class GuestImage:
    """A built guest image: what QEMU needs plus what tests may want to know about it."""

    profile: str
    #: cloud | generic | custom (your own kernel)
    flavour: str
    kernel_path: Path
    #: The first kernel's initrd: userspace + /boot/vmlinuz + /boot/capture.cpio.
    initrd_path: Path
    #: The capture kernel's initrd, uncompressed (/boot/capture.cpio holds it compressed).
    capture_initrd_path: Path
    kernel_release: str
    #: CONFIG_X -> value ("y", "m", "n", numbers, quoted strings); empty if unknown.
    kernel_config: Mapping[str, str]
    #: CONFIG_CRASH_HOTPLUG: the kernel updates the kdump image on hot-plug itself.
    crash_hotplug: bool
    #: Debian package -> version (userspace and kernel).
    packages: Mapping[str, str]
    #: group -> module paths in the guest, in load order (see /etc/harness/modules/<group>).
    module_groups: Mapping[str, tuple[str, ...]]
    #: group -> modules that need no loading because they are built in.
    builtin_modules: Mapping[str, tuple[str, ...]]
    #: group -> requested modules this kernel does not have at all (e.g. 9p in cloud).
    unavailable_modules: Mapping[str, tuple[str, ...]]
    build_seconds: float
    #: True when this call found the image already built.
    cached: bool
    directory: Path
    key: str
    #: Where the kernel config came from ("package", a path, or None when unknown).
    config_source: str | None = None
    config_notes: tuple[str, ...] = ()
    built_at: float = 0.0
    sizes: Mapping[str, int] = field(default_factory=dict)
    #: Packages at another version than the lock pins, because the archive dropped the
    #: pinned one (empty when the image follows the lock). A property of the request, not
    #: of the image: the same packages make the same image whatever the lock said.
    lock_drift: Drift = field(default_factory=dict)
    #: Debian package -> SHA256 of the .deb it was built from (``Cache.deb_path`` finds it).
    debs: Mapping[str, str] = field(default_factory=dict)
    #: The uncompressed kernel to boot through its PVH entry (None: boot the bzImage).
    pvh_kernel_path: Path | None = None

    @property
    def custom_kernel(self) -> bool:
        return self.flavour == CUSTOM_FLAVOUR

    def drift_summary(self) -> str:
        """One line for report headers; empty when the image follows the lock."""
        if not self.lock_drift:
            return ""
        return (f"{self.profile}/{self.flavour} differs from packages.lock.json (the archive "
                f"dropped the pinned versions): {format_drift(self.lock_drift)}")

    def to_json(self) -> dict[str, Any]:
        """The fields of image.json (builder.py writes it) plus ``lock_drift``."""
        return {
            "profile": self.profile, "flavour": self.flavour,
            "kernel_release": self.kernel_release, "crash_hotplug": self.crash_hotplug,
            "packages": dict(sorted(self.packages.items())),
            "module_groups": {g: list(m) for g, m in self.module_groups.items()},
            "builtin_modules": {g: list(m) for g, m in self.builtin_modules.items()},
            "unavailable_modules": {g: list(m) for g, m in self.unavailable_modules.items()},
            "build_seconds": round(self.build_seconds, 3), "key": self.key,
            "config_source": self.config_source, "config_notes": list(self.config_notes),
            "built_at": self.built_at, "sizes": dict(self.sizes),
            "lock_drift": {n: list(v) for n, v in self.lock_drift.items()},
            "debs": dict(sorted(self.debs.items())),
            "pvh": self.pvh_kernel_path is not None,
        }

    @classmethod
    def load(cls, directory: Path, *, cached: bool = True) -> GuestImage:
        """Read a complete image directory (``ImageBuildError`` if it is not one)."""
        try:
            data = json.loads((directory / "image.json").read_text())
        except (OSError, ValueError) as exc:
            raise ImageBuildError(f"{directory} is not a complete guest image ({exc})") from exc
        config_file = directory / "config"
        config = (parse_kernel_config(config_file.read_text())
                  if config_file.is_file() else {})
        return cls(
            profile=data["profile"], flavour=data["flavour"],
            kernel_path=directory / "vmlinuz", initrd_path=directory / "initrd.cpio",
            capture_initrd_path=directory / "capture.cpio",
            kernel_release=data["kernel_release"], kernel_config=MappingProxyType(config),
            crash_hotplug=bool(data["crash_hotplug"]),
            packages=MappingProxyType(data["packages"]),
            module_groups=_tuple_map(data["module_groups"]),
            builtin_modules=_tuple_map(data["builtin_modules"]),
            unavailable_modules=_tuple_map(data["unavailable_modules"]),
            build_seconds=float(data["build_seconds"]), cached=cached, directory=directory,
            key=data["key"], config_source=data.get("config_source"),
            config_notes=tuple(data.get("config_notes", ())),
            built_at=float(data.get("built_at", 0.0)),
            sizes=MappingProxyType(data.get("sizes", {})),
            debs=MappingProxyType(data.get("debs", {})),
            pvh_kernel_path=directory / "vmlinux" if data.get("pvh") else None)


def _tuple_map(data: Mapping[str, Sequence[str]]) -> Mapping[str, tuple[str, ...]]:
    return MappingProxyType({k: tuple(v) for k, v in data.items()})
