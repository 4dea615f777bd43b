"""Kernel modules: .modinfo, dependency order, built-in detection, decompression.

Debian's kernel packages do not ship a usable modules.dep (depmod runs at install time), so
dependencies come from each module's ``.modinfo`` section: modpost records the modules whose
symbols it uses as ``depends=a,b``. ``modules.builtin`` (shipped in the package) lists what
is built in; those need no loading and are skipped.

The resolver itself is pure: it takes a mapping of available modules and a callable for
their dependencies, so it is tested without any ELF file.
"""

from __future__ import annotations

import gzip
import io
import lzma
import shutil
import subprocess
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from ..errors import HostError, ImageBuildError

#: Suffixes ``make modules_install`` and Debian use, longest first.
MODULE_SUFFIXES = (".ko.xz", ".ko.zst", ".ko.gz", ".ko")


def module_name(path: str) -> str:
    """The kernel's name for a module file: basename without suffix, ``-`` -> ``_``."""
    base = path.rsplit("/", 1)[-1]
    for suffix in MODULE_SUFFIXES:
        if base.endswith(suffix):
            base = base[: -len(suffix)]
            break
    return base.replace("-", "_")


def is_module_file(path: str) -> bool:
    return path.endswith(MODULE_SUFFIXES)


def uncompressed_path(path: str) -> str:
    """``kernel/x/y.ko.xz`` -> ``kernel/x/y.ko`` (busybox insmod wants plain ELF files)."""
    for suffix in MODULE_SUFFIXES:
        if path.endswith(suffix):
            return path[: -len(suffix)] + ".ko"
    raise ValueError(f"not a module file: {path}")


def decompress_module(name: str, data: bytes) -> bytes:
    """The ELF bytes of a module file called ``name``, whatever its compression."""
    if name.endswith(".ko.xz"):
        return lzma.decompress(data)
    if name.endswith(".ko.gz"):
        return gzip.decompress(data)
    if name.endswith(".ko.zst"):
        if shutil.which("zstd") is None:
            raise HostError(f"{name} is zstd-compressed: install the zstd tool")
        return subprocess.run(["zstd", "-dcq"], input=data, capture_output=True,
                              check=True).stdout
    return data


def parse_modinfo(section: bytes) -> dict[str, list[str]]:
    """``key=value`` NUL-separated strings -> key -> values (keys may repeat, e.g. alias)."""
    info: dict[str, list[str]] = {}
    for raw in section.split(b"\0"):
        if b"=" not in raw:
            continue
        key, _, value = raw.decode(errors="replace").partition("=")
        info.setdefault(key, []).append(value)
    return info


def read_modinfo(elf_bytes: bytes, where: str = "module") -> dict[str, list[str]]:
    """The parsed ``.modinfo`` section of a module's ELF bytes."""
    # Imported here, as in elfdeps: only an image build reads modules.
    from elftools.common.exceptions import ELFError
    from elftools.elf.elffile import ELFFile

    try:
        elf = ELFFile(io.BytesIO(elf_bytes))
        section = elf.get_section_by_name(".modinfo")
    except ELFError as exc:
        raise ImageBuildError(f"{where}: not an ELF module ({exc})") from exc
    if section is None:
        raise ImageBuildError(f"{where}: no .modinfo section")
    return parse_modinfo(section.data())


def depends_from_modinfo(info: Mapping[str, Sequence[str]]) -> tuple[str, ...]:
    names: list[str] = []
    for value in info.get("depends", ()):
        names += [n.replace("-", "_") for n in value.split(",") if n]
    return tuple(names)


def parse_modules_builtin(text: str) -> frozenset[str]:
    """Module names from ``modules.builtin`` (one ``kernel/...ko`` path per line)."""
    return frozenset(module_name(line.strip()) for line in text.splitlines() if line.strip())


@dataclass(frozen=True)
class ResolvedGroup:
    """One module group after resolution."""

    name: str
    #: Module names to insmod, dependencies first.
    load_order: tuple[str, ...]
    #: Requested or needed modules that are built into the kernel.
    builtin: tuple[str, ...]
    #: Requested modules the kernel has neither built in nor as a module.
    unavailable: tuple[str, ...]


def resolve_group(name: str, roots: Sequence[str], *, available: Iterable[str],
                  builtin: Iterable[str], depends: Callable[[str], Sequence[str]],
                  required: bool = True) -> ResolvedGroup:
    """Order ``roots`` and their dependencies so that each module follows its dependencies.

    ``available`` are the module names present as files, ``builtin`` those compiled in,
    ``depends(name)`` returns a module's ``depends=`` list. Built-in modules are skipped.
    A root that is neither is an error when ``required`` and otherwise recorded as
    unavailable; a missing *dependency* of a present module is always an error (the module
    could not load). The order is deterministic: depth-first, dependencies in the order
    modinfo lists them.
    """
    available_set = set(available)
    builtin_set = set(builtin)
    order: list[str] = []
    builtin_seen: list[str] = []
    unavailable: list[str] = []
    state: dict[str, str] = {}  # name -> "visiting" | "done"

    def visit(module: str, chain: tuple[str, ...]) -> None:
        if state.get(module) == "done":
            return
        if state.get(module) == "visiting":
            raise ImageBuildError(f"module dependency cycle: {' -> '.join(chain + (module,))}")
        if module in builtin_set:
            builtin_seen.append(module)
            state[module] = "done"
            return
        if module not in available_set:
            raise ImageBuildError(
                f"module {chain[-1]} depends on {module}, which is neither built in nor in "
                f"the modules tree (group {name}: {' -> '.join(chain + (module,))})")
        state[module] = "visiting"
        for dep in depends(module):
            visit(dep, chain + (module,))
        state[module] = "done"
        order.append(module)

    for root in roots:
        if root not in builtin_set and root not in available_set:
            if required:
                raise ImageBuildError(
                    f"module group {name}: {root} is neither built into the kernel nor in its "
                    "modules tree")
            unavailable.append(root)
            continue
        visit(root, ())
    return ResolvedGroup(name, tuple(order), tuple(dict.fromkeys(builtin_seen)),
                         tuple(unavailable))


class ModuleTree:
    """The modules of one kernel release: file names, their bytes, and what is built in.

    ``files`` are paths relative to ``lib/modules/<release>``; ``read(path)`` returns a file's
    (possibly compressed) bytes. Modules are decompressed and parsed only when a group needs
    them.
    """

    def __init__(self, files: Iterable[str], read: Callable[[str], bytes],
                 builtin_list: str | None) -> None:
        self.paths: dict[str, str] = {}  # module name -> path relative to the release dir
        for rel in sorted(files):
            if is_module_file(rel):
                self.paths.setdefault(module_name(rel), rel)
        self._read = read
        self.has_builtin_list = builtin_list is not None
        self.builtin = parse_modules_builtin(builtin_list) if builtin_list else frozenset()
        self._elf: dict[str, bytes] = {}
        self._depends: dict[str, tuple[str, ...]] = {}

    @classmethod
    def from_directory(cls, directory: Path) -> ModuleTree:
        """A ``lib/modules/<release>`` directory as ``make modules_install`` leaves it."""
        files = [str(p.relative_to(directory)) for p in directory.rglob("*")
                 if is_module_file(p.name) and p.is_file()]
        builtin = directory / "modules.builtin"
        return cls(files, lambda rel: (directory / rel).read_bytes(),
                   builtin.read_text() if builtin.is_file() else None)

    def elf_bytes(self, name: str) -> bytes:
        if name not in self._elf:
            rel = self.paths[name]
            self._elf[name] = decompress_module(rel, self._read(rel))
        return self._elf[name]

    def depends(self, name: str) -> tuple[str, ...]:
        if name not in self._depends:
            info = read_modinfo(self.elf_bytes(name), self.paths[name])
            self._depends[name] = depends_from_modinfo(info)
        return self._depends[name]
