"""The images already in the cache: where one is, which exist, and pruning the unused ones.

Every builder, rootfs or lock change gives new image keys and leaves the previous images
behind (~100 MiB each). ``current_image_dirs`` says which images the Debian profiles would
use now (the lock file's plan and, where the archive dropped a pin, its remembered
fallback); ``prune_images`` removes the rest.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path

from ..errors import ImageBuildError, UsageError
from .cache import Cache
from .image import CUSTOM_FLAVOUR, GuestImage, is_complete
from .lock_fallback import remembered_plan
from .plan import BuildRequest
from .profiles import load_profiles

#: A scratch directory untouched this long belongs to a builder that died.
STALE_SCRATCH_SECONDS = 3600


def image_path(profile: str, *, flavour: str = "cloud", kernel: Path | None = None,
               modules_dir: Path | None = None, config: Path | None = None,
               rootfs: Path | None = None, cache_dir: Path | None = None) -> Path:
    """The directory where this image is (or would be) cached; nothing is built."""
    plan = BuildRequest(profile, flavour, kernel, modules_dir, config, rootfs).plan()
    return plan.image_dir(Cache(cache_dir))


def list_images(cache_dir: Path | None = None) -> list[GuestImage]:
    """Every complete image in the cache, oldest build first."""
    images = []
    for directory in sorted(Cache(cache_dir).images_dir().iterdir()):
        if directory.name.startswith(".") or not is_complete(directory):
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
            request = BuildRequest(name, flavour, rootfs=rootfs)
            try:
                plan = request.plan()
            except (ImageBuildError, UsageError):
                continue  # nothing locked for it: nothing of it to keep
            dirs.add(plan.image_dir(cache))
            fallback = remembered_plan(cache, request, plan)
            if fallback is not None:
                dirs.add(fallback.image_dir(cache))
    return dirs


def prune_images(cache_dir: Path | None = None, *, keep_custom: bool = False,
                 dry_run: bool = False, rootfs: Path | None = None) -> list[tuple[Path, int]]:
    """Remove cached images nothing would use any more; return (directory, bytes) of each.

    Kept: the current image of every Debian profile and flavour (``current_image_dirs``)
    and, with ``keep_custom``, images of your own kernels.  Downloaded .debs stay.
    """
    cache = Cache(cache_dir)
    keep = current_image_dirs(cache_dir, rootfs)
    removed: list[tuple[Path, int]] = []
    with cache.lock("prune"):
        for directory in sorted(cache.images_dir().iterdir()):
            if directory in keep or not directory.is_dir():
                continue
            if directory.name.startswith("."):
                # A builder's scratch directory: only stale ones go.
                if time.time() - directory.stat().st_mtime < STALE_SCRATCH_SECONDS:
                    continue
            elif keep_custom and directory.name.split("-")[1:2] == [CUSTOM_FLAVOUR]:
                continue
            size = sum(f.stat().st_size for f in directory.rglob("*") if f.is_file())
            removed.append((directory, size))
            if not dry_run:
                shutil.rmtree(directory, ignore_errors=True)
    return removed
