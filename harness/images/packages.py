"""Getting the locked .debs (cache first) and refreshing the lock from the archive."""

from __future__ import annotations

import logging
import re
import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import MappingProxyType

from ..errors import ImageBuildError
from .apt import AptCommandError, AptState, depends_names, record_is_pinnable, resolve_mirror
from .cache import Cache
from .lockfile import (
    LockedFlavour,
    LockedKernel,
    LockedPackage,
    LockedProfile,
    LockFile,
    sha256_file,
    verify_package_file,
)
from .profiles import Profile

log = logging.getLogger("harness.images")


def cached_debs(cache: Cache, packages: Mapping[str, LockedPackage]) -> dict[str, Path]:
    """The packages already in the cache with the right SHA256 (others are left out)."""
    found = {}
    for name, package in packages.items():
        path = cache.deb_path(package.sha256)
        if path.is_file() and sha256_file(path) == package.sha256:
            found[name] = path
    return found


def fetch_debs(cache: Cache, profile: Profile, packages: Mapping[str, LockedPackage],
               mirror: str | None) -> dict[str, Path]:
    """Every locked package as a verified file in the cache, downloading what is missing.

    A warm cache touches no network and needs no mirror. Downloads go through
    ``apt-get download name=version`` in the profile's private apt state; when apt does not
    know the version (stale lists) the lists are refreshed once before giving up.
    """
    paths = cached_debs(cache, packages)
    missing = [p for n, p in sorted(packages.items()) if n not in paths]
    if not missing:
        return paths
    state = AptState(cache.apt_dir(profile.name), resolve_mirror(mirror), profile.suites)
    with state.locked():
        state.ensure_updated()
        scratch = cache.scratch_dir("download")
        try:
            refreshed = False
            for package in missing:
                log.info("downloading %s %s", package.name, package.version)
                try:
                    downloaded = state.download(package.name, package.version, scratch)
                except AptCommandError as first:
                    if refreshed:
                        raise _gone(package, profile, state, first) from first
                    state.update()
                    refreshed = True
                    try:
                        downloaded = state.download(package.name, package.version, scratch)
                    except AptCommandError as exc:
                        raise _gone(package, profile, state, exc) from exc
                verify_package_file(package, downloaded)
                paths[package.name] = cache.store_deb(downloaded, package.sha256)
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
    return paths


class PinnedVersionGone(ImageBuildError):
    """The archive no longer carries a version the lock pins.

    Debian keeps one version of each package per suite: a stable point release or a sid
    upload drops the pinned one. The builder may then fall back to the current version
    (see lock_fallback.py); ``package`` names the first one found missing.
    """

    def __init__(self, message: str, *, package: LockedPackage, details: str | None = None
                 ) -> None:
        super().__init__(message, details=details)
        self.package = package


def _gone(package: LockedPackage, profile: Profile, state: AptState,
          exc: AptCommandError) -> PinnedVersionGone:
    return PinnedVersionGone(
        f"{package.name} {package.version} (pinned in the lock) cannot be downloaded from "
        f"{' '.join(profile.suites)} at {state.mirror}: the archive has dropped that "
        f"version; run `kdump-harness images update --profile {profile.name}`",
        package=package, details=exc.output)


_LINUX_IMAGE = re.compile(r"^linux-image-(?P<release>\d+\.\d+.*)$")


def _kernel_packages(state: AptState, metapackage: str) -> tuple[LockedKernel, list[str]]:
    """Follow the flavour metapackage to the versioned kernel and the packages carrying it.

    linux-image-cloud-amd64 depends on linux-image-<release>; up to 6.12 that one package
    holds vmlinuz, config and modules. Debian's 7.x packaging splits it: linux-image-<release>
    is empty and depends on linux-base-, linux-binary- and linux-modules-<release>. Taking
    every dependency whose name ends in "-<release>" covers both.
    """
    (meta,) = state.candidates([metapackage]).values()
    images = [n for n in depends_names(meta.get("Depends", "")) if _LINUX_IMAGE.match(n)]
    if len(images) != 1:
        raise ImageBuildError(f"{metapackage} {meta['Version']}: expected one linux-image-* "
                              f"dependency, found {images or 'none'}")
    match = _LINUX_IMAGE.match(images[0])
    assert match is not None
    release = match["release"]
    wanted = [images[0]]
    queue = [images[0]]
    while queue:
        record = state.candidates([queue.pop(0)])
        for record_fields in record.values():
            for dep in depends_names(record_fields.get("Depends", "")):
                if dep.endswith("-" + release) and dep not in wanted:
                    wanted.append(dep)
                    queue.append(dep)
    kernel = LockedKernel(metapackage, meta["Version"], release, tuple(wanted))
    return kernel, wanted


def _pin(record: Mapping[str, str]) -> LockedPackage:
    if not record_is_pinnable(record):
        raise ImageBuildError(f"apt-cache record of {record.get('Package')} lacks "
                              "Version/Filename/SHA256/Size")
    return LockedPackage(name=record["Package"], version=record["Version"],
                         architecture=record.get("Architecture", "amd64"),
                         filename=record["Filename"], sha256=record["SHA256"].lower(),
                         size=int(record["Size"]))


def _resolve_flavour(state: AptState, profile: Profile, flavour: str,
                     userspace: Mapping[str, LockedPackage]) -> LockedFlavour:
    """The current kernel of one flavour plus ``userspace``, pinned from the apt lists."""
    metapackage = profile.kernels[flavour]
    kernel, names = _kernel_packages(state, metapackage)
    if not profile.release_matches_series(kernel.release):
        raise ImageBuildError(
            f"profile {profile.name} expects Linux {profile.kernel_series}.x but "
            f"{metapackage} now resolves to {kernel.release}: update kernel_series in "
            "profiles.toml if that is intended")
    pinned = dict(userspace)
    pinned.update({n: _pin(r) for n, r in state.candidates(names).items()})
    return LockedFlavour(kernel, MappingProxyType(pinned))


def _current_userspace(state: AptState, profile: Profile) -> dict[str, LockedPackage]:
    return {n: _pin(r) for n, r in state.candidates(list(profile.packages)).items()}


def resolve_profile(cache: Cache, profile: Profile, mirror: str | None, *,
                    download: bool = True) -> LockedProfile:
    """Current candidates of the profile's suites, pinned; downloads and checks each .deb.

    The SHA256 comes from the archive's signed Packages index; downloading (the default)
    also warms the cache and proves the file matches.
    """
    state = AptState(cache.apt_dir(profile.name), resolve_mirror(mirror), profile.suites)
    with state.locked():
        log.info("apt-get update for %s (%s) from %s", profile.name, " ".join(profile.suites),
                 state.mirror)
        state.update()
        userspace = _current_userspace(state, profile)
        result = {flavour: _resolve_flavour(state, profile, flavour, userspace)
                  for flavour in profile.kernels}
    if download:
        everything: dict[str, LockedPackage] = {}
        for locked in result.values():
            everything.update(locked.packages)
        fetch_debs(cache, profile, everything, mirror)
    return LockedProfile(profile.suites, MappingProxyType(result))


def resolve_current_flavour(cache: Cache, profile: Profile, flavour: str,
                            mirror: str | None) -> LockedFlavour:
    """What ``images update`` would pin for one flavour now, without touching the lock.

    Used when the lock's versions are gone from the archive. The apt lists were refreshed
    by the failed download just before, so this reads them as they are.
    """
    state = AptState(cache.apt_dir(profile.name), resolve_mirror(mirror), profile.suites)
    with state.locked():
        state.ensure_updated()
        return _resolve_flavour(state, profile, flavour, _current_userspace(state, profile))


def lock_drift(locked: Mapping[str, LockedPackage], used: Mapping[str, LockedPackage]
               ) -> dict[str, tuple[str | None, str | None]]:
    """Package -> (version in the lock, version used) for every package that differs."""
    return {name: (locked[name].version if name in locked else None,
                   used[name].version if name in used else None)
            for name in sorted(set(locked) | set(used))
            if (locked.get(name) is None) != (used.get(name) is None)
            or (name in locked and name in used and locked[name].sha256 != used[name].sha256)}


def update_lock(lock: LockFile, profiles: Sequence[Profile], cache: Cache, mirror: str | None,
                *, download: bool = True) -> LockFile:
    """A new lock with the given profiles re-resolved (others kept as they are)."""
    for profile in profiles:
        lock = lock.with_profile(profile.name, resolve_profile(cache, profile, mirror,
                                                               download=download))
    return lock
