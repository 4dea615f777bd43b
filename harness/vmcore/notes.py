"""Decoding the kernel's crash notes: x86_64 ``NT_PRSTATUS`` and the ``VMCOREINFO`` text.

A note's *structure* (sizes, bounds) is checked by ``elf.parse_notes`` and refused when wrong.
Its *content* is decoded leniently: a ``CORE`` note of the wrong size, or a VMCOREINFO line
that does not parse, is kept and flagged so the verifier can report it as a finding.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from typing import Any

from .constants import (
    PRSTATUS_CURSIG_OFFSET,
    PRSTATUS_FPVALID_OFFSET,
    PRSTATUS_PID_OFFSET,
    PRSTATUS_REGS_OFFSET,
    PRSTATUS_SIGNO_OFFSET,
    PRSTATUS_SIZE,
    X86_64_REGISTER_NAMES,
)
from .elf import Note

_REGS = struct.Struct(f"<{len(X86_64_REGISTER_NAMES)}Q")
_IDS = struct.Struct("<iiii")   # pr_pid, pr_ppid, pr_pgrp, pr_sid
_INT = struct.Struct("<i")
_SHORT = struct.Struct("<h")
_RIP_INDEX = X86_64_REGISTER_NAMES.index("rip")
_RSP_INDEX = X86_64_REGISTER_NAMES.index("rsp")


@dataclass(frozen=True, slots=True)
class PrStatus:
    """An x86_64 ``struct elf_prstatus`` (336 bytes) as ``crash_save_cpu()`` fills it."""

    signal: int
    cursig: int
    pid: int
    ppid: int
    pgrp: int
    sid: int
    registers: tuple[int, ...]      # user_regs_struct order: X86_64_REGISTER_NAMES
    fpvalid: int

    @property
    def rip(self) -> int:
        return self.registers[_RIP_INDEX]

    @property
    def rsp(self) -> int:
        return self.registers[_RSP_INDEX]

    def register(self, name: str) -> int:
        """A register by its ``user_regs_struct`` name (``KeyError`` for an unknown name)."""
        try:
            return self.registers[X86_64_REGISTER_NAMES.index(name)]
        except ValueError:
            raise KeyError(name) from None

    def registers_dict(self) -> dict[str, int]:
        return dict(zip(X86_64_REGISTER_NAMES, self.registers, strict=True))


def decode_prstatus(desc: bytes) -> PrStatus | None:
    """Decode an x86_64 ``elf_prstatus``; ``None`` when the size says it is something else."""
    if len(desc) != PRSTATUS_SIZE:
        return None
    (signo,) = _INT.unpack_from(desc, PRSTATUS_SIGNO_OFFSET)
    (cursig,) = _SHORT.unpack_from(desc, PRSTATUS_CURSIG_OFFSET)
    pid, ppid, pgrp, sid = _IDS.unpack_from(desc, PRSTATUS_PID_OFFSET)
    registers = _REGS.unpack_from(desc, PRSTATUS_REGS_OFFSET)
    (fpvalid,) = _INT.unpack_from(desc, PRSTATUS_FPVALID_OFFSET)
    return PrStatus(signal=signo, cursig=cursig, pid=pid, ppid=ppid, pgrp=pgrp, sid=sid,
                    registers=tuple(registers), fpvalid=fpvalid)


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
    def from_note(cls, index: int, note: Note) -> CpuNote:
        return cls(index=index, offset=note.offset, desc_size=len(note.desc),
                   prstatus=decode_prstatus(note.desc))

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
    listed in ``malformed_lines``.
    """

    entries: dict[str, str]
    malformed_lines: tuple[str, ...] = field(default=())

    @classmethod
    def parse(cls, data: bytes | str) -> VmcoreInfo:
        if isinstance(data, bytes):
            # The note buffer is a page; the text ends at the first NUL.
            data = data.split(b"\0", 1)[0].decode("utf-8", "replace")
        entries: dict[str, str] = {}
        malformed: list[str] = []
        for line in data.splitlines():
            if not line.strip():
                continue
            key, sep, value = line.partition("=")
            if not sep or not key:
                malformed.append(line)
                continue
            base = _value_base(key)
            if base is not None and _parse_int(value.strip(), base) is None:
                malformed.append(line)
            entries.setdefault(key, value.strip())  # first one wins, as in makedumpfile
        return cls(entries=entries, malformed_lines=tuple(malformed))

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
