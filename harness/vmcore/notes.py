"""Decoding the kernel's crash notes: x86_64 ``NT_PRSTATUS`` and the ``VMCOREINFO`` text.

A note's *structure* (sizes, bounds) is checked by ``elf.iter_notes`` and refused when wrong;
``NoteCollector`` bounds how many notes, CPU notes and VMCOREINFO bytes a dump may hold.
Its *content* is decoded leniently: a ``CORE`` note of the wrong size, a VMCOREINFO line
that does not parse or a key given twice, is kept and flagged so the verifier can report it.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from typing import Any

from ..errors import VmcoreFormatError
from .constants import (
    CORE_NOTE_NAME,
    PRSTATUS_CURSIG_OFFSET,
    PRSTATUS_FPVALID_OFFSET,
    PRSTATUS_PID_OFFSET,
    PRSTATUS_REGS_OFFSET,
    PRSTATUS_SIGNO_OFFSET,
    PRSTATUS_SIZE,
    VMCOREINFO_NOTE_NAME,
    X86_64_REGISTER_NAMES,
    Limits,
    NoteType,
)
from .elf import Note, iter_notes
from .source import BytesLike

_REGS = struct.Struct(f"<{len(X86_64_REGISTER_NAMES)}Q")
_IDS = struct.Struct("<iiii")   # pr_pid, pr_ppid, pr_pgrp, pr_sid
_INT = struct.Struct("<i")
_SHORT = struct.Struct("<h")
_U64 = struct.Struct("<Q")
_RIP_INDEX = X86_64_REGISTER_NAMES.index("rip")
_RSP_INDEX = X86_64_REGISTER_NAMES.index("rsp")


@dataclass(frozen=True, slots=True)
class PrStatus:
    """An x86_64 ``struct elf_prstatus`` (336 bytes) as ``crash_save_cpu()`` fills it.

    The registers stay as the 216 bytes of ``pr_reg`` and are decoded when asked for: 27
    Python ints per CPU would be most of a dump's memory at 8192 CPUs.
    """

    signal: int
    cursig: int
    pid: int
    ppid: int
    pgrp: int
    sid: int
    register_bytes: bytes           # pr_reg: user_regs_struct, X86_64_REGISTER_NAMES order
    fpvalid: int

    @property
    def registers(self) -> tuple[int, ...]:
        return tuple(_REGS.unpack(self.register_bytes))

    @property
    def rip(self) -> int:
        return int(_U64.unpack_from(self.register_bytes, 8 * _RIP_INDEX)[0])

    @property
    def rsp(self) -> int:
        return int(_U64.unpack_from(self.register_bytes, 8 * _RSP_INDEX)[0])

    def register(self, name: str) -> int:
        """A register by its ``user_regs_struct`` name (``KeyError`` for an unknown name)."""
        try:
            index = X86_64_REGISTER_NAMES.index(name)
        except ValueError:
            raise KeyError(name) from None
        return int(_U64.unpack_from(self.register_bytes, 8 * index)[0])

    def registers_dict(self) -> dict[str, int]:
        return dict(zip(X86_64_REGISTER_NAMES, self.registers, strict=True))


def decode_prstatus(desc: BytesLike) -> PrStatus | None:
    """Decode an x86_64 ``elf_prstatus``; ``None`` when the size says it is something else."""
    if len(desc) != PRSTATUS_SIZE:
        return None
    (signo,) = _INT.unpack_from(desc, PRSTATUS_SIGNO_OFFSET)
    (cursig,) = _SHORT.unpack_from(desc, PRSTATUS_CURSIG_OFFSET)
    pid, ppid, pgrp, sid = _IDS.unpack_from(desc, PRSTATUS_PID_OFFSET)
    registers = bytes(desc[PRSTATUS_REGS_OFFSET:PRSTATUS_REGS_OFFSET + _REGS.size])
    (fpvalid,) = _INT.unpack_from(desc, PRSTATUS_FPVALID_OFFSET)
    return PrStatus(signal=signo, cursig=cursig, pid=pid, ppid=ppid, pgrp=pgrp, sid=sid,
                    register_bytes=registers, fpvalid=fpvalid)


@dataclass(frozen=True, slots=True)
class CpuNote:
    """One ``CORE``/``NT_PRSTATUS`` note.

    ``index`` is its position among the CPU notes.  /proc/vmcore keeps them in ascending CPU
    order and drops CPUs that saved nothing, so ``index`` is the CPU number only when every
    online CPU saved a note.
    """

    index: int
    offset: int
    desc_size: int
    prstatus: PrStatus | None      # None: the descriptor is not a 336-byte x86_64 prstatus

    @property
    def pid(self) -> int | None:
        return self.prstatus.pid if self.prstatus else None

    @property
    def rip(self) -> int | None:
        return self.prstatus.rip if self.prstatus else None

    @property
    def idle(self) -> bool:
        """The CPU was running its idle task (pid 0) when it saved the note."""
        return self.prstatus is not None and self.prstatus.pid == 0

    @classmethod
    def from_note(cls, index: int, note: Note, desc: BytesLike) -> CpuNote:
        return cls(index=index, offset=note.offset, desc_size=note.desc_size,
                   prstatus=decode_prstatus(desc))

    def to_json_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"index": self.index, "offset": self.offset,
                             "desc_size": self.desc_size}
        if self.prstatus is not None:
            d.update(pid=self.prstatus.pid, rip=hex(self.prstatus.rip),
                     rsp=hex(self.prstatus.rsp), signal=self.prstatus.signal)
        else:
            d["undecodable"] = True
        return d


# VMCOREINFO keys whose values have a known format (kernel/vmcore_info.c, crash_core.c).
_HEX_KEYS = ("KERNELOFFSET",)
_DEC_KEYS = ("PAGESIZE", "CRASHTIME")
_HEX_PREFIXES = ("SYMBOL(",)
_DEC_PREFIXES = ("NUMBER(", "SIZE(", "OFFSET(", "LENGTH(")


def _parse_int(value: str, base: int) -> int | None:
    try:
        return int(value, base)
    except ValueError:
        # NUMBER() is "%ld" on x86 but a few architectures print hex with 0x.
        if base == 10:
            try:
                return int(value, 0)
            except ValueError:
                return None
        return None


def _value_base(key: str) -> int | None:
    if key in _HEX_KEYS or key.startswith(_HEX_PREFIXES):
        return 16
    if key in _DEC_KEYS or key.startswith(_DEC_PREFIXES):
        return 10
    return None


@dataclass(frozen=True)
class VmcoreInfo:
    """The ``VMCOREINFO`` note: ``KEY=value`` lines (kernel/vmcore_info.c).

    Typed accessors return ``None`` for a missing or unparseable value; such lines are also
    listed in ``malformed_lines``.  A key written twice keeps its first value (as
    makedumpfile does) and a second, different value is listed in ``conflicts``: the
    verifier calls that a contradiction.  ``note_offset`` is where the note sits in the dump (or
    in guest memory), for messages.
    """

    entries: dict[str, str]
    malformed_lines: tuple[str, ...] = field(default=())
    conflicts: tuple[tuple[str, str, str], ...] = field(default=())   # key, first, later
    note_offset: int | None = None

    @classmethod
    def parse(cls, data: BytesLike | str, *, offset: int | None = None) -> VmcoreInfo:
        if not isinstance(data, str):
            # The note buffer is a page; the text ends at the first NUL.
            data = bytes(data).split(b"\0", 1)[0].decode("utf-8", "replace")
        entries: dict[str, str] = {}
        malformed: list[str] = []
        conflicts: list[tuple[str, str, str]] = []
        for line in data.splitlines():
            if not line.strip():
                continue
            key, sep, value = line.partition("=")
            if not sep or not key:
                malformed.append(line)
                continue
            base = _value_base(key)
            value = value.strip()
            if base is not None and _parse_int(value, base) is None:
                malformed.append(line)
            first = entries.setdefault(key, value)   # first one wins, as in makedumpfile
            if first != value:
                conflicts.append((key, first, value))
        return cls(entries=entries, malformed_lines=tuple(malformed),
                   conflicts=tuple(conflicts), note_offset=offset)

    def get(self, key: str) -> str | None:
        return self.entries.get(key)

    def _int(self, key: str) -> int | None:
        value = self.entries.get(key)
        base = _value_base(key)
        if value is None or base is None:
            return None
        return _parse_int(value, base)

    @property
    def osrelease(self) -> str | None:
        return self.entries.get("OSRELEASE")

    @property
    def build_id(self) -> str | None:
        return self.entries.get("BUILD-ID")

    @property
    def page_size(self) -> int | None:
        return self._int("PAGESIZE")

    @property
    def crash_time(self) -> int | None:
        """``CRASHTIME``: the guest's wall clock (Unix seconds) when it panicked."""
        return self._int("CRASHTIME")

    @property
    def kernel_offset(self) -> int | None:
        """``KERNELOFFSET``: the KASLR text offset (0 with nokaslr)."""
        return self._int("KERNELOFFSET")

    def symbol(self, name: str) -> int | None:
        return self._int(f"SYMBOL({name})")

    def number(self, name: str) -> int | None:
        return self._int(f"NUMBER({name})")

    def size(self, name: str) -> int | None:
        return self._int(f"SIZE({name})")

    def offset(self, name: str) -> int | None:
        return self._int(f"OFFSET({name})")

    def length(self, name: str) -> int | None:
        return self._int(f"LENGTH({name})")

    @property
    def symbols(self) -> dict[str, int]:
        """Every ``SYMBOL(name)`` that parses."""
        out: dict[str, int] = {}
        for key in self.entries:
            if key.startswith("SYMBOL(") and key.endswith(")"):
                value = self._int(key)
                if value is not None:
                    out[key[7:-1]] = value
        return out

    def to_json_dict(self) -> dict[str, Any]:
        return {
            "osrelease": self.osrelease, "page_size": self.page_size,
            "crash_time": self.crash_time,
            "kernel_offset": None if self.kernel_offset is None else hex(self.kernel_offset),
            "build_id": self.build_id, "entries": len(self.entries),
            "malformed_lines": list(self.malformed_lines),
        }


# -- reading note segments ----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class NoteSet:
    """What a dump's notes hold: every note (slim), the CPU notes, the VMCOREINFO notes."""

    notes: tuple[Note, ...]
    cpu_notes: tuple[CpuNote, ...]
    vmcoreinfos: tuple[VmcoreInfo, ...]


class NoteCollector:
    """Decode note segments one at a time, within ``Limits``.

    Each descriptor is decoded once and dropped (a prstatus keeps its 336 bytes' worth of
    fields, VMCOREINFO its text), so memory grows with the number of notes, not their
    bytes.  Beyond ``Limits.MAX_NOTES`` notes, ``MAX_CPUS`` CPU notes,
    ``MAX_VMCOREINFO_NOTES`` VMCOREINFO notes or a VMCOREINFO longer than
    ``MAX_VMCOREINFO``, ``VmcoreFormatError`` names the note that went over.
    """

    def __init__(self, source_name: str) -> None:
        self._name = source_name
        self._notes: list[Note] = []
        self._cpu_notes: list[CpuNote] = []
        self._infos: list[VmcoreInfo] = []

    def add_segment(self, data: BytesLike, base_offset: int) -> None:
        for note, desc in iter_notes(data, base_offset=base_offset, source_name=self._name):
            self._add(note, desc)

    def add_vmcoreinfo_text(self, text: BytesLike, offset: int) -> None:
        """VMCOREINFO found outside a note (kdump's ``offset_vmcoreinfo``)."""
        self._check_vmcoreinfo(len(text), offset, "size_vmcoreinfo")
        self._infos.append(VmcoreInfo.parse(text, offset=offset))

    def _add(self, note: Note, desc: memoryview) -> None:
        if len(self._notes) >= Limits.MAX_NOTES:
            raise VmcoreFormatError(f"{self._name}: more than {Limits.MAX_NOTES} notes",
                                    offset=note.offset, field="notes")
        self._notes.append(note)
        if note.name == CORE_NOTE_NAME and note.type == NoteType.NT_PRSTATUS:
            if len(self._cpu_notes) >= Limits.MAX_CPUS:
                raise VmcoreFormatError(
                    f"{self._name}: more than {Limits.MAX_CPUS} CPU notes (x86_64's largest "
                    "NR_CPUS)", offset=note.offset, field="notes")
            self._cpu_notes.append(CpuNote.from_note(len(self._cpu_notes), note, desc))
        elif note.name == VMCOREINFO_NOTE_NAME and note.type == NoteType.NT_VMCOREINFO:
            self._check_vmcoreinfo(note.desc_size, note.offset + 4, "n_descsz")
            self._infos.append(VmcoreInfo.parse(desc, offset=note.offset))

    def _check_vmcoreinfo(self, size: int, offset: int, field: str) -> None:
        if size > Limits.MAX_VMCOREINFO:
            raise VmcoreFormatError(
                f"{self._name}: a {size}-byte VMCOREINFO (the kernel's is at most a page; "
                f"refused above {Limits.MAX_VMCOREINFO})", offset=offset, field=field)
        if len(self._infos) >= Limits.MAX_VMCOREINFO_NOTES:
            raise VmcoreFormatError(
                f"{self._name}: more than {Limits.MAX_VMCOREINFO_NOTES} VMCOREINFO notes",
                offset=offset, field="notes")

    def result(self) -> NoteSet:
        return NoteSet(tuple(self._notes), tuple(self._cpu_notes), tuple(self._infos))


def vmcoreinfo_from_buffer(buffer: BytesLike, *, address: int,
                           name: str = "<vmcoreinfo>") -> tuple[VmcoreInfo, ...]:
    """The VMCOREINFO note(s) in a note buffer read from guest memory at ``address``.

    This is what a raw elfcorehdr's VMCOREINFO PT_NOTE points at; offsets in the result
    and in errors are guest physical addresses.
    """
    collector = NoteCollector(name)
    collector.add_segment(buffer, address)
    return collector.result().vmcoreinfos
