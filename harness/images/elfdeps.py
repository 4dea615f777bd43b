"""Shared-library closure of the guest binaries, resolved inside the guest packages.

The host's libraries are never consulted: each binary's ``DT_NEEDED`` sonames (and its
``PT_INTERP`` loader) are looked up among the files of the profile's own extracted packages,
recursively. Anything missing is reported with the soname, who needs it and the Debian
package that most likely provides it, so the fix (add it to profiles.toml) is obvious.
"""

from __future__ import annotations

import os
import posixpath
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import ImageBuildError
from .debs import canonical_path

#: Where the x86_64 dynamic loader searches without an ld.so.cache (ld.so --help on Debian),
#: in merged-/usr form.
LIBRARY_DIRS = ("usr/lib/x86_64-linux-gnu", "usr/lib", "usr/lib64")

#: sonames whose Debian package name does not follow the libNAME<N> convention.
KNOWN_PROVIDERS: Mapping[str, str] = {
    "libc.so.6": "libc6",
    "libm.so.6": "libc6",
    "libresolv.so.2": "libc6",
    "ld-linux-x86-64.so.2": "libc6",
    "libz.so.1": "zlib1g",
    "libgcc_s.so.1": "libgcc-s1",
    "libstdc++.so.6": "libstdc++6",
    "libbz2.so.1.0": "libbz2-1.0",
    "libdw.so.1": "libdw1 (libdw1t64 since trixie)",
    "libelf.so.1": "libelf1 (libelf1t64 since trixie)",
}


@dataclass(frozen=True)
class ElfInfo:
    """The dynamic-linking facts of one ELF file."""

    needed: tuple[str, ...]
    interpreter: str | None
    soname: str | None
    static: bool


def read_elf_info(path: Path) -> ElfInfo:
    """DT_NEEDED, DT_SONAME and PT_INTERP of an x86_64 ELF file (pyelftools)."""
    # pyelftools only when an image is built: a command whose image is cached (every run
    # but the first) saves its ~25 ms import.
    from elftools.common.exceptions import ELFError
    from elftools.elf.dynamic import DynamicSection
    from elftools.elf.elffile import ELFFile
    from elftools.elf.segments import InterpSegment

    try:
        with path.open("rb") as f:
            elf = ELFFile(f)
            if elf.get_machine_arch() != "x64" or elf.elfclass != 64:
                raise ImageBuildError(f"{path}: not an x86_64 ELF file "
                                      f"({elf.get_machine_arch()}, {elf.elfclass}-bit)")
            needed: list[str] = []
            soname = None
            interpreter = None
            for segment in elf.iter_segments():
                if isinstance(segment, InterpSegment):
                    interpreter = segment.get_interp_name()
            for section in elf.iter_sections():
                if isinstance(section, DynamicSection):
                    for tag in section.iter_tags():
                        # pyelftools sets the string of these tags as a dynamic attribute.
                        if tag.entry.d_tag == "DT_NEEDED":
                            needed.append(str(vars(tag)["needed"]))
                        elif tag.entry.d_tag == "DT_SONAME":
                            soname = str(vars(tag)["soname"])
            static = interpreter is None and not needed
            return ElfInfo(tuple(needed), interpreter, soname, static)
    except ELFError as exc:
        raise ImageBuildError(f"{path}: not a readable ELF file ({exc})") from exc


@dataclass(frozen=True)
class PackageFile:
    """A file of an extracted package: its package, canonical path and bytes on disk."""

    package: str
    path: str
    disk_path: Path


class PackageFiles:
    """The merged file view of several extracted packages (each under its own root).

    Symlinks are followed inside this view only, after canonicalising to merged-/usr form,
    so ``/lib64/ld-linux-x86-64.so.2 -> /lib/x86_64-linux-gnu/...`` resolves the same way
    for bookworm's and trixie's libc6.
    """

    def __init__(self, roots: Mapping[str, Path]) -> None:
        self.roots = dict(roots)
        self._entries: dict[str, tuple[str, Path]] = {}
        for package, root in sorted(self.roots.items()):
            for dirpath, dirnames, filenames in os.walk(root):
                dirnames.sort()
                for name in sorted(filenames + [d for d in dirnames
                                                if os.path.islink(os.path.join(dirpath, d))]):
                    disk = Path(dirpath) / name
                    rel = canonical_path(str(disk.relative_to(root)))
                    self._entries.setdefault(rel, (package, disk))

    def __contains__(self, path: str) -> bool:
        return canonical_path(path) in self._entries

    def resolve(self, path: str) -> PackageFile | None:
        """Follow symlinks to a regular file; ``None`` if the chain leaves the packages."""
        current = canonical_path(path)
        for _ in range(40):
            entry = self._entries.get(current)
            if entry is None:
                return None
            package, disk = entry
            if not disk.is_symlink():
                return PackageFile(package, current, disk)
            target = os.readlink(disk)
            if target.startswith("/"):
                current = canonical_path(target)
            else:
                current = canonical_path(posixpath.normpath(
                    posixpath.join(posixpath.dirname(current), target)))
        return None

    def find_library(self, soname: str) -> PackageFile | None:
        for directory in LIBRARY_DIRS:
            found = self.resolve(f"{directory}/{soname}")
            if found is not None:
                return found
        return None

    def find_executable(self, package: str, file_name: str) -> PackageFile | None:
        """``file_name`` in one of the package's bin/sbin directories."""
        for directory in ("usr/sbin", "usr/bin"):
            entry = self._entries.get(f"{directory}/{file_name}")
            if entry is not None and entry[0] == package:
                return self.resolve(f"{directory}/{file_name}")
        return None


def likely_packages(soname: str) -> list[str]:
    """Debian package names that usually ship ``soname`` (policy 8.1: libNAME + SOVERSION)."""
    if soname in KNOWN_PROVIDERS:
        return [KNOWN_PROVIDERS[soname]]
    match = re.match(r"^lib(?P<stem>.+?)\.so\.(?P<version>[0-9.]+)$", soname)
    if not match:
        return []
    stem, version = match["stem"].lower(), match["version"]
    if stem.startswith("xen") and version.count(".") == 1:
        return [f"libxenmisc{version}"]  # libxenctrl.so.4.20 etc. share one package
    base = f"lib{stem}-{version}" if stem[-1].isdigit() else f"lib{stem}{version}"
    return [base, base + "t64"]


@dataclass
class LibraryClosure:
    """Which package file provides each soname, and why it is there."""

    libraries: dict[str, PackageFile] = field(default_factory=dict)
    interpreter: PackageFile | None = None
    #: The PT_INTERP paths the binaries ask for (normally just /lib64/ld-linux-x86-64.so.2).
    interpreter_paths: set[str] = field(default_factory=set)
    needed_by: dict[str, list[str]] = field(default_factory=dict)


@dataclass(frozen=True)
class MissingLibrary:
    soname: str
    needed_by: str
    package: str


def _missing_message(missing: Sequence[MissingLibrary],
                     depends: Callable[[str], Sequence[str]], profile: str) -> ImageBuildError:
    lines = []
    for item in missing:
        guesses = likely_packages(posixpath.basename(item.soname))  # PT_INTERP is a path
        declared = [d for d in depends(item.package)
                    if any(d == g or d.startswith(g.split(" ")[0]) for g in guesses)]
        if declared:
            hint = f"probably in {declared[0]} (a dependency of {item.package})"
        elif guesses:
            hint = f"probably in {' or '.join(guesses)}"
        else:
            hint = "no guess at the package"
        lines.append(f"{item.soname} needed by {item.needed_by} ({item.package}): {hint}")
    first = missing[0]
    return ImageBuildError(
        f"{first.soname} (needed by {first.needed_by}) is in none of the {profile} profile's "
        f"packages" + (f" ({len(missing) - 1} more missing)" if len(missing) > 1 else ""),
        details="\n".join(lines) + f"\nAdd the package to profiles.{profile}.packages in "
        "guest-images/profiles.toml, then run "
        f"`kdump-harness images update --profile {profile}`.")


def library_closure(binaries: Sequence[tuple[str, PackageFile]], files: PackageFiles, *,
                    profile: str, depends: Callable[[str], Sequence[str]] | None = None,
                    ) -> LibraryClosure:
    """Resolve the DT_NEEDED closure of ``binaries`` ((guest path, file) pairs) in ``files``.

    Raises ``ImageBuildError`` listing every missing soname with its likely package;
    ``depends(package)`` (the package's declared Depends) sharpens that guess and is only
    called when something is missing.
    """
    closure = LibraryClosure()
    missing: list[MissingLibrary] = []
    queue: list[tuple[str, PackageFile]] = list(binaries)
    seen_missing: set[str] = set()
    while queue:
        who, item = queue.pop(0)
        info = read_elf_info(item.disk_path)
        if info.interpreter:
            closure.interpreter_paths.add(info.interpreter)
        if info.interpreter and closure.interpreter is None:
            found = files.resolve(info.interpreter)
            if found is None:
                missing.append(MissingLibrary(info.interpreter, who, item.package))
            else:
                closure.interpreter = found
        for soname in info.needed:
            closure.needed_by.setdefault(soname, []).append(who)
            if soname in closure.libraries or soname in seen_missing:
                continue
            lib = files.find_library(soname)
            if lib is None:
                seen_missing.add(soname)
                missing.append(MissingLibrary(soname, who, item.package))
                continue
            closure.libraries[soname] = lib
            queue.append((f"{soname} ({lib.path})", lib))
    if missing:
        raise _missing_message(missing, depends or (lambda _package: ()), profile)
    return closure
