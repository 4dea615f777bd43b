"""The kernel an image is built with: Debian's from the locked packages, or your own.

``custom_kernel`` validates your bzImage, modules directory and config when a build is
planned (it finds the config of a kernel tree by itself). At build time ``read_debian_kernel``
or ``read_custom_kernel`` reads the kernel into a ``LoadedKernel``, and ``check_kernel``
refuses a config without kdump or hot-plug and resolves the profile's module groups (which
modules to load, in what order, and which are built in). The pieces it reads with live in
bzimage.py (release string), kconfig.py (the config checks) and kmod.py (module order).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from ..errors import ImageBuildError, KernelUnsuitable, UsageError
from .bzimage import kernel_release, kernel_release_of
from .debs import SpillFile, deb_members
from .kconfig import parse_kernel_config, raise_if_unsuitable
from .kmod import ModuleTree, ResolvedGroup, is_module_file, resolve_group
from .lockfile import LockedKernel
from .profiles import ModuleGroupSpec

log = logging.getLogger("harness.images")


# -- your own kernel, as the request names it --------------------------------------------


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


def _guess_config(kernel: Path, release_dir: Path | None) -> Path | None:
    """The .config of a kernel developer's tree, when the bzImage or modules lead to one."""
    # arch/x86/boot/bzImage sits three levels below .config, and modules_install leaves
    # lib/modules/<release>/build pointing at the tree.
    guesses = []
    if kernel.resolve().parent.parts[-3:] == ("arch", "x86", "boot"):
        guesses.append(kernel.resolve().parents[3] / ".config")
    if release_dir is not None:
        guesses.append(release_dir / "build" / ".config")
    return next((guess for guess in guesses if guess.is_file()), None)


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
    if config is not None:
        config = Path(config)
        if not config.is_file():
            raise UsageError(f"--config {config}: no such file")
    else:
        config = _guess_config(kernel, release_dir)
    source = str(config) if config is not None else None
    return CustomKernel(kernel, release, release_dir, config, source)


# -- the kernel read for a build -----------------------------------------------------------


@dataclass
class LoadedKernel:
    """A kernel read for a build: the bzImage bytes, its modules and its config."""

    bzimage: bytes
    release: str
    modules: ModuleTree | None
    config: dict[str, str]
    config_text: str | None
    config_source: str | None
    #: Holds a Debian kernel's modules until the build ends (``close``).
    spill: SpillFile | None = None

    def close(self) -> None:
        if self.spill is not None:
            self.spill.close()


def read_debian_kernel(locked: LockedKernel, debs: Mapping[str, Path],
                       staging: Path) -> LoadedKernel:
    """Read the locked kernel packages (vmlinuz, config, modules) in one pass and check them.

    Up to 6.12 Debian ships /boot/vmlinuz-<release> and /boot/config-<release>; the 7.x
    split packages put vmlinuz and config in /usr/lib/modules/<release>/ instead.
    """
    release = locked.release
    modules_root = f"usr/lib/modules/{release}/"
    wanted_small = {f"boot/vmlinuz-{release}", f"boot/config-{release}",
                    f"{modules_root}vmlinuz", f"{modules_root}config",
                    f"{modules_root}modules.builtin"}
    small: dict[str, bytes] = {}
    staging.mkdir(parents=True, exist_ok=True)
    spill = SpillFile(staging / "modules.spill")
    for name in locked.packages:
        for member in deb_members(debs[name]):
            if not member.info.isfile():
                continue
            if member.path in wanted_small:
                small[member.path] = member.read()
            elif member.path.startswith(modules_root) and is_module_file(member.path):
                spill.add(member.path[len(modules_root):], member.read())

    packages = ", ".join(locked.packages)
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
    return LoadedKernel(bzimage, release, tree, parse_kernel_config(text), text, "package",
                        spill)


def read_custom_kernel(custom: CustomKernel) -> LoadedKernel:
    text = custom.config.read_text(errors="replace") if custom.config else None
    return LoadedKernel(custom.bzimage.read_bytes(), custom.release,
                        ModuleTree.from_directory(custom.modules) if custom.modules else None,
                        parse_kernel_config(text) if text else {}, text, custom.config_source)


# -- is it fit for the harness, and which modules does the guest load ----------------------


def check_kernel(kernel: LoadedKernel, groups: Sequence[ModuleGroupSpec],
                 what: str) -> list[ResolvedGroup]:
    """Refuse an unsuitable kernel config; resolve the module groups for this kernel."""
    if kernel.config:
        raise_if_unsuitable(kernel.config, f"{what} ({kernel.release})")
    else:
        log.warning("%s: no kernel config found: cannot check for kdump/hot-plug support "
                    "before booting (pass --config)", what)
    return _resolve_groups(groups, kernel, what)


def _resolve_groups(groups: Sequence[ModuleGroupSpec], kernel: LoadedKernel,
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

