"""The kernel release string of an x86 bzImage, read from its setup header.

Documentation/arch/x86/boot.rst: the setup header starts at 0x1F1; 0x1FE holds the boot
flag 0xAA55, 0x202 the magic "HdrS", 0x206 the protocol version and 0x20E ``kernel_version``:
a pointer, relative to 0x200, to a NUL-terminated string such as
``6.12.107+deb13-cloud-amd64 (maintainer@host) #1 SMP PREEMPT_DYNAMIC ...``. Its first word is
what ``uname -r`` prints and what ``lib/modules/<release>`` is named after.
"""

from __future__ import annotations

import struct
from pathlib import Path

from ..errors import UsageError

BOOT_FLAG_OFFSET = 0x1FE
HEADER_MAGIC_OFFSET = 0x202
KERNEL_VERSION_OFFSET = 0x20E
SETUP_BASE = 0x200
#: The string is within the real-mode setup code; 64 KiB is a generous upper bound.
MAX_VERSION_SCAN = 0x10000


def kernel_version_string(blob: bytes, where: str = "kernel") -> str:
    """The full version string the setup header points to."""
    if blob[:4] == b"\x7fELF":
        raise UsageError(f"{where} is an ELF vmlinux, not a bzImage: pass "
                         "arch/x86/boot/bzImage")
    if len(blob) < KERNEL_VERSION_OFFSET + 2:
        raise UsageError(f"{where} is too short to be a bzImage")
    (boot_flag,) = struct.unpack_from("<H", blob, BOOT_FLAG_OFFSET)
    magic = blob[HEADER_MAGIC_OFFSET:HEADER_MAGIC_OFFSET + 4]
    if boot_flag != 0xAA55 or magic != b"HdrS":
        raise UsageError(f"{where} is not an x86 bzImage (no 0xAA55 boot flag / HdrS magic)")
    (pointer,) = struct.unpack_from("<H", blob, KERNEL_VERSION_OFFSET)
    if pointer == 0:
        raise UsageError(f"{where}: the setup header has no kernel_version pointer")
    start = SETUP_BASE + pointer
    end = blob.find(b"\0", start, start + MAX_VERSION_SCAN)
    if start >= len(blob) or end < 0:
        raise UsageError(f"{where}: kernel_version pointer {pointer:#x} leads nowhere")
    return blob[start:end].decode(errors="replace")


def kernel_release(blob: bytes, where: str = "kernel") -> str:
    """``uname -r`` of the kernel: the first word of its version string."""
    text = kernel_version_string(blob, where).strip()
    if not text:
        raise UsageError(f"{where}: empty kernel version string")
    return text.split()[0]


def kernel_release_of(path: Path) -> str:
    """``kernel_release`` of a bzImage file (only its first 64 KiB are read)."""
    try:
        with path.open("rb") as f:
            blob = f.read(SETUP_BASE + MAX_VERSION_SCAN * 2)
    except OSError as exc:
        raise UsageError(f"cannot read kernel {path}: {exc.strerror}") from None
    return kernel_release(blob, str(path))


PROTOCOL_OFFSET = 0x206
INIT_SIZE_OFFSET = 0x260
#: ``init_size`` exists from boot protocol 2.10 on.
INIT_SIZE_PROTOCOL = 0x020A


def init_size_of(path: Path) -> int | None:
    """The memory the kernel needs from its load address until it runs (``init_size``:
    the decompressed kernel plus its early allocations), or None when the header lacks it.

    kexec_file_load reserves this much for the kernel inside the crashkernel region.
    """
    try:
        with path.open("rb") as f:
            head = f.read(INIT_SIZE_OFFSET + 4)
    except OSError:
        return None
    if len(head) < INIT_SIZE_OFFSET + 4 or head[HEADER_MAGIC_OFFSET:HEADER_MAGIC_OFFSET + 4] \
            != b"HdrS":
        return None
    (protocol,) = struct.unpack_from("<H", head, PROTOCOL_OFFSET)
    if protocol < INIT_SIZE_PROTOCOL:
        return None
    (size,) = struct.unpack_from("<I", head, INIT_SIZE_OFFSET)
    return int(size)
