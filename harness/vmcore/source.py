"""Random-access byte sources: a file, a buffer, or (in flattened.py) a flattened stream.

Readers ask for exactly the bytes they need (``read_at``) and never for more than the
header region, so a multi-GiB dump costs a few small reads.  A read that runs past the end
raises ``VmcoreFormatError`` naming the field being read and its offset.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import BinaryIO, Protocol, Self, runtime_checkable

from ..errors import VmcoreFormatError

#: What the readers accept as "a dump": a path or the dump's bytes.
BytesLike = bytes | bytearray | memoryview


@runtime_checkable
class ByteSource(Protocol):
    """A read-only, random-access view of a dump."""

    @property
    def name(self) -> str:
        """The file name (or ``<buffer>``), for error messages."""
        ...

    @property
    def size(self) -> int:
        """Total size in bytes."""
        ...

    def read_at(self, offset: int, length: int, *, field: str) -> bytes:
        """Exactly ``length`` bytes at ``offset``; ``field`` names them in the error if short."""
        ...

    def read_available(self, offset: int, length: int) -> bytes:
        """Up to ``length`` bytes at ``offset`` (fewer at the end, none past it)."""
        ...


def past_end_error(source: ByteSource, offset: int, length: int, field: str) -> VmcoreFormatError:
    """The error for a read of ``[offset, offset+length)`` that does not fit in ``source``."""
    return VmcoreFormatError(
        f"{source.name}: {field} lies past the end of the data "
        f"(needs bytes [{offset:#x}, {offset + length:#x}), have {source.size:#x})",
        offset=offset, field=field)


def _check_request(source: ByteSource, offset: int, length: int, field: str) -> None:
    if offset < 0 or length < 0 or offset + length > source.size:
        raise past_end_error(source, offset, length, field)


class BufferSource:
    """A dump held in memory (tests, or an elfcorehdr read from guest memory)."""

    def __init__(self, data: BytesLike, name: str = "<buffer>") -> None:
        view = memoryview(data)
        self._data = view.cast("B") if view.format != "B" else view
        self._name = name

    @property
    def name(self) -> str:
        return self._name

    @property
    def size(self) -> int:
        return len(self._data)

    def read_at(self, offset: int, length: int, *, field: str) -> bytes:
        _check_request(self, offset, length, field)
        return bytes(self._data[offset:offset + length])

    def read_available(self, offset: int, length: int) -> bytes:
        if offset < 0 or offset >= self.size or length <= 0:
            return b""
        return bytes(self._data[offset:offset + length])


class FileSource:
    """A dump file on disk, read with ``pread`` so nothing but the asked-for bytes is read."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self._path = Path(path)
        self._file: BinaryIO = open(self._path, "rb")  # noqa: SIM115 - closed by close()
        try:
            self._size = os.fstat(self._file.fileno()).st_size
        except BaseException:
            self._file.close()
            raise

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the file (idempotent)."""
        self._file.close()

    @property
    def name(self) -> str:
        return str(self._path)

    @property
    def size(self) -> int:
        return self._size

    def read_at(self, offset: int, length: int, *, field: str) -> bytes:
        _check_request(self, offset, length, field)
        data = self._pread(offset, length)
        if len(data) != length:  # the file shrank under us
            raise past_end_error(self, offset, length, field)
        return data

    def read_available(self, offset: int, length: int) -> bytes:
        if offset < 0 or offset >= self._size or length <= 0:
            return b""
        return self._pread(offset, min(length, self._size - offset))

    def _pread(self, offset: int, length: int) -> bytes:
        chunks = []
        fd = self._file.fileno()
        while length > 0:
            chunk = os.pread(fd, length, offset)
            if not chunk:
                break
            chunks.append(chunk)
            offset += len(chunk)
            length -= len(chunk)
        return b"".join(chunks)
