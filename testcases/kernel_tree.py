"""A kernel developer's build tree, with Debian's own kernel standing in for their build."""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness.images.cache import Cache
from harness.images.debs import extract_deb


@dataclass(frozen=True)
class BuildTree:
    bzimage: Path        # <tree>/arch/x86/boot/bzImage, with <tree>/.config beside
    modules: Path        # the INSTALL_MOD_PATH of `make modules_install`
    release: str


def debian_kernel_as_build_tree(debian: Any, where: Path) -> BuildTree:
    """Lay out ``debian``'s (a GuestImage's) kernel as ``make`` and ``make
    modules_install INSTALL_MOD_PATH=...`` would: the harness finds ``.config`` by itself."""
    release = debian.kernel_release
    unpacked = where / "deb"
    for name, sha256 in debian.debs.items():
        if name.startswith("linux-"):
            extract_deb(Cache().deb_path(sha256), unpacked,
                        select=lambda path: f"/modules/{release}/" in path)
    (modules,) = unpacked.glob(f"*/lib/modules/{release}")
    install = where / "mods" / "lib" / "modules"
    install.mkdir(parents=True)
    modules.rename(install / release)
    tree = where / "linux"
    bzimage = tree / "arch" / "x86" / "boot" / "bzImage"
    bzimage.parent.mkdir(parents=True)
    shutil.copyfile(debian.kernel_path, bzimage)
    shutil.copyfile(debian.directory / "config", tree / ".config")
    return BuildTree(bzimage, where / "mods", release)
