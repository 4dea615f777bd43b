"""A deterministic cpio "newc" writer for initramfs archives, and a small reader.

Linux unpacks the initramfs itself (init/initramfs.c) and only understands the "newc"
format (magic ``070701``; ``070702`` adds a checksum the kernel ignores). Writing the archive
ourselves means no root, no ``cpio``/``find`` pipeline and byte-identical output for the
same input: every entry is owned by 0:0 with mtime 0, inode numbers are assigned in order and
entries are sorted by path, so a parent directory always precedes its contents.

Layout of one entry: a 110-byte ASCII header of 13 eight-digit hex fields, the NUL-terminated
name padded so that header+name is a multiple of 4, then the data padded to a multiple of 4.
The archive ends with an entry named ``TRAILER!!!``. Because everything is 4-byte aligned,
archives can simply be concatenated: the kernel looks for each header at a 4-aligned offset
and skips zero padding between archives.
"""

from __future__ import annotations

import stat
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import BinaryIO

NEWC_MAGIC = b"070701"
TRAILER = "TRAILER!!!"
HEADER_SIZE = 110


@dataclass(frozen=True)
class Directory:
    """A directory; ``mode`` holds the permission bits only."""

    path: str
    mode: int = 0o755


@dataclass(frozen=True)
class RegularFile:
    """A regular file with its contents."""

    path: str
    data: bytes
    mode: int = 0o644


@dataclass(frozen=True)
class Symlink:
    """A symbolic link; ``target`` is stored verbatim."""

    path: str
    target: str


@dataclass(frozen=True)
class CharDevice:
    """A character device node (only ``/dev/console`` is needed: see ``console_node``)."""

    path: str
    major: int
    minor: int
    mode: int = 0o600


Entry = Directory | RegularFile | Symlink | CharDevice


def console_node() -> CharDevice:
    """``/dev/console`` (char 5:1).

    The kernel opens /dev/console for init's stdin/stdout/stderr before running /init
    (init/main.c console_on_rootfs); devtmpfs is not mounted yet at that point, so without
    this node init starts with no console and its early output is lost.
    """
    return CharDevice("dev/console", 5, 1, 0o600)


def normalise_path(path: str) -> str:
    """Archive names are relative ("bin/sh"), without "." or ".." components."""
    parts = [p for p in path.split("/") if p not in ("", ".")]
    if not parts or ".." in parts:
        raise ValueError(f"bad archive path {path!r}")
    return "/".join(parts)


def _pad4(length: int) -> bytes:
    return b"\0" * (-length % 4)


def _header(*, ino: int, mode: int, nlink: int, size: int, name: str,
            rdev: tuple[int, int] = (0, 0)) -> bytes:
    encoded = name.encode() + b"\0"
    fields = (
        ino, mode, 0, 0, nlink, 0, size,  # ino mode uid gid nlink mtime filesize
        0, 0,                              # dev major/minor (of the filesystem: unused)
        rdev[0], rdev[1],                  # rdev major/minor (device nodes)
        len(encoded), 0,                   # namesize, check
    )
    head = NEWC_MAGIC + b"".join(b"%08X" % f for f in fields)
    assert len(head) == HEADER_SIZE
    return head + encoded + _pad4(HEADER_SIZE + len(encoded))


def _encode(entry: Entry, ino: int) -> Iterator[bytes]:
    name = normalise_path(entry.path)
    if isinstance(entry, Directory):
        yield _header(ino=ino, mode=stat.S_IFDIR | (entry.mode & 0o7777), nlink=2, size=0,
                      name=name)
    elif isinstance(entry, RegularFile):
        yield _header(ino=ino, mode=stat.S_IFREG | (entry.mode & 0o7777), nlink=1,
                      size=len(entry.data), name=name)
        yield entry.data
        yield _pad4(len(entry.data))
    elif isinstance(entry, Symlink):
        target = entry.target.encode()
        yield _header(ino=ino, mode=stat.S_IFLNK | 0o777, nlink=1, size=len(target), name=name)
        yield target
        yield _pad4(len(target))
    else:
        yield _header(ino=ino, mode=stat.S_IFCHR | (entry.mode & 0o7777), nlink=1, size=0,
                      name=name, rdev=(entry.major, entry.minor))


def with_parent_directories(entries: Iterable[Entry]) -> list[Entry]:
    """Add a 0755 ``Directory`` for every missing parent and sort by path.

    Later entries for the same path replace earlier ones, so callers can overlay trees
    (the guest rootfs over the generated files). Sorting by path components puts every
    directory before its contents, which the kernel needs to create them.
    """
    by_path: dict[str, Entry] = {}
    for entry in entries:
        path = normalise_path(entry.path)
        by_path[path] = entry
    for path in list(by_path):
        parts = path.split("/")
        for depth in range(1, len(parts)):
            parent = "/".join(parts[:depth])
            if parent not in by_path:
                by_path[parent] = Directory(parent)
    return [by_path[p] for p in sorted(by_path, key=lambda p: p.split("/"))]


def write_newc(entries: Iterable[Entry], out: BinaryIO) -> int:
    """Write ``entries`` (with their parents, sorted) as one newc archive; return its size."""
    written = 0
    for ino, entry in enumerate(with_parent_directories(entries), start=1):
        for chunk in _encode(entry, ino):
            out.write(chunk)
            written += len(chunk)
    trailer = _header(ino=0, mode=0, nlink=1, size=0, name=TRAILER)
    out.write(trailer)
    return written + len(trailer)


def newc_bytes(entries: Iterable[Entry]) -> bytes:
    """The archive as bytes (convenient for small archives and tests)."""
    import io

    buffer = io.BytesIO()
    write_newc(entries, buffer)
    return buffer.getvalue()


@dataclass(frozen=True)
class ParsedEntry:
    """One member as read back by ``read_newc``."""

    path: str
    mode: int
    uid: int
    gid: int
    mtime: int
    nlink: int
    rdev: tuple[int, int]
    data: bytes


def read_newc(blob: bytes) -> list[list[ParsedEntry]]:
    """Parse one or more concatenated newc archives; one list of members per archive.

    Used by the tests; handy for inspecting a built image by hand.
    """
    archives: list[list[ParsedEntry]] = []
    current: list[ParsedEntry] = []
    offset = 0
    while offset < len(blob):
        if blob[offset] == 0:  # padding between concatenated archives
            offset += 4 - offset % 4 if offset % 4 else 4
            continue
        head = blob[offset:offset + HEADER_SIZE]
        if head[:6] not in (NEWC_MAGIC, b"070702"):
            raise ValueError(f"no cpio newc header at offset {offset:#x}")
        fields = [int(head[6 + 8 * i:14 + 8 * i], 16) for i in range(13)]
        _ino, mode, uid, gid, nlink, mtime, size = fields[:7]
        rdev = (fields[9], fields[10])
        namesize = fields[11]
        name_start = offset + HEADER_SIZE
        name = blob[name_start:name_start + namesize - 1].decode()
        data_start = name_start + namesize
        data_start += -data_start % 4
        data = blob[data_start:data_start + size]
        offset = data_start + size
        offset += -offset % 4
        if name == TRAILER:
            archives.append(current)
            current = []
            continue
        current.append(ParsedEntry(name, mode, uid, gid, mtime, nlink, rdev, data))
    if current:
        raise ValueError("cpio archive without a TRAILER!!! entry")
    return archives
