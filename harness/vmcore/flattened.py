"""makedumpfile's flattened format (``makedumpfile -F``): a dump as a seekless stream.

Layout (makedumpfile.h; every integer is big-endian, whatever the machine)::

    0       struct makedumpfile_header: signature[16] = "makedumpfile", int64 type (1),
            int64 version (1); padded to MAX_SIZE_MDF_HEADER (4096)
    4096    records: struct makedumpfile_data_header {int64 offset; int64 buf_size;}
            followed by buf_size bytes that belong at ``offset`` of the regular file
    ...     the end marker: offset == -1 and buf_size == -1 (END_FLAG_FLAT_HEADER)

Later records may overwrite earlier ones; bytes no record covers are holes (zeros), as in
``makedumpfile -R``, which rebuilds the regular file by seeking and writing.
"""

from __future__ import annotations

import os
import struct
from array import array
from typing import BinaryIO

from ..errors import VmcoreFormatError
from .constants import (
    FLAT_END_MARKER,
    FLAT_HEADER_TYPE,
    MAKEDUMPFILE_HEADER_SIZE,
    MAKEDUMPFILE_SIGNATURE,
    Limits,
)
from .source import ByteSource, past_end_error

_HEADER = struct.Struct(">16sqq")
_RECORD = struct.Struct(">qq")
_COPY_CHUNK = 1 << 20
_INDEX_WINDOW = 64 << 10


def check_flat_header(head: bytes, *, source_name: str) -> int:
    """Validate ``struct makedumpfile_header``; return its version."""
    if len(head) < _HEADER.size:
        raise VmcoreFormatError(f"{source_name}: too short for a makedumpfile flattened header",
                                offset=0, field="signature")
    signature, flat_type, version = _HEADER.unpack_from(head)
    if signature.split(b"\0", 1)[0] != MAKEDUMPFILE_SIGNATURE:
        raise VmcoreFormatError(f"{source_name}: no \"makedumpfile\" signature",
                                offset=0, field="signature")
    if flat_type != FLAT_HEADER_TYPE:
        raise VmcoreFormatError(f"{source_name}: flattened header type {flat_type}, expected "
                                f"{FLAT_HEADER_TYPE}", offset=16, field="type")
    return int(version)


def _check_record(offset: int, size: int, at: int, source_name: str) -> None:
    if offset < 0:
        raise VmcoreFormatError(f"{source_name}: record offset {offset} is negative",
                                offset=at, field="offset")
    if size < 0:
        raise VmcoreFormatError(f"{source_name}: record buf_size {size} is negative",
                                offset=at + 8, field="buf_size")
    if offset + size > Limits.MAX_FLAT_OFFSET:
        raise VmcoreFormatError(
            f"{source_name}: record [{offset:#x}, +{size:#x}) lies beyond "
            f"{Limits.MAX_FLAT_OFFSET:#x}", offset=at, field="offset")


class FlattenedSource:
    """The regular file a flattened stream describes, read without rebuilding it.

    Indexing reads the 16-byte record headers and skips the data, so opening costs one small
    read per record; a read then copies only the overlapping slices of the records.
    ``complete`` is False when the stream stops before its end marker.
    """

    def __init__(self, stream: ByteSource) -> None:
        self._stream = stream
        self.version = check_flat_header(
            stream.read_available(0, _HEADER.size), source_name=stream.name)
        self._out = array("q")      # where each record's data belongs
        self._len = array("q")      # how many bytes of it the stream holds
        self._src = array("q")      # where those bytes are in the stream
        self.complete = False
        size = 0
        pos = MAKEDUMPFILE_HEADER_SIZE
        # Record headers are read through a small window so that streams of many small
        # records cost one read per window, not one per record.
        window, window_at = b"", 0
        while pos + _RECORD.size <= stream.size:
            if not (window_at <= pos and pos + _RECORD.size <= window_at + len(window)):
                window, window_at = stream.read_available(pos, _INDEX_WINDOW), pos
            offset, length = _RECORD.unpack_from(window, pos - window_at)
            if offset == FLAT_END_MARKER and length == FLAT_END_MARKER:
                self.complete = True
                break
            _check_record(offset, length, pos, stream.name)
            data_at = pos + _RECORD.size
            held = min(length, stream.size - data_at)
            if len(self._out) >= Limits.MAX_FLAT_RECORDS:
                raise VmcoreFormatError(
                    f"{stream.name}: more than {Limits.MAX_FLAT_RECORDS} flattened records",
                    offset=pos, field="record")
            self._out.append(offset)
            self._len.append(held)
            self._src.append(data_at)
            size = max(size, offset + held)
            pos = data_at + length
        self._size = size

    @property
    def name(self) -> str:
        return self._stream.name

    @property
    def size(self) -> int:
        """The size of the rebuilt file (as far as the stream goes)."""
        return self._size

    @property
    def records(self) -> int:
        return len(self._out)

    def read_at(self, offset: int, length: int, *, field: str) -> bytes:
        if offset < 0 or length < 0 or offset + length > self._size:
            raise past_end_error(self, offset, length, field)
        return self._assemble(offset, length)

    def read_available(self, offset: int, length: int) -> bytes:
        if offset < 0 or offset >= self._size or length <= 0:
            return b""
        return self._assemble(offset, min(length, self._size - offset))

    def _assemble(self, offset: int, length: int) -> bytes:
        buf = bytearray(length)
        end = offset + length
        for out, held, src in zip(self._out, self._len, self._src, strict=True):
            lo = max(offset, out)
            hi = min(end, out + held)
            if lo < hi:
                buf[lo - offset:hi - offset] = self._stream.read_at(
                    src + (lo - out), hi - lo, field="flattened record data")
        return bytes(buf)


def _read_exactly(stream: BinaryIO, length: int) -> bytes:
    chunks = []
    while length > 0:
        chunk = stream.read(length)
        if not chunk:
            break
        chunks.append(chunk)
        length -= len(chunk)
    return b"".join(chunks)


def rebuild_flattened(stream: BinaryIO, out: BinaryIO, *, source_name: str = "<stream>",
                      chunk_size: int = _COPY_CHUNK) -> int:
    """Rebuild the regular file from a flattened stream, as ``makedumpfile -R`` does.

    ``stream`` is read sequentially (a pipe is fine); ``out`` must be seekable.  Memory stays
    bounded by ``chunk_size`` whatever the record sizes.  Returns the rebuilt size.
    """
    head = _read_exactly(stream, MAKEDUMPFILE_HEADER_SIZE)
    check_flat_header(head, source_name=source_name)
    if len(head) < MAKEDUMPFILE_HEADER_SIZE:
        raise VmcoreFormatError(f"{source_name}: the flattened header is cut short",
                                offset=len(head), field="makedumpfile_header")
    pos = MAKEDUMPFILE_HEADER_SIZE
    size = 0
    while True:
        raw = _read_exactly(stream, _RECORD.size)
        if len(raw) < _RECORD.size:
            raise VmcoreFormatError(f"{source_name}: the stream ends without its end marker "
                                    "(makedumpfile did not finish)", offset=pos, field="record")
        offset, length = _RECORD.unpack(raw)
        if offset == FLAT_END_MARKER and length == FLAT_END_MARKER:
            break
        _check_record(offset, length, pos, source_name)
        out.seek(offset)
        remaining = length
        while remaining:
            chunk = stream.read(min(remaining, chunk_size))
            if not chunk:
                raise VmcoreFormatError(
                    f"{source_name}: record data ends {remaining:#x} bytes early",
                    offset=pos + _RECORD.size + length - remaining, field="buf_size")
            out.write(chunk)
            remaining -= len(chunk)
        size = max(size, offset + length)
        pos += _RECORD.size + length
    out.truncate(size)
    return size


def rebuild_flattened_file(src: str | os.PathLike[str], dst: str | os.PathLike[str]) -> int:
    """``rebuild_flattened`` from one file to another (``-`` reads standard input)."""
    import sys

    with open(dst, "wb") as out:
        if os.fspath(src) == "-":
            return rebuild_flattened(sys.stdin.buffer, out, source_name="<stdin>")
        with open(src, "rb") as stream:
            return rebuild_flattened(stream, out, source_name=os.fspath(src))
