"""Planning a build: what goes into an image, and the cache key that names it.

``plan_build`` turns a request (profile, flavour, or your own kernel, modules and config)
into a ``BuildPlan``, reading local files only: the profile, the locked packages, the guest
rootfs and your kernel's files. Images are keyed by a hash of everything that goes into
them (locked package hashes, the rootfs tree, your kernel/modules/config, the builder's own
source), so a changed input gives a new image and an unchanged one is reused.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

from ..errors import ImageBuildError, UsageError
from .cache import Cache
from .image import CUSTOM_FLAVOUR, Drift
from .kernel import CustomKernel, custom_kernel
from .lockfile import LockedFlavour, LockedPackage, load_lock, lock_file_path, sha256_file
from .packages import lock_drift
from .profiles import FLAVOURS, Profile, ProfileSet, default_rootfs_dir, load_profiles

#: Bump when the image layout changes in a way the source digest below would not show.
BUILDER_VERSION = 1
#: The builder's own modules that shape the output: their text is part of the image key.
_OUTPUT_SOURCES = ("builder.py", "cpio.py", "debs.py", "elfdeps.py", "initramfs.py",
                   "kernel.py", "kmod.py", "pvh.py")


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
    #: Where ``packages`` differ from the lock file (a fallback plan, see lock_fallback.py).
    drift: Drift = field(default_factory=dict)

    def image_dir(self, cache: Cache) -> Path:
        """Where this plan's image is (or will be) in ``cache``."""
        return cache.image_dir(self.profile.name, self.flavour, self.key)


@dataclass(frozen=True)
class BuildRequest:
    """An image as asked for: a profile's Debian kernel, or your own (see ``plan_build``)."""

    profile: str
    flavour: str = "cloud"
    kernel: Path | None = None
    modules_dir: Path | None = None
    config: Path | None = None
    rootfs: Path | None = None

    def plan(self, locked: LockedFlavour | None = None) -> BuildPlan:
        return plan_build(self.profile, flavour=self.flavour, kernel=self.kernel,
                          modules_dir=self.modules_dir, config=self.config,
                          rootfs=self.rootfs, locked=locked)


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
                digest.update(f"F {rel} {executable} {sha256_file(path)}\n".encode())
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


def _checked_rootfs(rootfs: Path | None) -> Path:
    """The guest rootfs directory (default ``guest-images/rootfs``); it must have /init."""
    rootfs = Path(rootfs) if rootfs is not None else default_rootfs_dir()
    if not rootfs.is_dir():
        raise UsageError(f"guest rootfs {rootfs} is not a directory")
    init = rootfs / "init"
    if not (init.is_file() and os.access(init, os.X_OK)):
        raise UsageError(f"guest rootfs {rootfs} has no executable init: the kernel runs /init")
    return rootfs


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
    rootfs = _checked_rootfs(rootfs)
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
    key = _image_key(profiles, chosen, flavour, custom, locked, packages, rootfs)
    return BuildPlan(profiles, chosen, CUSTOM_FLAVOUR if custom else flavour, locked,
                     MappingProxyType(packages), custom, rootfs, key, lock_state,
                     MappingProxyType(drift))


def _image_key(profiles: ProfileSet, chosen: Profile, flavour: str, custom: CustomKernel | None,
               locked: LockedFlavour, packages: Mapping[str, LockedPackage],
               rootfs: Path) -> str:
    """The hash of every input that shapes the image (the cache directory's name)."""
    ingredients: dict[str, Any] = {
        "builder": _source_digest(),
        "profile": chosen.name,
        "flavour": CUSTOM_FLAVOUR if custom else flavour,
        "binaries": [[b.guest_path, b.package, b.file_name] for b in profiles.binaries],
        "module_groups": [[g.name, list(g.modules), g.required] for g in profiles.module_groups],
        "capture": None if profiles.capture is None else [list(profiles.capture.binaries),
                                                           list(profiles.capture.module_groups)],
        "packages": {n: p.sha256 for n, p in sorted(packages.items())},
        "kernel_release": None if custom else locked.kernel.release,
        "rootfs": tree_digest(rootfs),
    }
    if custom:
        ingredients["custom"] = {
            "bzimage": sha256_file(custom.bzimage),
            "modules": tree_digest(custom.modules, contents=False) if custom.modules else None,
            "config": sha256_file(custom.config) if custom.config else None,
        }
    return hashlib.sha256(json.dumps(ingredients, sort_keys=True).encode()).hexdigest()
