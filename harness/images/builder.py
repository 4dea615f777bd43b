"""Building a guest image: kernel + initramfs from locked Debian packages (or your own kernel).

One image is a directory in the cache::

    vmlinuz          the bzImage: kexec'd as the capture kernel, and what QEMU boots
                     (-kernel) when there is no vmlinux
    vmlinux          the same kernel uncompressed, when it has a PVH entry point: QEMU boots
                     it directly and skips the emulated decompressor (see pvh.py)
    userspace.cpio   the guest userspace; the capture kernel's initrd as is
    initrd.cpio      userspace.cpio + a second cpio with /boot/vmlinuz and /boot/capture.cpio:
                     the first kernel's initrd (Linux unpacks concatenated archives in order)
    config           the kernel's .config, when known
    image.json       what was built (GuestImage fields), written last: its presence means
                     the image is complete

Both initrds stay uncompressed: under TCG the kernel's decompressor runs emulated, while a
plain cpio is little more than a memcpy. Measured with the trixie cloud image (31 MiB initrd,
3 boots each, guest uptime when /init starts, a busy 2-core host): plain 2.7-4.6 s, lz4
(21 MiB) 3.1-5.0 s, zstd -19 (17 MiB) 3.4-8.7 s, xz (crc32) 4.4-6.0 s, gzip 7.5-8.0 s.

Images are keyed by a hash of everything that goes into them (locked package hashes, the
rootfs tree, your kernel/modules/config, the builder's own source), so a changed input gives
a new image and an unchanged one is reused. Concurrent builders of one image (pytest-xdist
workers) serialise on a per-key ``flock``; the first builds in a scratch directory and
renames it into place, the others find it complete and return it.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import shutil
import stat
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

from ..errors import ImageBuildError, KernelUnsuitable, UsageError
from . import cpio
from .apt import depends_names
from .bzimage import kernel_release, kernel_release_of
from .cache import Cache
from .debs import SpillFile, deb_members, extract_deb, read_control
from .elfdeps import LibraryClosure, PackageFile, PackageFiles, library_closure
from .kconfig import (
    describe_kernel_config,
    has_crash_hotplug,
    parse_kernel_config,
    raise_if_unsuitable,
)
from .kmod import ModuleTree, ResolvedGroup, is_module_file, resolve_group, uncompressed_path
from .lockfile import LockedFlavour, LockedPackage, load_lock, parse_lock
from .packages import PinnedVersionGone, fetch_debs, lock_drift, resolve_current_flavour
from .profiles import (
    FLAVOURS,
    ModuleGroupSpec,
    Profile,
    ProfileSet,
    default_rootfs_dir,
    guest_images_dir,
    load_profiles,
)
from .pvh import pvh_kernel

log = logging.getLogger("harness.images")

#: Bump when the image layout changes in a way the source digest below would not show.
BUILDER_VERSION = 1
#: The builder's own modules that shape the output: their text is part of the image key.
_OUTPUT_SOURCES = ("builder.py", "cpio.py", "debs.py", "elfdeps.py", "kmod.py", "pvh.py")

CUSTOM_FLAVOUR = "custom"
GUEST_LIB_DIR = "lib/x86_64-linux-gnu"
MANIFEST_PATH = "etc/harness/image.json"
MODULE_LIST_DIR = "etc/harness/modules"
IMAGE_FILES = ("vmlinuz", "userspace.cpio", "initrd.cpio", "image.json")

#: How strictly a build follows the lock when the archive has moved on (``lock_policy``).
LOCK_POLICIES = ("prefer", "strict")
LOCK_ENV = "KDUMP_HARNESS_LOCK"

#: package -> (version in the lock, version used); None where one side lacks the package.
Drift = Mapping[str, tuple[str | None, str | None]]


def format_drift(drift: Drift) -> str:
    """``name locked -> used, ...`` ("-" where one side lacks the package)."""
    return ", ".join(f"{name} {old or '-'} -> {new or '-'}"
                     for name, (old, new) in sorted(drift.items()))


def lock_file_path() -> Path:
    """``guest-images/packages.lock.json``."""
    return guest_images_dir() / "packages.lock.json"


@dataclass(frozen=True)
class GuestImage:
    """A built guest image: what QEMU needs plus what tests may want to know about it."""

    profile: str
    #: cloud | generic | custom (your own kernel)
    flavour: str
    kernel_path: Path
    #: The first kernel's initrd: userspace + /boot/vmlinuz + /boot/capture.cpio.
    initrd_path: Path
    #: The capture kernel's initrd (the userspace cpio alone).
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
        """The record stored as image.json (paths relative to the image directory)."""
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
            capture_initrd_path=directory / "userspace.cpio",
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


def _is_complete(directory: Path) -> bool:
    return all((directory / name).is_file() for name in IMAGE_FILES)


# -- your own kernel --------------------------------------------------------------------


@dataclass(frozen=True)
class CustomKernel:
    """A kernel you built: bzImage, optional modules tree and config."""

    bzimage: Path
    release: str
    #: The ``lib/modules/<release>`` directory, if modules were given.
    modules: Path | None
    config: Path | None
    config_source: str | None


def _find_release_dir(modules_dir: Path, release: str) -> Path:
    """``lib/modules/<release>`` inside what the user passed as the modules directory."""
    candidates = [modules_dir / "lib" / "modules" / release,
                  modules_dir / "usr" / "lib" / "modules" / release,
                  modules_dir / release, modules_dir]
    for candidate in candidates:
        if candidate.is_dir() and (candidate.name == release) and (
                (candidate / "kernel").is_dir() or (candidate / "modules.order").is_file()):
            return candidate
    found = sorted({p.name for base in (modules_dir / "lib" / "modules",
                                        modules_dir / "usr" / "lib" / "modules", modules_dir)
                    if base.is_dir() for p in base.iterdir() if (p / "kernel").is_dir()})
    raise UsageError(f"--modules {modules_dir}: no lib/modules/{release} for the kernel's release"
                     + (f" (found: {', '.join(found)})" if found else
                        " (expected the INSTALL_MOD_PATH of `make modules_install`)"))


def custom_kernel(kernel: Path, modules_dir: Path | None, config: Path | None) -> CustomKernel:
    """Validate the user's kernel inputs; find its release and, if possible, its config."""
    kernel = Path(kernel)
    if not kernel.is_file():
        raise UsageError(f"--kernel {kernel}: no such file")
    release = kernel_release_of(kernel)
    release_dir = None
    if modules_dir is not None:
        modules_dir = Path(modules_dir)
        if not modules_dir.is_dir():
            raise UsageError(f"--modules {modules_dir}: no such directory")
        release_dir = _find_release_dir(modules_dir, release)
    source = None
    if config is not None:
        config = Path(config)
        if not config.is_file():
            raise UsageError(f"--config {config}: no such file")
        source = str(config)
    else:
        # A kernel developer's tree: arch/x86/boot/bzImage sits three levels below .config,
        # and modules_install leaves lib/modules/<release>/build pointing at the tree.
        guesses = []
        if kernel.resolve().parent.parts[-3:] == ("arch", "x86", "boot"):
            guesses.append(kernel.resolve().parents[3] / ".config")
        if release_dir is not None:
            guesses.append(release_dir / "build" / ".config")
        for guess in guesses:
            if guess.is_file():
                config, source = guess, str(guess)
                break
    return CustomKernel(kernel, release, release_dir, config, source)


# -- planning: what goes in, and the cache key --------------------------------------------


@dataclass(frozen=True)
class BuildPlan:
    """Everything one build reads, resolved and validated; ``key`` identifies the output."""

    profiles: ProfileSet
    profile: Profile
    flavour: str
    locked: LockedFlavour
    #: The packages to fetch: userspace, plus the kernel's unless ``custom`` is set.
    packages: Mapping[str, LockedPackage]
    custom: CustomKernel | None
    rootfs: Path
    key: str
    #: Identifies the lock file's entry this plan started from (profile, flavour, pins).
    lock_state: str = ""
    #: Where ``packages`` differ from the lock file (a fallback plan, see ``build_image``).
    drift: Drift = field(default_factory=dict)


def _file_digest(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def tree_digest(root: Path, *, contents: bool = True) -> str:
    """A digest of a directory tree: names, types, executable bits and contents.

    With ``contents=False`` files contribute size and mtime instead (for big module trees:
    ``make modules_install`` rewrites every file it installs, so that is enough).
    """
    digest = hashlib.sha256()
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for name in sorted(filenames + [d for d in dirnames
                                        if os.path.islink(os.path.join(dirpath, d))]):
            path = Path(dirpath) / name
            rel = str(path.relative_to(root))
            if path.is_symlink():
                digest.update(f"L {rel} {os.readlink(path)}\n".encode())
                continue
            info = path.stat()
            executable = bool(info.st_mode & 0o111)
            if contents:
                digest.update(f"F {rel} {executable} {_file_digest(path)}\n".encode())
            else:
                digest.update(f"F {rel} {executable} {info.st_size} {info.st_mtime_ns}\n"
                              .encode())
    return digest.hexdigest()


def _source_digest() -> str:
    here = Path(__file__).parent
    digest = hashlib.sha256(f"builder {BUILDER_VERSION}\n".encode())
    for name in _OUTPUT_SOURCES:
        digest.update((here / name).read_bytes())
    return digest.hexdigest()


def plan_build(profile: str, *, flavour: str = "cloud", kernel: Path | None = None,
               modules_dir: Path | None = None, config: Path | None = None,
               rootfs: Path | None = None, locked: LockedFlavour | None = None) -> BuildPlan:
    """Validate the request and compute its cache key (reads local files only).

    ``locked`` replaces the lock file's packages (the fallback when the archive dropped
    them); the plan's ``drift`` then says how they differ.
    """
    if flavour not in FLAVOURS:
        raise UsageError(f"unknown flavour {flavour!r} (known: {', '.join(FLAVOURS)})")
    if kernel is None and (modules_dir is not None or config is not None):
        raise UsageError("a modules directory or a config needs your own kernel (--kernel)")
    profiles = load_profiles()
    chosen = profiles.get(profile)
    lock_path = lock_file_path()
    in_lock = load_lock(lock_path).flavour(chosen.name, flavour, path=lock_path)
    if locked is None:
        locked = in_lock
    rootfs = Path(rootfs) if rootfs is not None else default_rootfs_dir()
    if not rootfs.is_dir():
        raise UsageError(f"guest rootfs {rootfs} is not a directory")
    init = rootfs / "init"
    if not (init.is_file() and os.access(init, os.X_OK)):
        raise UsageError(f"guest rootfs {rootfs} has no executable init: the kernel runs /init")
    custom = custom_kernel(kernel, modules_dir, config) if kernel is not None else None
    # The profile says which packages go in, the lock which exact files they are.
    stale = [name for name in chosen.packages if name not in locked.packages]
    if stale:
        raise ImageBuildError(
            f"{lock_path} has no {', '.join(stale)} for {chosen.name}/{flavour}: run "
            f"`kdump-harness images update --profile {chosen.name}`")
    wanted = list(chosen.packages) + ([] if custom else list(locked.kernel.packages))
    packages = {name: locked.packages[name] for name in wanted}
    pinned = list(chosen.packages) + ([] if custom else list(in_lock.kernel.packages))
    drift = lock_drift({n: in_lock.packages[n] for n in pinned if n in in_lock.packages},
                       packages)
    lock_state = hashlib.sha256(json.dumps([chosen.name, flavour, in_lock.to_json()],
                                           sort_keys=True).encode()).hexdigest()

    ingredients: dict[str, Any] = {
        "builder": _source_digest(),
        "profile": chosen.name,
        "flavour": CUSTOM_FLAVOUR if custom else flavour,
        "binaries": [[b.guest_path, b.package, b.file_name] for b in profiles.binaries],
        "module_groups": [[g.name, list(g.modules), g.required] for g in profiles.module_groups],
        "packages": {n: p.sha256 for n, p in sorted(packages.items())},
        "kernel_release": None if custom else locked.kernel.release,
        "rootfs": tree_digest(rootfs),
    }
    if custom:
        ingredients["custom"] = {
            "bzimage": _file_digest(custom.bzimage),
            "modules": tree_digest(custom.modules, contents=False) if custom.modules else None,
            "config": _file_digest(custom.config) if custom.config else None,
        }
    key = hashlib.sha256(json.dumps(ingredients, sort_keys=True).encode()).hexdigest()
    return BuildPlan(profiles, chosen, CUSTOM_FLAVOUR if custom else flavour, locked,
                     MappingProxyType(packages), custom, rootfs, key, lock_state,
                     MappingProxyType(drift))


# -- public API ------------------------------------------------------------------------


def lock_policy(value: str | None = None) -> str:
    """``value``, else ``$KDUMP_HARNESS_LOCK``, else ``prefer`` (validated)."""
    source = "the lock policy"
    if value is None:
        value = os.environ.get(LOCK_ENV) or "prefer"
        source = LOCK_ENV
    if value not in LOCK_POLICIES:
        raise UsageError(f"{source} must be one of {', '.join(LOCK_POLICIES)}, not {value!r}")
    return value


def build_image(profile: str, *, flavour: str = "cloud", kernel: Path | None = None,
                modules_dir: Path | None = None, config: Path | None = None,
                mirror: str | None = None, rootfs: Path | None = None,
                cache_dir: Path | None = None, rebuild: bool = False,
                lock: str | None = None) -> GuestImage:
    """Build the guest image for ``profile`` (or return the cached one).

    ``flavour`` picks Debian's kernel (``cloud`` or ``generic``); ``kernel`` (a bzImage)
    replaces it with your own, with its ``modules_dir`` (INSTALL_MOD_PATH of
    ``make modules_install``) and ``config``. The userspace always comes from the profile's
    locked packages. ``mirror`` is only used if a package has to be downloaded (default: the
    host's apt configuration). ``rootfs`` defaults to ``guest-images/rootfs``; ``cache_dir``
    to the user cache. ``rebuild`` builds again even if a cached image exists.

    ``lock`` (default ``$KDUMP_HARNESS_LOCK``, else ``prefer``) decides what happens when
    the archive no longer has a pinned version, as after every Debian point release:
    ``prefer`` builds from the suite's current versions instead (their SHA256 from the
    signed index, the differences in ``GuestImage.lock_drift`` and a warning), ``strict``
    fails. The fallback is remembered per lock state, so later calls find its image offline.

    Raises ``UsageError`` for bad inputs, ``KernelUnsuitable`` when the kernel config rules
    out kdump or hot-plug, ``ImageBuildError``/``HostError`` when building fails.
    """
    policy = lock_policy(lock)
    request: dict[str, Any] = dict(flavour=flavour, kernel=kernel, modules_dir=modules_dir,
                                   config=config, rootfs=rootfs)
    plan = plan_build(profile, **request)
    cache = Cache(cache_dir)

    def fallback_plan() -> BuildPlan | None:
        current = _remembered_fallback(cache, plan) if policy == "prefer" else None
        return plan_build(profile, **request, locked=current) if current else None

    if not rebuild:
        for candidate in (plan, fallback_plan()):
            if candidate is not None and _is_complete(_final(cache, candidate)):
                return _with_drift(GuestImage.load(_final(cache, candidate), cached=True),
                                   candidate)
    requested_at = time.time()
    # One lock for the lock file's plan and its fallback: the archive is asked once.
    with cache.lock(plan.key):
        fallback = fallback_plan()
        if fallback is not None:
            try:
                return _build_fallback(fallback, cache, mirror, rebuild, requested_at)
            except PinnedVersionGone:
                pass  # the archive moved again: start over from the lock file
        try:
            return _build_locked(plan, cache, mirror, rebuild, requested_at)
        except PinnedVersionGone as gone:
            if policy == "strict":
                raise ImageBuildError(f"{gone.message} (strict lock: no fallback to the "
                                      "archive's current versions)", details=gone.details
                                      ) from gone
            current = resolve_current_flavour(cache, plan.profile, flavour, mirror)
            fallback = plan_build(profile, **request, locked=current)
            _remember_fallback(cache, plan, current)
            log.warning("%s/%s: the archive no longer has %s %s pinned in %s; building from "
                        "its current versions (%d packages differ; `kdump-harness images "
                        "update` re-pins them)", plan.profile.name, plan.flavour,
                        gone.package.name, gone.package.version, lock_file_path().name,
                        len(fallback.drift))
            return _build_fallback(fallback, cache, mirror, rebuild, requested_at)


def _build_fallback(plan: BuildPlan, cache: Cache, mirror: str | None, rebuild: bool,
                    requested_at: float) -> GuestImage:
    """Build a fallback plan (under its own lock too) and mark how it differs."""
    with cache.lock(plan.key):
        return _with_drift(_build_locked(plan, cache, mirror, rebuild, requested_at), plan)


def _with_drift(image: GuestImage, plan: BuildPlan) -> GuestImage:
    return dataclasses.replace(image, lock_drift=plan.drift) if plan.drift else image


def _final(cache: Cache, plan: BuildPlan) -> Path:
    return cache.image_dir(plan.profile.name, plan.flavour, plan.key)


def _build_locked(plan: BuildPlan, cache: Cache, mirror: str | None, rebuild: bool,
                  requested_at: float) -> GuestImage:
    """Build ``plan`` into the cache; the caller holds ``cache.lock`` for it."""
    final = _final(cache, plan)
    if _is_complete(final):
        existing = GuestImage.load(final, cached=True)
        # Another worker finished this image while we waited: that satisfies a rebuild
        # requested before it was built.
        if not rebuild or existing.built_at >= requested_at:
            return existing
    # Scratch directories of this key left by a killed builder: we hold the lock, so
    # nobody else is using them.
    for stale in cache.images_dir().glob(f".build-{plan.key[:16]}-*"):
        shutil.rmtree(stale, ignore_errors=True)
    started = time.monotonic()
    scratch = cache.scratch_dir(f"build-{plan.key[:16]}")
    try:
        output = scratch / "image"
        output.mkdir()
        record = _build(plan, cache, mirror, scratch / "staging", output)
        record["build_seconds"] = round(time.monotonic() - started, 3)
        record["built_at"] = time.time()
        (output / "image.json").write_text(json.dumps(record, indent=2, sort_keys=True)
                                           + "\n")
        cache.install_directory(output, final, last="image.json")
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    image = GuestImage.load(final, cached=False)
    log.info("built %s/%s (%s) in %.1f s: %s", image.profile, image.flavour,
             image.kernel_release, image.build_seconds, final)
    return image


def _remember_fallback(cache: Cache, plan: BuildPlan, current: LockedFlavour) -> None:
    """Note which packages replaced this lock state's, so later builds skip the archive."""
    record = {"format": 1, "resolved_at": time.time(),
              "profiles": {plan.profile.name: {"suites": list(plan.profile.suites),
                                               "flavours": {"fallback": current.to_json()}}}}
    cache.write_fallback(plan.lock_state, json.dumps(record, indent=2, sort_keys=True) + "\n")


def _remembered_fallback(cache: Cache, plan: BuildPlan) -> LockedFlavour | None:
    text = cache.read_fallback(plan.lock_state)
    if text is None:
        return None
    try:
        return parse_lock(json.loads(text)).flavour(plan.profile.name, "fallback")
    except (ValueError, UsageError, ImageBuildError):
        return None  # unreadable: resolve again


def image_path(profile: str, *, flavour: str = "cloud", kernel: Path | None = None,
               modules_dir: Path | None = None, config: Path | None = None,
               rootfs: Path | None = None, cache_dir: Path | None = None) -> Path:
    """The directory where this image is (or would be) cached; nothing is built."""
    plan = plan_build(profile, flavour=flavour, kernel=kernel, modules_dir=modules_dir,
                      config=config, rootfs=rootfs)
    return Cache(cache_dir).image_dir(plan.profile.name, plan.flavour, plan.key)


def list_images(cache_dir: Path | None = None) -> list[GuestImage]:
    """Every complete image in the cache, oldest build first."""
    images = []
    for directory in sorted(Cache(cache_dir).images_dir().iterdir()):
        if directory.name.startswith(".") or not _is_complete(directory):
            continue
        try:
            images.append(GuestImage.load(directory, cached=True))
        except (ImageBuildError, KeyError):
            continue  # a layout from an older builder: ignore, a rebuild replaces it
    return sorted(images, key=lambda image: image.built_at)


def current_image_dirs(cache_dir: Path | None = None, rootfs: Path | None = None) -> set[Path]:
    """Where the images that Debian profiles would get now live (built or not): the lock
    file's plan for every profile and flavour, and the fallback a dropped pin led to."""
    cache = Cache(cache_dir)
    dirs: set[Path] = set()
    for name, profile in load_profiles().profiles.items():
        for flavour in profile.kernels:
            try:
                plan = plan_build(name, flavour=flavour, rootfs=rootfs)
            except (ImageBuildError, UsageError):
                continue  # nothing locked for it: nothing of it to keep
            dirs.add(_final(cache, plan))
            fallback = _remembered_fallback(cache, plan)
            if fallback is not None:
                dirs.add(_final(cache, plan_build(name, flavour=flavour, rootfs=rootfs,
                                                  locked=fallback)))
    return dirs


def prune_images(cache_dir: Path | None = None, *, keep_custom: bool = False,
                 dry_run: bool = False, rootfs: Path | None = None) -> list[tuple[Path, int]]:
    """Remove cached images nothing would use any more; return (directory, bytes) of each.

    Kept: the current image of every Debian profile and flavour (``current_image_dirs``)
    and, with ``keep_custom``, images of your own kernels.  Every builder, rootfs or lock
    change leaves the previous images behind (~100 MiB each); downloaded .debs stay.
    """
    cache = Cache(cache_dir)
    keep = current_image_dirs(cache_dir, rootfs)
    removed: list[tuple[Path, int]] = []
    with cache.lock("prune"):
        for directory in sorted(cache.images_dir().iterdir()):
            if directory in keep or not directory.is_dir():
                continue
            if directory.name.startswith("."):
                # A builder's scratch directory: only stale ones (an hour untouched) go.
                if time.time() - directory.stat().st_mtime < 3600:
                    continue
            elif keep_custom and directory.name.split("-")[1:2] == [CUSTOM_FLAVOUR]:
                continue
            size = sum(f.stat().st_size for f in directory.rglob("*") if f.is_file())
            removed.append((directory, size))
            if not dry_run:
                shutil.rmtree(directory, ignore_errors=True)
    return removed


# -- the build itself ------------------------------------------------------------------


@dataclass
class _Kernel:
    bzimage: bytes
    release: str
    modules: ModuleTree | None
    config: dict[str, str]
    config_text: str | None
    config_source: str | None
    spill: SpillFile | None = None

    def close(self) -> None:
        if self.spill is not None:
            self.spill.close()


def _debian_kernel(plan: BuildPlan, debs: Mapping[str, Path], staging: Path) -> _Kernel:
    """Read the locked kernel packages (vmlinuz, config, modules) in one pass and check them.

    Up to 6.12 Debian ships /boot/vmlinuz-<release> and /boot/config-<release>; the 7.x
    split packages put vmlinuz and config in /usr/lib/modules/<release>/ instead.
    """
    release = plan.locked.kernel.release
    modules_root = f"usr/lib/modules/{release}/"
    wanted_small = {f"boot/vmlinuz-{release}", f"boot/config-{release}",
                    f"{modules_root}vmlinuz", f"{modules_root}config",
                    f"{modules_root}modules.builtin"}
    small: dict[str, bytes] = {}
    staging.mkdir(parents=True, exist_ok=True)
    spill = SpillFile(staging / "modules.spill")
    for name in plan.locked.kernel.packages:
        for member in deb_members(debs[name]):
            if not member.info.isfile():
                continue
            if member.path in wanted_small:
                small[member.path] = member.read()
            elif member.path.startswith(modules_root) and is_module_file(member.path):
                spill.add(member.path[len(modules_root):], member.read())

    packages = ", ".join(plan.locked.kernel.packages)
    bzimage = small.get(f"boot/vmlinuz-{release}") or small.get(f"{modules_root}vmlinuz")
    config = small.get(f"boot/config-{release}") or small.get(f"{modules_root}config")
    if bzimage is None:
        raise ImageBuildError(f"no vmlinuz for {release} in {packages}")
    if config is None:
        raise ImageBuildError(f"no kernel config for {release} in {packages}")
    header_release = kernel_release(bzimage, f"vmlinuz of {packages}")
    if header_release != release:
        raise ImageBuildError(f"the vmlinuz of {packages} says it is {header_release}, the "
                              f"lock says {release}")
    builtin = small.get(f"{modules_root}modules.builtin")
    tree = ModuleTree(spill.keys(), spill.read,
                      builtin.decode() if builtin is not None else None)
    text = config.decode(errors="replace")
    return _Kernel(bzimage, release, tree, parse_kernel_config(text), text, "package", spill)


def _custom_kernel(custom: CustomKernel) -> _Kernel:
    text = custom.config.read_text(errors="replace") if custom.config else None
    return _Kernel(custom.bzimage.read_bytes(), custom.release,
                   ModuleTree.from_directory(custom.modules) if custom.modules else None,
                   parse_kernel_config(text) if text else {}, text, custom.config_source)


def _resolve_groups(groups: Sequence[ModuleGroupSpec], kernel: _Kernel,
                    what: str) -> list[ResolvedGroup]:
    """Module groups for this kernel; the config fills in where no modules tree says."""
    config = kernel.config
    resolved = []
    for group in groups:
        for module, symbol in group.modules:
            value = config.get(symbol)
            if group.required and value == "n":
                raise KernelUnsuitable(f"{what}: {symbol} is not set, but the guest needs "
                                       f"{module} (module group {group.name})")
            if group.required and value == "m" and kernel.modules is None:
                raise UsageError(f"{what}: {module} is a module ({symbol}=m): pass the modules "
                                 "directory (INSTALL_MOD_PATH of `make modules_install`)")
        config_builtin = {m for m, s in group.modules if config.get(s) == "y"}
        if kernel.modules is not None:
            tree = kernel.modules
            resolved.append(resolve_group(
                group.name, group.module_names, available=tree.paths,
                builtin=set(tree.builtin) | config_builtin, depends=tree.depends,
                required=group.required))
        elif config:
            builtin = tuple(m for m in group.module_names if m in config_builtin)
            missing = tuple(m for m in group.module_names if m not in config_builtin)
            resolved.append(ResolvedGroup(group.name, (), builtin, missing))
        else:
            # No modules and no config: all we can do is assume the drivers are built in.
            log.warning("%s: no modules directory and no config: assuming module group %s "
                        "is built in", what, group.name)
            resolved.append(ResolvedGroup(group.name, (), group.module_names, ()))
    return resolved


def _is_executable_or_library(path: str) -> bool:
    """Package members the initramfs can use: skips docs, locales, gconv modules etc.

    (libc6 alone has hundreds of files we never need; each costs a file creation.)
    """
    if path.startswith(("usr/bin/", "usr/sbin/", "usr/lib64/")):
        return True
    directory, _, name = path.rpartition("/")
    return directory in ("usr/lib", "usr/lib/x86_64-linux-gnu") and ".so" in name


def _userspace(plan: BuildPlan, debs: Mapping[str, Path], staging: Path,
               ) -> tuple[list[tuple[str, PackageFile]], LibraryClosure]:
    """Unpack the userspace packages, find the binaries and their library closure."""
    roots = {}
    for name in sorted(plan.profile.packages):
        roots[name] = staging / "packages" / name
        extract_deb(debs[name], roots[name], _is_executable_or_library)
    files = PackageFiles(roots)
    binaries = []
    for spec in plan.profiles.binaries:
        found = files.find_executable(spec.package, spec.file_name)
        if found is None:
            raise ImageBuildError(f"{spec.package} has no {spec.file_name} in its bin or sbin "
                                  f"directories (needed at {spec.guest_path})")
        binaries.append((spec.guest_path, found))

    def declared_depends(package: str) -> list[str]:
        return depends_names(read_control(debs[package]).get("Depends", ""))

    closure = library_closure(binaries, files, profile=plan.profile.name,
                              depends=declared_depends)
    return binaries, closure


def _mode(path: Path) -> int:
    return 0o755 if path.stat().st_mode & 0o111 else 0o644


def capture_initrd(userspace: bytes, config: Mapping[str, str] | None) -> bytes:
    """The capture kernel's initrd as the first kernel keeps it: zstd where it can.

    Only this inner copy is compressed (the first kernel's own initrd stays plain, see the
    module docstring).  Measured on trixie: kexec_file_load hashes every segment, and with
    a 10 MiB plain initrd beside the 56 MiB-memsz kernel the load does not even fit a 64M
    crashkernel; zstd -12 makes it 3.9 MiB in half a second (-19: 3.5 MiB in 5 s), the
    capture kernel's unpacking cost was within the noise (panic to capture userspace
    4.0-4.5 s either way).
    """
    if not config or config.get("CONFIG_RD_ZSTD") != "y" or shutil.which("zstd") is None:
        return userspace
    done = subprocess.run(["zstd", "-12", "-q", "-c"], input=userspace, capture_output=True,
                          check=False)
    if done.returncode != 0:
        raise ImageBuildError(f"zstd failed compressing the capture initrd: "
                              f"{done.stderr.decode(errors='replace').strip()}")
    return done.stdout


def _rootfs_entries(rootfs: Path) -> list[cpio.Entry]:
    entries: list[cpio.Entry] = []
    for dirpath, dirnames, filenames in os.walk(rootfs):
        dirnames.sort()
        base = Path(dirpath)
        for name in sorted(dirnames + filenames):
            path = base / name
            rel = str(path.relative_to(rootfs))
            if path.is_symlink():
                entries.append(cpio.Symlink(rel, os.readlink(path)))
            elif path.is_dir():
                entries.append(cpio.Directory(rel))
            elif path.is_file():
                entries.append(cpio.RegularFile(rel, path.read_bytes(), _mode(path)))
    return entries


_SKELETON = {"bin": 0o755, "sbin": 0o755, "usr/bin": 0o755, "usr/sbin": 0o755, "etc": 0o755,
             "dev": 0o755, "proc": 0o555, "sys": 0o555, "run": 0o755, "tmp": 0o1777,
             "root": 0o700, "var/log": 0o755, "mnt": 0o755, "lib64": 0o755,
             GUEST_LIB_DIR: 0o755}

_ETC_FILES = {
    # dropbear looks root up with getpwnam() and checks its shell against /etc/shells.
    "etc/passwd": "root:x:0:0:root:/root:/bin/sh\n",
    "etc/group": "root:x:0:\n",
    "etc/shells": "/bin/sh\n",
    # glibc >= 2.34 has the "files" NSS backend built in, so no libnss_*.so is needed.
    "etc/nsswitch.conf": "passwd: files\ngroup: files\nshadow: files\nhosts: files\n",
    "etc/hosts": "127.0.0.1\tlocalhost\n127.0.1.1\tguest\n::1\tlocalhost\n",
}


def _check_kernel(plan: BuildPlan, kernel: _Kernel, what: str) -> list[ResolvedGroup]:
    """Refuse an unsuitable kernel config; resolve the module groups for this kernel."""
    if kernel.config:
        raise_if_unsuitable(kernel.config, f"{what} ({kernel.release})")
    else:
        log.warning("%s: no kernel config found: cannot check for kdump/hot-plug support "
                    "before booting (pass --config)", what)
    return _resolve_groups(plan.profiles.module_groups, kernel, what)


def _build(plan: BuildPlan, cache: Cache, mirror: str | None, staging: Path,
           output: Path) -> dict[str, Any]:
    """Build into ``output``; return the image.json record (without timings)."""
    what = (f"kernel {plan.custom.bzimage}" if plan.custom
            else f"{plan.profile.name}/{plan.flavour} kernel")
    kernel: _Kernel | None = None
    try:
        if plan.custom:
            # Your own kernel is judged before anything is downloaded.
            kernel = _custom_kernel(plan.custom)
            groups = _check_kernel(plan, kernel, what)
            debs = fetch_debs(cache, plan.profile, plan.packages, mirror)
        else:
            debs = fetch_debs(cache, plan.profile, plan.packages, mirror)
            kernel = _debian_kernel(plan, debs, staging)
            groups = _check_kernel(plan, kernel, what)
        return _assemble(plan, kernel, groups, debs, staging, output)
    finally:
        if kernel is not None:
            kernel.close()


def _assemble(plan: BuildPlan, kernel: _Kernel, groups: Sequence[ResolvedGroup],
              debs: Mapping[str, Path], staging: Path, output: Path) -> dict[str, Any]:
    """Write the initramfs archives and the kernel into ``output``."""
    binaries, closure = _userspace(plan, debs, staging)

    entries: list[cpio.Entry] = [cpio.Directory(p, m) for p, m in _SKELETON.items()]
    entries.append(cpio.console_node())
    for guest_path, found in binaries:
        entries.append(cpio.RegularFile(guest_path, found.disk_path.read_bytes(), 0o755))
        if found.disk_path.name == "busybox":
            # Makes rdinit=/bin/sh work for debugging, before /init runs --install.
            entries.append(cpio.Symlink(str(Path(guest_path).parent / "sh"), "busybox"))
    for soname, lib in sorted(closure.libraries.items()):
        entries.append(cpio.RegularFile(f"{GUEST_LIB_DIR}/{soname}", lib.disk_path.read_bytes(),
                                        _mode(lib.disk_path)))
    if closure.interpreter is not None:
        loader = closure.interpreter
        loader_path = f"{GUEST_LIB_DIR}/{loader.disk_path.name}"
        entries.append(cpio.RegularFile(loader_path, loader.disk_path.read_bytes(), 0o755))
        # PT_INTERP is an absolute path (/lib64/ld-linux-x86-64.so.2): point it at the copy.
        for interp in sorted(closure.interpreter_paths - {"/" + loader_path}):
            entries.append(cpio.Symlink(interp, "/" + loader_path))
    # Both Debian search directories work, whichever a tool or script expects.
    entries.append(cpio.Symlink("usr/lib/x86_64-linux-gnu", f"../../{GUEST_LIB_DIR}"))

    module_lists: dict[str, tuple[str, ...]] = {}
    if kernel.modules is not None:
        tree = kernel.modules
        for group in groups:
            paths = []
            for name in group.load_order:
                guest = f"/lib/modules/{kernel.release}/{uncompressed_path(tree.paths[name])}"
                paths.append(guest)
                entries.append(cpio.RegularFile(guest, tree.elf_bytes(name), 0o644))
            module_lists[group.name] = tuple(paths)
    for group in groups:
        paths_text = "".join(p + "\n" for p in module_lists.get(group.name, ()))
        entries.append(cpio.RegularFile(f"{MODULE_LIST_DIR}/{group.name}", paths_text.encode()))
    for path, text in _ETC_FILES.items():
        entries.append(cpio.RegularFile(path, text.encode()))

    packages = {n: p.version for n, p in sorted(plan.packages.items())}
    manifest = {
        "profile": plan.profile.name, "flavour": plan.flavour,
        "kernel_release": kernel.release,
        "crash_hotplug": has_crash_hotplug(kernel.config),
        "packages": packages,
        "binaries": {g: f.package for g, f in binaries},
        "libraries": {s: lib.package for s, lib in sorted(closure.libraries.items())},
        "module_groups": {g.name: {"load": list(module_lists.get(g.name, ())),
                                   "builtin": list(g.builtin),
                                   "unavailable": list(g.unavailable)} for g in groups},
        "builder_version": BUILDER_VERSION,
    }
    entries.append(cpio.RegularFile(MANIFEST_PATH,
                                    (json.dumps(manifest, indent=2, sort_keys=True) + "\n")
                                    .encode()))
    # The guest scripts go last: on a clash the rootfs wins over generated files.
    entries += _rootfs_entries(plan.rootfs)

    userspace = cpio.newc_bytes(entries)
    boot = cpio.newc_bytes([cpio.RegularFile("boot/vmlinuz", kernel.bzimage),
                            cpio.RegularFile("boot/capture.cpio",
                                             capture_initrd(userspace, kernel.config))])
    (output / "vmlinuz").write_bytes(kernel.bzimage)
    vmlinux = pvh_kernel(kernel.bzimage)
    if vmlinux is not None:
        (output / "vmlinux").write_bytes(vmlinux)
    (output / "userspace.cpio").write_bytes(userspace)
    (output / "initrd.cpio").write_bytes(userspace + boot)
    if kernel.config_text is not None:
        (output / "config").write_text(kernel.config_text)
    for name in ("vmlinuz", "userspace.cpio", "initrd.cpio") + (("vmlinux",) if vmlinux else ()):
        os.chmod(output / name, stat.S_IRUSR | stat.S_IWUSR | stat.S_IRGRP | stat.S_IROTH)

    return {
        "profile": plan.profile.name, "flavour": plan.flavour,
        "kernel_release": kernel.release, "crash_hotplug": has_crash_hotplug(kernel.config),
        "packages": packages,
        "module_groups": {g.name: list(module_lists.get(g.name, ())) for g in groups},
        "builtin_modules": {g.name: list(g.builtin) for g in groups},
        "unavailable_modules": {g.name: list(g.unavailable) for g in groups},
        "key": plan.key, "config_source": kernel.config_source,
        "config_notes": describe_kernel_config(kernel.config) if kernel.config else [],
        "sizes": {"vmlinuz": len(kernel.bzimage), "userspace.cpio": len(userspace),
                  "initrd.cpio": len(userspace) + len(boot),
                  **({"vmlinux": len(vmlinux)} if vmlinux else {})},
        "debs": {n: p.sha256 for n, p in sorted(plan.packages.items())},
        "pvh": vmlinux is not None,
    }
