"""Assembling the initramfs: the guest userspace archive and the first kernel's /boot archive.

``userspace_archives`` unpacks the profile's packages, takes the binaries profiles.toml names
and their shared-library closure (elfdeps.py), the kernel's module groups, a few /etc files,
a manifest and the guest rootfs, and writes them as one cpio (cpio.py); then the capture
kernel's smaller one, with what profiles.toml's ``[capture]`` keeps. ``boot_archive`` is
the second cpio the first kernel gets on top: the bzImage and the capture initrd it loads
with ``kexec -p``.

The layout (userspace.cpio; the first kernel's initrd adds /boot)::

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

Both initrds stay uncompressed: under TCG the kernel's decompressor runs emulated, while a
plain cpio is little more than a memcpy. Measured with the trixie cloud image (31 MiB initrd,
3 boots each, guest uptime when /init starts, a busy 2-core host): plain 2.7-4.6 s, lz4
(21 MiB) 3.1-5.0 s, zstd -19 (17 MiB) 3.4-8.7 s, xz (crc32) 4.4-6.0 s, gzip 7.5-8.0 s.
Only the capture kernel's copy inside /boot is compressed (``capture_initrd``).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from ..errors import ImageBuildError
from . import cpio
from .apt import depends_names
from .debs import extract_deb, read_control
from .elfdeps import LibraryClosure, PackageFile, PackageFiles, library_closure
from .kconfig import has_crash_hotplug
from .kernel import LoadedKernel
from .kmod import ResolvedGroup, uncompressed_path
from .plan import BUILDER_VERSION, BuildPlan

GUEST_LIB_DIR = "lib/x86_64-linux-gnu"
MANIFEST_PATH = "etc/harness/image.json"
MODULE_LIST_DIR = "etc/harness/modules"

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

#: (guest path, package file) of each binary profiles.toml asks for.
Binaries = list[tuple[str, PackageFile]]


@dataclass(frozen=True)
class UserspaceArchive:
    """userspace.cpio, and the module paths each group file in it lists."""

    data: bytes
    #: group -> absolute guest paths of its modules, dependencies first (empty: none to load).
    module_lists: Mapping[str, tuple[str, ...]]


def userspace_archives(plan: BuildPlan, kernel: LoadedKernel, groups: Sequence[ResolvedGroup],
                       debs: Mapping[str, Path], staging: Path,
                       ) -> tuple[UserspaceArchive, UserspaceArchive]:
    """The first kernel's userspace and the capture kernel's initrd for ``plan``.

    The capture kernel's holds only what profiles.toml's ``[capture]`` names (busybox,
    makedumpfile and their libraries; the dump disk's and pstore's modules): purgatory
    hashes every byte of it and the capture kernel unpacks it, both between the panic and
    the capture.  Trixie: 9.7 MiB -> 6.8 MiB.
    """
    binaries, closure_of = _unpack_programs(plan, debs, staging)
    full = _archive(plan, kernel, groups, binaries, closure_of(binaries))
    spec = plan.profiles.capture
    if spec is None:
        return full, full
    kept = [(path, found) for path, found in binaries if path in spec.binaries]
    kept_groups = [g for g in groups if g.name in spec.module_groups]
    return full, _archive(plan, kernel, kept_groups, kept, closure_of(kept))


def _archive(plan: BuildPlan, kernel: LoadedKernel, groups: Sequence[ResolvedGroup],
             binaries: Binaries, closure: LibraryClosure) -> UserspaceArchive:
    """One userspace cpio: these binaries and libraries, these module groups."""
    entries: list[cpio.Entry] = [cpio.Directory(p, m) for p, m in _SKELETON.items()]
    entries.append(cpio.console_node())
    entries += _program_entries(binaries, closure)
    module_entries, module_lists = _module_entries(kernel, groups)
    entries += module_entries
    for group in groups:
        paths_text = "".join(p + "\n" for p in module_lists.get(group.name, ()))
        entries.append(cpio.RegularFile(f"{MODULE_LIST_DIR}/{group.name}", paths_text.encode()))
    for path, text in _ETC_FILES.items():
        entries.append(cpio.RegularFile(path, text.encode()))
    entries.append(_manifest(plan, kernel, groups, module_lists, binaries, closure))
    # The guest scripts go last: on a clash the rootfs wins over generated files.
    entries += _rootfs_entries(plan.rootfs)
    return UserspaceArchive(cpio.newc_bytes(entries), module_lists)


def boot_archive(bzimage: bytes, userspace: bytes, config: Mapping[str, str] | None) -> bytes:
    """The cpio the first kernel's initrd adds: /boot/vmlinuz and /boot/capture.cpio
    (``userspace``: the capture kernel's userspace archive)."""
    return cpio.newc_bytes([cpio.RegularFile("boot/vmlinuz", bzimage),
                            cpio.RegularFile("boot/capture.cpio",
                                             capture_initrd(userspace, config))])


#: How the capture initrd is compressed, best first: (config symbol, tool and arguments).
#: Measured under TCG (trixie 6.12, 7.1 MiB capture initrd, 5 alternating crashes each,
#: 2026-12): panic to capture userspace 2.89 s with lz4 -12 (3.7 MiB), 2.96 s with zstd -12
#: (2.7 MiB), 2.89 s plain; lz4 unpacks 75 ms faster than zstd in the capture kernel and
#: costs purgatory ~10 ms more hashing, while plain makes every kdump load in the first
#: kernel 60 ms slower (kexec_file_load reads and hashes 4 MiB more).  The kernel reads
#: only lz4's legacy frame format (-l).
CAPTURE_COMPRESSORS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("CONFIG_RD_LZ4", ("lz4", "-l", "-12", "-q", "-c")),
    ("CONFIG_RD_ZSTD", ("zstd", "-12", "-q", "-c")),
)


def capture_initrd(userspace: bytes, config: Mapping[str, str] | None) -> bytes:
    """The capture kernel's initrd as the first kernel keeps it: compressed with the first
    of ``CAPTURE_COMPRESSORS`` the kernel can unpack and the host has, else plain.

    Only this inner copy is compressed (the first kernel's own initrd stays plain, see the
    module docstring): it is what kexec_file_load reads, hashes and places in the crashkernel
    reservation at every kdump load.
    """
    for symbol, command in CAPTURE_COMPRESSORS:
        if not config or config.get(symbol) != "y" or shutil.which(command[0]) is None:
            continue
        done = subprocess.run(list(command), input=userspace, capture_output=True, check=False)
        if done.returncode != 0:
            raise ImageBuildError(f"{command[0]} failed compressing the capture initrd: "
                                  f"{done.stderr.decode(errors='replace').strip()}")
        return done.stdout
    return userspace


def _is_executable_or_library(path: str) -> bool:
    """Package members the initramfs can use: skips docs, locales, gconv modules etc.

    (libc6 alone has hundreds of files we never need; each costs a file creation.)
    """
    if path.startswith(("usr/bin/", "usr/sbin/", "usr/lib64/")):
        return True
    directory, _, name = path.rpartition("/")
    return directory in ("usr/lib", "usr/lib/x86_64-linux-gnu") and ".so" in name


def _unpack_programs(plan: BuildPlan, debs: Mapping[str, Path], staging: Path,
                     ) -> tuple[Binaries, Callable[[Binaries], LibraryClosure]]:
    """Unpack the userspace packages, find the binaries; and how to resolve the library
    closure of some of them."""
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

    def closure_of(chosen: Binaries) -> LibraryClosure:
        return library_closure(chosen, files, profile=plan.profile.name,
                               depends=declared_depends)

    return binaries, closure_of


def _program_entries(binaries: Binaries, closure: LibraryClosure) -> list[cpio.Entry]:
    """The binaries, every library they need and the dynamic loader, where they look."""
    entries: list[cpio.Entry] = []
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
    return entries


def _module_entries(kernel: LoadedKernel, groups: Sequence[ResolvedGroup],
                    ) -> tuple[list[cpio.Entry], dict[str, tuple[str, ...]]]:
    """The decompressed modules each group loads, and their guest paths per group."""
    entries: list[cpio.Entry] = []
    module_lists: dict[str, tuple[str, ...]] = {}
    if kernel.modules is None:
        return entries, module_lists
    tree = kernel.modules
    for group in groups:
        paths = []
        for name in group.load_order:
            guest = f"/lib/modules/{kernel.release}/{uncompressed_path(tree.paths[name])}"
            paths.append(guest)
            entries.append(cpio.RegularFile(guest, tree.elf_bytes(name), 0o644))
        module_lists[group.name] = tuple(paths)
    return entries, module_lists


def _manifest(plan: BuildPlan, kernel: LoadedKernel, groups: Sequence[ResolvedGroup],
              module_lists: Mapping[str, tuple[str, ...]], binaries: Binaries,
              closure: LibraryClosure) -> cpio.RegularFile:
    """/etc/harness/image.json: what the guest was built from, for scripts in the guest."""
    manifest = {
        "profile": plan.profile.name, "flavour": plan.flavour,
        "kernel_release": kernel.release,
        "crash_hotplug": has_crash_hotplug(kernel.config),
        "packages": {n: p.version for n, p in sorted(plan.packages.items())},
        "binaries": {g: f.package for g, f in binaries},
        "libraries": {s: lib.package for s, lib in sorted(closure.libraries.items())},
        "module_groups": {g.name: {"load": list(module_lists.get(g.name, ())),
                                   "builtin": list(g.builtin),
                                   "unavailable": list(g.unavailable)} for g in groups},
        "builder_version": BUILDER_VERSION,
    }
    return cpio.RegularFile(MANIFEST_PATH,
                            (json.dumps(manifest, indent=2, sort_keys=True) + "\n").encode())


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


def _mode(path: Path) -> int:
    return 0o755 if path.stat().st_mode & 0o111 else 0o644
