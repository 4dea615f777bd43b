"""Unpacking .deb files without root and without dpkg.

A .deb is an ``ar`` archive of ``debian-binary``, ``control.tar.*`` and ``data.tar.*``.
Debian compresses data.tar with xz (dpkg's default); Ubuntu and some newer tools use zstd,
which Python 3.11's standard library cannot read, so both go through the ``xz``/``zstd``
command-line tools when present (``xz -T0`` also decompresses multi-block streams, such as
the kernel packages', on several cores while we parse the tar on another).

Extraction writes regular files, directories and symlinks only (no owners, no device nodes,
no setuid bits) under a destination directory, and refuses member paths that would escape it.
Paths are canonicalised to the merged-/usr layout (``bin/x`` -> ``usr/bin/x``) so that packages
from before and after Debian's /usr-merge move can be searched alike.
"""

from __future__ import annotations

import io
import lzma
import os
import shutil
import subprocess
import tarfile
import tempfile
import zlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from ..errors import HostError, ImageBuildError

AR_MAGIC = b"!<arch>\n"
#: Top-level directories that are symlinks into /usr on a merged-/usr system.
MERGED_USR_DIRS = ("bin", "sbin", "lib", "lib64")


@dataclass(frozen=True)
class ArMember:
    name: str
    offset: int
    size: int


def ar_members(blob: bytes) -> dict[str, ArMember]:
    """Members of a (System V / GNU) ar archive: name -> where its data is."""
    if not blob.startswith(AR_MAGIC):
        raise ImageBuildError("not a .deb (no ar archive magic)")
    members = {}
    offset = len(AR_MAGIC)
    while offset + 60 <= len(blob):
        header = blob[offset:offset + 60]
        if header[58:60] != b"`\n":
            raise ImageBuildError(f"corrupt ar header at offset {offset}")
        name = header[:16].decode().strip().rstrip("/")
        size = int(header[48:58].decode().strip())
        members[name] = ArMember(name, offset + 60, size)
        offset += 60 + size + (size & 1)
    return members


def canonical_path(path: str) -> str:
    """A package path in merged-/usr form, relative, without ``.`` components."""
    parts = [p for p in path.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise ImageBuildError(f"package member path escapes its root: {path!r}")
    if parts and parts[0] in MERGED_USR_DIRS:
        parts.insert(0, "usr")
    return "/".join(parts)


@contextmanager
def _decompressed(name: str, payload: bytes) -> Iterator[IO[bytes]]:
    """A readable stream of the tar inside ``name`` (data.tar.xz, .zst, .gz or plain)."""
    if name.endswith(".tar"):
        yield io.BytesIO(payload)
        return
    if name.endswith(".gz"):
        yield io.BytesIO(zlib.decompress(payload, 16 + zlib.MAX_WBITS))
        return
    if name.endswith(".xz"):
        tool = ["xz", "-dc", "-T0"] if shutil.which("xz") else None
        if tool is None:
            yield io.BytesIO(lzma.decompress(payload))
            return
    elif name.endswith(".zst"):
        if shutil.which("zstd") is None:
            raise HostError(f"{name} is zstd-compressed: install the zstd tool")
        tool = ["zstd", "-dcq"]
    else:
        raise ImageBuildError(f"unsupported .deb member compression: {name}")
    # Feed the compressed bytes from a temporary file so the tool runs in parallel with us.
    with tempfile.TemporaryFile() as src:
        src.write(payload)
        src.seek(0)
        proc = subprocess.Popen(tool, stdin=src, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE)
        assert proc.stdout is not None and proc.stderr is not None
        try:
            yield proc.stdout
        except BaseException:
            proc.kill()
            proc.wait()
            raise
        proc.stdout.read()  # drain, so the tool can finish
        err = proc.stderr.read()
        if proc.wait() != 0:
            raise ImageBuildError(f"{tool[0]} failed on {name}: {err.decode().strip()}")


def _member_payload(deb: Path, prefix: str) -> tuple[str, bytes]:
    blob = deb.read_bytes()
    for name, member in ar_members(blob).items():
        if name.startswith(prefix):
            return name, blob[member.offset:member.offset + member.size]
    raise ImageBuildError(f"{deb.name}: no {prefix}* member")


def read_control(deb: Path) -> dict[str, str]:
    """The fields of the package's DEBIAN/control file."""
    from .apt import parse_control_records

    name, payload = _member_payload(deb, "control.tar")
    with _decompressed(name, payload) as stream, tarfile.open(fileobj=stream, mode="r|") as tar:
        for info in tar:
            if info.name.lstrip("./") == "control" and info.isfile():
                handle = tar.extractfile(info)
                assert handle is not None
                records = parse_control_records(handle.read().decode())
                return records[0] if records else {}
    raise ImageBuildError(f"{deb.name}: control.tar has no control file")


@dataclass(frozen=True)
class DebMember:
    """One member of a package's data.tar while it is being streamed."""

    path: str  # canonical (merged-/usr) path
    info: tarfile.TarInfo
    tar: tarfile.TarFile

    def read(self) -> bytes:
        """The file's bytes; only valid before the iteration moves on."""
        handle = self.tar.extractfile(self.info)
        assert handle is not None
        return handle.read()


def deb_members(deb: Path) -> Iterator[DebMember]:
    """Stream the members of ``deb``'s data.tar in archive order (one decompression pass)."""
    name, payload = _member_payload(deb, "data.tar")
    with _decompressed(name, payload) as stream, tarfile.open(fileobj=stream, mode="r|") as tar:
        for info in tar:
            path = canonical_path(info.name)
            if path:
                yield DebMember(path, info, tar)


def extract_deb(deb: Path, dest: Path,
                select: Callable[[str], bool] | None = None) -> list[str]:
    """Unpack the data of ``deb`` under ``dest``; return the canonical paths written.

    ``select`` gets each canonical path and decides whether to keep it (default: all).
    Hard links become copies; the executable bit is kept, other special bits dropped.
    """
    written: list[str] = []
    root = dest.resolve()
    for member in deb_members(deb):
        path, info = member.path, member.info
        if select is not None and not select(path):
            continue
        target = root / path
        if info.isdir():
            target.mkdir(parents=True, exist_ok=True)
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        if target.is_symlink() or target.exists():
            target.unlink()
        if info.issym():
            os.symlink(info.linkname, target)
        elif info.islnk():
            source = root / canonical_path(info.linkname)
            if not source.exists():
                if select is not None:
                    continue  # a link to a file the selection left out
                raise ImageBuildError(f"{deb.name}: hard link {path} to missing "
                                      f"{info.linkname}")
            shutil.copyfile(source, target)
            os.chmod(target, source.stat().st_mode & 0o777)
        elif info.isfile():
            target.write_bytes(member.read())
            os.chmod(target, 0o755 if info.mode & 0o111 else 0o644)
        else:
            continue  # device nodes and fifos have no place in a package we use
        written.append(path)
    return written


class SpillFile:
    """Many members kept in one temporary file, read back by key.

    Unpacking a kernel package as files means thousands of creat/mkdir/unlink calls, which
    dominated build time on a slow disk (5 s of 14 s for a generic kernel); appending them
    to one file costs one open, and a module is read back only if a group needs it.
    """

    def __init__(self, path: Path) -> None:
        self._file = path.open("w+b")
        self._index: dict[str, tuple[int, int]] = {}

    def add(self, key: str, data: bytes) -> None:
        self._index[key] = (self._file.tell(), len(data))
        self._file.write(data)

    def keys(self) -> list[str]:
        return list(self._index)

    def read(self, key: str) -> bytes:
        offset, size = self._index[key]
        self._file.flush()
        return os.pread(self._file.fileno(), size, offset)

    def close(self) -> None:
        self._file.close()
