"""The uncompressed kernel inside a bzImage, for booting it through its PVH entry point.

Under TCG the bzImage's own decompressor runs emulated: for Debian's 11 MiB zstd trixie
kernel that was ~0.6 s of every boot (median of 5: boot to userspace 2.86 s as a bzImage,
2.21 s as vmlinux).  QEMU boots an ELF ``vmlinux`` directly when it carries the PVH entry
note (``XEN_ELFNOTE_PHYS32_ENTRY``, CONFIG_PVH), so the builder decompresses the payload
once and the guest boots that; the bzImage stays what kexec loads as the capture kernel.

Documentation/arch/x86/boot.rst: ``payload_offset`` (0x248, relative to the start of the
protected-mode code, which follows ``(setup_sects + 1) * 512`` bytes of setup) and
``payload_length`` (0x24C) locate the compressed vmlinux; its format is told by its magic,
and the build appends the uncompressed size as 4 little-endian bytes.
"""

from __future__ import annotations

import gzip
import io
import lzma
import shutil
import struct
import subprocess
from collections.abc import Callable

SETUP_SECTS_OFFSET = 0x1F1
PAYLOAD_OFFSET = 0x248
PAYLOAD_LENGTH = 0x24C
#: include/xen/interface/elfnote.h: the 32-bit physical entry point PVH boots through.
XEN_ELFNOTE_PHYS32_ENTRY = 18


def _zstd(data: bytes) -> bytes | None:
    if shutil.which("zstd") is None:
        return None
    done = subprocess.run(["zstd", "-d", "-q", "-c"], input=data, capture_output=True,
                          check=False)
    return done.stdout if done.returncode == 0 else None


#: Payload formats by magic.  LZ4 (bookworm), LZO and bzip2 stay bzImages: their guest-side
#: decompression is fast, or no tool for them is at hand.
_DECOMPRESSORS: tuple[tuple[bytes, Callable[[bytes], bytes | None]], ...] = (
    (b"\x28\xb5\x2f\xfd", _zstd),
    (b"\x1f\x8b", gzip.decompress),
    (b"\xfd7zXZ\x00", lzma.decompress),
)


def payload(bzimage: bytes) -> bytes | None:
    """The compressed vmlinux inside ``bzimage`` (without the appended size), if sane."""
    if len(bzimage) < PAYLOAD_LENGTH + 4:
        return None
    setup = ((bzimage[SETUP_SECTS_OFFSET] or 4) + 1) * 512
    offset, length = struct.unpack_from("<II", bzimage, PAYLOAD_OFFSET)
    start = setup + offset
    if length <= 4 or start + length > len(bzimage):
        return None
    return bzimage[start:start + length]


def extract_vmlinux(bzimage: bytes) -> bytes | None:
    """The uncompressed ELF vmlinux of ``bzimage``, or None if it cannot be had here."""
    data = payload(bzimage)
    if data is None:
        return None
    (size,) = struct.unpack_from("<I", data, len(data) - 4)
    for magic, decompress in _DECOMPRESSORS:
        if data.startswith(magic):
            try:
                out = decompress(data[:-4])
            except (OSError, EOFError, lzma.LZMAError):
                return None
            if out is None or len(out) != size or not out.startswith(b"\x7fELF"):
                return None
            return out
    return None


def has_pvh_entry(vmlinux: bytes) -> bool:
    """Whether the ELF carries the Xen PHYS32_ENTRY note that QEMU's PVH boot needs.

    The notes are walked by hand: pyelftools names note types 1-5 after GNU's whatever
    the owner, so Xen's numbers cannot be compared reliably through it.
    """
    # Imported here, as in elfdeps: only an image build looks for the note.
    from elftools.common.exceptions import ELFError
    from elftools.elf.elffile import ELFFile
    from elftools.elf.segments import NoteSegment

    try:
        elf = ELFFile(io.BytesIO(vmlinux))
        for segment in elf.iter_segments():
            if isinstance(segment, NoteSegment) and _has_note(segment.data(), b"Xen",
                                                              XEN_ELFNOTE_PHYS32_ENTRY):
                return True
    except (ELFError, ValueError, struct.error):
        return False
    return False


def _has_note(data: bytes, owner: bytes, note_type: int) -> bool:
    offset = 0
    while offset + 12 <= len(data):
        namesz, descsz, kind = struct.unpack_from("<III", data, offset)
        name_at = offset + 12
        name = data[name_at:name_at + namesz].rstrip(b"\0")
        if name == owner and kind == note_type:
            return True
        offset = name_at + (namesz + 3) // 4 * 4 + (descsz + 3) // 4 * 4
    return False


def pvh_kernel(bzimage: bytes) -> bytes | None:
    """The vmlinux to boot through PVH, or None to boot the bzImage as it is."""
    vmlinux = extract_vmlinux(bzimage)
    return vmlinux if vmlinux is not None and has_pvh_entry(vmlinux) else None
