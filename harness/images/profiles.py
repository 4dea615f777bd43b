"""Guest image profiles (``guest-images/profiles.toml``) as frozen dataclasses."""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any

from ..errors import UsageError
from ..model import Flavour, values

FLAVOURS = values(Flavour)

def guest_images_dir() -> Path:
    """The ``guest-images`` directory holding profiles.toml, the lock file and rootfs/:
    the ``guest_images`` setting (``KDUMP_HARNESS_GUEST_IMAGES``), else the directory next
    to the ``harness`` package in the source checkout."""
    from ..settings import current

    return current().guest_images or Path(__file__).resolve().parents[2] / "guest-images"


def default_profiles_path() -> Path:
    return guest_images_dir() / "profiles.toml"


def default_rootfs_dir() -> Path:
    return guest_images_dir() / "rootfs"


@dataclass(frozen=True)
class BinarySpec:
    """One executable for the initramfs: where it goes and which package file it is."""

    guest_path: str
    package: str
    file_name: str


@dataclass(frozen=True)
class ModuleGroupSpec:
    """A named set of kernel modules the guest loads together (plus their dependencies)."""

    name: str
    #: (module name, config symbol) in load order of the roots.
    modules: tuple[tuple[str, str], ...]
    required: bool

    @property
    def module_names(self) -> tuple[str, ...]:
        return tuple(name for name, _ in self.modules)


@dataclass(frozen=True)
class CaptureSpec:
    """What the capture kernel's initrd holds (profiles.toml ``[capture]``): a subset of
    the binaries (guest paths) and module groups the first kernel's userspace has."""

    binaries: tuple[str, ...]
    module_groups: tuple[str, ...]


@dataclass(frozen=True)
class Profile:
    """A Debian suite's kernel and userspace."""

    name: str
    description: str
    suites: tuple[str, ...]
    #: "6.1" means the release must start with "6.1."; "7" means "7.".
    kernel_series: str
    #: flavour -> metapackage (e.g. cloud -> linux-image-cloud-amd64).
    kernels: Mapping[str, str]
    packages: tuple[str, ...]

    def kernel_metapackage(self, flavour: str) -> str:
        try:
            return self.kernels[flavour]
        except KeyError:
            raise UsageError(f"profile {self.name} has no {flavour!r} kernel flavour "
                             f"(known: {', '.join(self.kernels)})") from None

    def release_matches_series(self, release: str) -> bool:
        return release.startswith(self.kernel_series + ".")


@dataclass(frozen=True)
class ProfileSet:
    """Everything profiles.toml defines."""

    profiles: Mapping[str, Profile]
    binaries: tuple[BinarySpec, ...]
    module_groups: tuple[ModuleGroupSpec, ...]
    default_profile: str
    default_flavour: str
    source: Path
    #: None: the capture kernel gets the whole userspace.
    capture: CaptureSpec | None = None

    def get(self, name: str) -> Profile:
        """The named profile, or a ``UsageError`` listing the known ones."""
        try:
            return self.profiles[name]
        except KeyError:
            raise UsageError(f"unknown profile {name!r} (known: {', '.join(self.profiles)})") \
                from None

    def binary_packages(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(b.package for b in self.binaries))


def _require(table: Mapping[str, Any], key: str, kind: type, where: str) -> Any:
    if key not in table:
        raise UsageError(f"{where}: missing key {key!r}")
    value = table[key]
    if not isinstance(value, kind):
        raise UsageError(f"{where}: {key!r} must be a {kind.__name__}")
    return value


def _str_list(table: Mapping[str, Any], key: str, where: str) -> tuple[str, ...]:
    value = _require(table, key, list, where)
    if not all(isinstance(v, str) for v in value):
        raise UsageError(f"{where}: {key!r} must be a list of strings")
    return tuple(value)


def parse_profiles(data: Mapping[str, Any], source: Path) -> ProfileSet:
    """Validate the TOML document and build the dataclasses."""
    where = str(source)
    binaries = []
    for guest_path, spec in _require(data, "binaries", dict, where).items():
        bwhere = f"{where}: binaries.{guest_path}"
        if not guest_path.startswith("/"):
            raise UsageError(f"{bwhere}: the guest path must be absolute")
        binaries.append(BinarySpec(guest_path, _require(spec, "package", str, bwhere),
                                   _require(spec, "file", str, bwhere)))
    groups = []
    for name, spec in _require(data, "module_groups", dict, where).items():
        gwhere = f"{where}: module_groups.{name}"
        modules = _require(spec, "modules", dict, gwhere)
        if not all(isinstance(v, str) and v.startswith("CONFIG_") for v in modules.values()):
            raise UsageError(f"{gwhere}: each module maps to its CONFIG_ symbol")
        groups.append(ModuleGroupSpec(name, tuple(modules.items()),
                                      bool(spec.get("required", False))))
    profiles: dict[str, Profile] = {}
    for name, spec in _require(data, "profiles", dict, where).items():
        pwhere = f"{where}: profiles.{name}"
        kernels = _require(spec, "kernels", dict, pwhere)
        unknown = set(kernels) - set(FLAVOURS)
        if unknown:
            raise UsageError(f"{pwhere}: unknown flavours {sorted(unknown)}")
        packages = _str_list(spec, "packages", pwhere)
        missing = [b.package for b in binaries if b.package not in packages]
        if missing:
            raise UsageError(f"{pwhere}: packages must include {', '.join(missing)}")
        profiles[name] = Profile(
            name=name,
            description=_require(spec, "description", str, pwhere),
            suites=_str_list(spec, "suites", pwhere),
            kernel_series=_require(spec, "kernel_series", str, pwhere),
            kernels=MappingProxyType(dict(kernels)),
            packages=packages,
        )
    default_profile = data.get("default_profile", next(iter(profiles), ""))
    if default_profile not in profiles:
        raise UsageError(f"{where}: default_profile {default_profile!r} is not a profile")
    return ProfileSet(MappingProxyType(profiles), tuple(binaries), tuple(groups),
                      default_profile, data.get("default_flavour", "cloud"), source,
                      _capture_spec(data, binaries, groups, where))


def _capture_spec(data: Mapping[str, Any], binaries: list[BinarySpec],
                  groups: list[ModuleGroupSpec], where: str) -> CaptureSpec | None:
    """``[capture]``: binaries and module groups that must be defined above."""
    if "capture" not in data:
        return None
    table = _require(data, "capture", dict, where)
    cwhere = f"{where}: capture"
    spec = CaptureSpec(_str_list(table, "binaries", cwhere),
                       _str_list(table, "module_groups", cwhere))
    unknown = ([b for b in spec.binaries if b not in {x.guest_path for x in binaries}]
               + [g for g in spec.module_groups if g not in {x.name for x in groups}])
    if unknown:
        raise UsageError(f"{cwhere}: not defined in [binaries] or [module_groups]: "
                         f"{', '.join(unknown)}")
    return spec


def load_profiles(path: Path | None = None) -> ProfileSet:
    """Read profiles.toml (default: ``guest-images/profiles.toml``)."""
    path = path or default_profiles_path()
    try:
        with path.open("rb") as f:
            data = tomllib.load(f)
    except FileNotFoundError:
        raise UsageError(f"profiles file not found: {path} (set KDUMP_HARNESS_GUEST_IMAGES to the "
                         "guest-images directory of a source checkout)") from None
    except tomllib.TOMLDecodeError as exc:
        raise UsageError(f"{path}: {exc}") from None
    return parse_profiles(data, path)
