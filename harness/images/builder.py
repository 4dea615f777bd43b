"""Building a guest image: ``build_image``, and the steps one build runs.

A request is planned first (plan.py: the inputs and the cache key), and an image already
in the cache is returned as it is. Otherwise the build holds the key's ``flock``, so that
concurrent builders of one image (pytest-xdist workers) build it once: the first fetches the
locked .debs (packages.py), reads and checks the kernel (kernel.py), assembles the initramfs
(initramfs.py) and writes the image directory (image.py says what it holds) in a scratch
directory it then renames into place; the others find it complete and return it. When the
archive has dropped a pinned version, the build falls back to the suite's current versions
as lock_fallback.py decides.

builder.py once held all of the above; its public names are re-exported here so that
existing imports keep working. New code imports a name from the module that owns it.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import shutil
import stat
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from .cache import Cache
from .cached_images import current_image_dirs, image_path, list_images, prune_images
from .image import CUSTOM_FLAVOUR, IMAGE_FILES, Drift, GuestImage, format_drift, is_complete
from .initramfs import (
    GUEST_LIB_DIR,
    MANIFEST_PATH,
    MODULE_LIST_DIR,
    boot_archive,
    capture_initrd,
    userspace_archives,
)
from .kconfig import describe_kernel_config, has_crash_hotplug
from .kernel import (
    CustomKernel,
    LoadedKernel,
    check_kernel,
    custom_kernel,
    read_custom_kernel,
    read_debian_kernel,
)
from .kmod import ResolvedGroup
from .lock_fallback import (
    LOCK_POLICIES,
    lock_policy,
    plan_for_dropped_pin,
    remembered_plan,
)
from .lockfile import lock_file_path
from .packages import PinnedVersionGone, fetch_debs
from .plan import BUILDER_VERSION, BuildPlan, BuildRequest, plan_build, tree_digest
from .pvh import pvh_kernel

# build_image, and the names builder.py held before the split (see the module docstring).
__all__ = [
    "BUILDER_VERSION",
    "CUSTOM_FLAVOUR",
    "GUEST_LIB_DIR",
    "IMAGE_FILES",
    "LOCK_POLICIES",
    "MANIFEST_PATH",
    "MODULE_LIST_DIR",
    "BuildPlan",
    "CustomKernel",
    "Drift",
    "GuestImage",
    "build_image",
    "capture_initrd",
    "current_image_dirs",
    "custom_kernel",
    "format_drift",
    "image_path",
    "list_images",
    "lock_file_path",
    "lock_policy",
    "plan_build",
    "prune_images",
    "tree_digest",
]

log = logging.getLogger("harness.images")


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
    request = BuildRequest(profile, flavour, kernel, modules_dir, config, rootfs)
    plan = request.plan()
    cache = Cache(cache_dir)
    if not rebuild:
        for candidate in (plan, remembered_plan(cache, request, plan, policy)):
            if candidate is not None and is_complete(candidate.image_dir(cache)):
                return _with_drift(GuestImage.load(candidate.image_dir(cache), cached=True),
                                   candidate)
    requested_at = time.time()
    # One lock for the lock file's plan and its fallback: the archive is asked once.
    with cache.lock(plan.key):
        fallback = remembered_plan(cache, request, plan, policy)
        if fallback is not None:
            try:
                return _build_fallback(fallback, cache, mirror, rebuild, requested_at)
            except PinnedVersionGone:
                pass  # the archive moved again: start over from the lock file
        try:
            return _build_locked(plan, cache, mirror, rebuild, requested_at)
        except PinnedVersionGone as gone:
            fallback = plan_for_dropped_pin(gone, cache, request, plan, policy, mirror)
            return _build_fallback(fallback, cache, mirror, rebuild, requested_at)


def _build_fallback(plan: BuildPlan, cache: Cache, mirror: str | None, rebuild: bool,
                    requested_at: float) -> GuestImage:
    """Build a fallback plan (under its own lock too) and mark how it differs."""
    with cache.lock(plan.key):
        return _with_drift(_build_locked(plan, cache, mirror, rebuild, requested_at), plan)


def _with_drift(image: GuestImage, plan: BuildPlan) -> GuestImage:
    return dataclasses.replace(image, lock_drift=plan.drift) if plan.drift else image


def _build_locked(plan: BuildPlan, cache: Cache, mirror: str | None, rebuild: bool,
                  requested_at: float) -> GuestImage:
    """Build ``plan`` into the cache; the caller holds ``cache.lock`` for it."""
    final = plan.image_dir(cache)
    if is_complete(final):
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


def _build(plan: BuildPlan, cache: Cache, mirror: str | None, staging: Path,
           output: Path) -> dict[str, Any]:
    """Build into ``output``; return the image.json record (without timings)."""
    what = (f"kernel {plan.custom.bzimage}" if plan.custom
            else f"{plan.profile.name}/{plan.flavour} kernel")
    kernel: LoadedKernel | None = None
    try:
        if plan.custom:
            # Your own kernel is judged before anything is downloaded.
            kernel = read_custom_kernel(plan.custom)
            groups = check_kernel(kernel, plan.profiles.module_groups, what)
            debs = fetch_debs(cache, plan.profile, plan.packages, mirror)
        else:
            debs = fetch_debs(cache, plan.profile, plan.packages, mirror)
            kernel = read_debian_kernel(plan.locked.kernel, debs, staging)
            groups = check_kernel(kernel, plan.profiles.module_groups, what)
        return _write_image(plan, kernel, groups, debs, staging, output)
    finally:
        if kernel is not None:
            kernel.close()


def _write_image(plan: BuildPlan, kernel: LoadedKernel, groups: Sequence[ResolvedGroup],
                 debs: Mapping[str, Path], staging: Path, output: Path) -> dict[str, Any]:
    """Write the kernel and the initramfs archives into ``output``; return the record."""
    userspace, capture = userspace_archives(plan, kernel, groups, debs, staging)
    boot = boot_archive(kernel.bzimage, capture.data, kernel.config)
    files = {"vmlinuz": kernel.bzimage, "userspace.cpio": userspace.data,
             "capture.cpio": capture.data, "initrd.cpio": userspace.data + boot}
    vmlinux = pvh_kernel(kernel.bzimage)
    if vmlinux is not None:
        files["vmlinux"] = vmlinux
    for name, data in files.items():
        (output / name).write_bytes(data)
        os.chmod(output / name, stat.S_IRUSR | stat.S_IWUSR | stat.S_IRGRP | stat.S_IROTH)
    if kernel.config_text is not None:
        (output / "config").write_text(kernel.config_text)
    sizes = {name: len(data) for name, data in files.items()}
    return _record(plan, kernel, groups, userspace.module_lists, sizes, vmlinux is not None)


def _record(plan: BuildPlan, kernel: LoadedKernel, groups: Sequence[ResolvedGroup],
            module_lists: Mapping[str, tuple[str, ...]], sizes: Mapping[str, int],
            pvh: bool) -> dict[str, Any]:
    """image.json (``GuestImage.load`` reads it), but for the timings ``_build_locked`` adds."""
    return {
        "profile": plan.profile.name, "flavour": plan.flavour,
        "kernel_release": kernel.release, "crash_hotplug": has_crash_hotplug(kernel.config),
        "packages": {n: p.version for n, p in sorted(plan.packages.items())},
        "module_groups": {g.name: list(module_lists.get(g.name, ())) for g in groups},
        "builtin_modules": {g.name: list(g.builtin) for g in groups},
        "unavailable_modules": {g.name: list(g.unavailable) for g in groups},
        "key": plan.key, "config_source": kernel.config_source,
        "config_notes": describe_kernel_config(kernel.config) if kernel.config else [],
        "sizes": dict(sizes),
        "debs": {n: p.sha256 for n, p in sorted(plan.packages.items())},
        "pvh": pvh,
    }
