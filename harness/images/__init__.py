"""Guest images: a Debian kernel (or your own) and a busybox initramfs with kdump tools.

Public API::

    build_image(profile, *, flavour="cloud", kernel=None, modules_dir=None, config=None,
                mirror=None, rootfs=None, cache_dir=None, rebuild=False) -> GuestImage
    list_images(cache_dir=None) -> list[GuestImage]
    image_path(profile, *, flavour=..., kernel=..., ...) -> Path
    check_kernel_config(config) -> list[str]       problems that rule a kernel out
    load_profiles() -> ProfileSet                  guest-images/profiles.toml

The modules, in the order a build goes through them::

    profiles.py       guest-images/profiles.toml: profiles, binaries, module groups
    lockfile.py       guest-images/packages.lock.json: the exact .debs (and sha256_file)
    plan.py           a request -> BuildPlan: validated inputs and the image's cache key
    builder.py        build_image: cache lookup, per-image lock, the build steps in order
    packages.py       the locked .debs, from the cache or downloaded; re-pinning the lock
    apt.py            apt-get in a private state directory; the host's Debian mirror
    lock_fallback.py  the archive dropped a pinned version: lock policy, fallback plan
    debs.py           unpacking .debs without dpkg or root
    kernel.py         Debian's kernel or your own: read, config checked, module groups
    bzimage.py        the release string in a bzImage's setup header
    kconfig.py        .config parsing and what the harness needs from it
    kmod.py           module dependencies (.modinfo), load order, decompression
    initramfs.py      the userspace cpio (its layout in the docstring), the capture
                      kernel's smaller one, the /boot cpio
    elfdeps.py        the shared-library closure of the guest binaries
    cpio.py           a deterministic newc writer (and reader)
    pvh.py            the uncompressed vmlinux QEMU boots through its PVH entry
    image.py          GuestImage: what a built image directory holds, its image.json
    cached_images.py  images in the cache: path, list, what is current, prune
    cache.py          the on-disk cache: .debs, images, apt state, locks
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..lazy import lazy_exports
from .profiles import FLAVOURS, Profile, ProfileSet, load_profiles

if TYPE_CHECKING:
    from .builder import build_image
    from .cached_images import image_path, list_images
    from .image import CUSTOM_FLAVOUR, GuestImage
    from .kconfig import check_kernel_config, describe_kernel_config, has_crash_hotplug
    from .lockfile import lock_file_path
    from .plan import plan_build

#: Names loaded on first use: the builder pulls in apt, cpio and ELF tooling, which the
#: command line's parser and the guest machinery do not need (PEP 562).
_LAZY = {
    "CUSTOM_FLAVOUR": "image", "GuestImage": "image", "build_image": "builder",
    "image_path": "cached_images", "list_images": "cached_images",
    "lock_file_path": "lockfile", "plan_build": "plan", "check_kernel_config": "kconfig",
    "describe_kernel_config": "kconfig", "has_crash_hotplug": "kconfig",
}


__getattr__ = lazy_exports(__name__, _LAZY)


__all__ = [
    "CUSTOM_FLAVOUR",
    "FLAVOURS",
    "GuestImage",
    "Profile",
    "ProfileSet",
    "build_image",
    "check_kernel_config",
    "describe_kernel_config",
    "has_crash_hotplug",
    "image_path",
    "list_images",
    "load_profiles",
    "lock_file_path",
    "plan_build",
]
