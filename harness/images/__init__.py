"""Guest images: a Debian kernel (or your own) and a busybox initramfs with kdump tools.

Public API::

    build_image(profile, *, flavour="cloud", kernel=None, modules_dir=None, config=None,
                mirror=None, rootfs=None, cache_dir=None, rebuild=False) -> GuestImage
    list_images(cache_dir=None) -> list[GuestImage]
    image_path(profile, *, flavour=..., kernel=..., ...) -> Path
    check_kernel_config(config) -> list[str]       problems that rule a kernel out
    load_profiles() -> ProfileSet                  guest-images/profiles.toml

Initramfs layout (userspace.cpio; the first kernel's initrd adds /boot)::

    /init, /harness/...                 guest-images/rootfs (copied last: it wins clashes)
    /bin/busybox, /bin/sh -> busybox    static busybox; /init runs `busybox --install -s`
    /sbin/kexec  /usr/bin/makedumpfile  /usr/sbin/dropbear  /usr/bin/dropbearkey
    /lib/x86_64-linux-gnu/<soname>      every DT_NEEDED library, named by soname
    /lib64/ld-linux-x86-64.so.2 -> /lib/x86_64-linux-gnu/ld-linux-x86-64.so.2
    /usr/lib/x86_64-linux-gnu -> ../../lib/x86_64-linux-gnu
    /lib/modules/<release>/kernel/...ko decompressed modules of all groups
    /etc/harness/modules/<group>        one absolute .ko path per line, dependencies first;
                                        empty when the group is built in or unavailable
    /etc/harness/image.json             manifest: profile, flavour, release, packages, groups
    /etc/passwd /etc/group /etc/shells /etc/nsswitch.conf /etc/hosts
    /dev/console (char 5:1)             the kernel opens it for init before devtmpfs exists
    /boot/vmlinuz, /boot/capture.cpio   initrd.cpio only: the kernel and initrd to kexec -p
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from .profiles import FLAVOURS, Profile, ProfileSet, load_profiles

if TYPE_CHECKING:
    from .builder import (
        CUSTOM_FLAVOUR,
        GuestImage,
        build_image,
        image_path,
        list_images,
        lock_file_path,
        plan_build,
    )
    from .kconfig import check_kernel_config, describe_kernel_config, has_crash_hotplug

#: Names loaded on first use: the builder pulls in apt, cpio and ELF tooling, which the
#: command line's parser and the guest machinery do not need (PEP 562).
_LAZY = {
    "CUSTOM_FLAVOUR": "builder", "GuestImage": "builder", "build_image": "builder",
    "image_path": "builder", "list_images": "builder", "lock_file_path": "builder",
    "plan_build": "builder", "check_kernel_config": "kconfig",
    "describe_kernel_config": "kconfig", "has_crash_hotplug": "kconfig",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value


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
