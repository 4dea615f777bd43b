"""Ramoops regions (pstore's RAM backend) decoded on the host: zones, dmesg records, log lines.

Why: with ``crash_kexec_post_notifiers`` panic() runs the panic notifiers and
``kmsg_dump(KMSG_DUMP_PANIC)`` *before* ``__crash_kexec()``; without it kdump runs first
and never returns, so pstore never sees the panic (kernel/panic.c; the seed002 thread).
The pstore scenario proves that order by reading the first kernel's ramoops region from
guest memory (QMP ``pmemsave``, see ``collect.save_pstore_region``) while the capture
kernel runs, and by reading the capture kernel's own /sys/fs/pstore.  This module is the
pure decoding part: bytes in, typed records out, no guest.

The format, as the kernel writes it:

* fs/pstore/ram.c ``ramoops_probe``: the region is the dmesg zones (``mem_size`` minus the
  console, ftrace and pmsg sizes, split into ``record_size`` zones), then the console
  zone, the ftrace zones (one per possible CPU for the module-parameter device: the
  ``RAMOOPS_FLAG_FTRACE_PER_CPU`` flag) and the pmsg zone; each size is rounded down to a
  power of two.
* fs/pstore/ram_core.c: every zone starts with ``struct persistent_ram_buffer { u32 sig;
  atomic_t start; atomic_t size; u8 data[]; }``, sig ``PERSISTENT_RAM_SIG`` (0x43474244,
  "DBGC") xor the zone's own (0, ftrace: ``LINUX_VERSION_CODE``); the data is a ring whose
  saved log is ``data[start:size] + data[:start]`` (``persistent_ram_save_old``); a zone
  with ``size > buffer_size`` or ``start > size`` is invalid (``persistent_ram_post_init``).
* fs/pstore/ram.c ``ramoops_write_kmsg_hdr``: a dmesg record starts
  ``====<seconds>.<microseconds>-<C|D>\\n`` (wall clock at the dump; C: compressed); the
  reader also takes the older ``====<s>.<us>\\n`` (``ramoops_read_kmsg_hdr``).
* fs/pstore/platform.c ``pstore_dump``: the payload is ``<Reason>#<count> Part<n>\\n`` and
  the newest kernel log lines in syslog form (``<level>[seconds] message``), compressed
  with zlib's raw deflate (``zlib_deflateInit2(..., -MAX_WBITS, ...)``) unless
  ``pstore.compress=none`` or compression did not make it smaller.

ECC (``ramoops.ecc``) is refused rather than half-decoded.
"""

from __future__ import annotations

import re
import struct
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from ..errors import EvidenceError

PERSISTENT_RAM_SIG = 0x43474244          # "DBGC" (fs/pstore/ram_core.c)
ZONE_HEADER = struct.Struct("<III")      # sig, start, size
KMSG_HEADER = re.compile(rb"====(-?\d+)\.(\d+)(?:-(.))?\n")   # C: compressed
RECORD_HEADING = re.compile(r"(\w+)#(\d+) Part(\d+)")
#: ``<4>[   14.496684] msg`` (kmsg_dump syslog form) or ``[ 14.49] [  T274] msg`` (dmesg and
#: makedumpfile --dump-dmesg, with the printk caller); one space after each bracket.
LOG_LINE = re.compile(r"^(?:<(\d+)>)?\[\s*(\d+\.\d+)\](?: \[\s*([TC]\d+)\])? ?(.*)$")
_PARAMS = ("mem_address", "mem_size", "record_size", "console_size", "ftrace_size",
           "pmsg_size", "ecc")


class PstoreFormatError(EvidenceError):
    """A ramoops region or layout the decoder cannot read (the harness read it, so it is
    evidence that is unusable, never a verdict about the kernel)."""


def _pow2_floor(value: int) -> int:
    return 1 << (value.bit_length() - 1) if value > 0 else 0


@dataclass(frozen=True)
class ZoneSpec:
    """Where ``ramoops_probe`` puts one zone: ``offset`` from the region's start."""

    kind: str          # dmesg, console, ftrace, pmsg
    index: int
    offset: int
    size: int


@dataclass(frozen=True)
class RamoopsLayout:
    """The ramoops module parameters that decide the region's layout."""

    mem_address: int
    mem_size: int
    record_size: int = 4096
    console_size: int = 4096
    ftrace_size: int = 4096
    pmsg_size: int = 4096
    ecc: int = 0
    #: ftrace zones: one per possible CPU for the module-parameter device (nr_cpu_ids).
    ftrace_zones: int = 1

    @classmethod
    def from_params(cls, params: Mapping[str, str], *, ftrace_zones: int = 1) -> RamoopsLayout:
        """From ``/sys/module/ramoops/parameters`` names (values decimal or 0x...); absent
        ones keep the module's defaults."""
        try:
            values = {k: int(params[k], 0) for k in _PARAMS if k in params}
        except ValueError as exc:
            raise PstoreFormatError(f"a ramoops parameter is not a number: {exc}") from exc
        if "mem_address" not in values or "mem_size" not in values:
            raise PstoreFormatError("the ramoops parameters name no mem_address and mem_size")
        return cls(ftrace_zones=ftrace_zones, **values)

    @classmethod
    def from_cmdline(cls, cmdline: str, *, ftrace_zones: int = 1) -> RamoopsLayout:
        """From the ``ramoops.NAME=VALUE`` words of a kernel command line."""
        words = dict(re.findall(r"(?:^|\s)ramoops\.(\w+)=(\S+)", cmdline))
        return cls.from_params(words, ftrace_zones=ftrace_zones)

    def zones(self) -> list[ZoneSpec]:
        """The zones in region order, as ``ramoops_probe`` lays them out."""
        if self.ecc:
            raise PstoreFormatError(f"ramoops.ecc={self.ecc}: ECC zones are not decoded")
        record, console = _pow2_floor(self.record_size), _pow2_floor(self.console_size)
        ftrace, pmsg = _pow2_floor(self.ftrace_size), _pow2_floor(self.pmsg_size)
        dump_size = self.mem_size - console - ftrace - pmsg
        if dump_size < 0:
            raise PstoreFormatError(f"console+ftrace+pmsg sizes exceed mem_size "
                                    f"{self.mem_size:#x}")
        out: list[ZoneSpec] = []
        offset = 0
        count = dump_size // record if record else 0
        for i in range(count):
            out.append(ZoneSpec("dmesg", i, offset, dump_size // count))
            offset += dump_size // count
        if console:
            out.append(ZoneSpec("console", 0, offset, console))
            offset += console
        if ftrace and self.ftrace_zones:
            size = ftrace // self.ftrace_zones
            for i in range(self.ftrace_zones):
                out.append(ZoneSpec("ftrace", i, offset, size))
                offset += size
        if pmsg:
            out.append(ZoneSpec("pmsg", 0, offset, pmsg))
        return out


@dataclass(frozen=True)
class Zone:
    """One persistent_ram_zone as found in memory; ``log`` is its saved ring, in order."""

    spec: ZoneSpec
    address: int
    sig: int
    start: int
    used: int
    log: bytes
    problem: str | None = None

    @property
    def valid(self) -> bool:
        return self.problem is None

    @property
    def empty(self) -> bool:
        return self.valid and not self.log


def parse_zone(region: bytes, spec: ZoneSpec, base: int) -> Zone:
    """Decode one zone like ``persistent_ram_post_init`` and ``persistent_ram_save_old``."""
    raw = region[spec.offset:spec.offset + spec.size]
    address = base + spec.offset
    if len(raw) < spec.size or spec.size <= ZONE_HEADER.size:
        return Zone(spec, address, 0, 0, 0, b"", f"zone of {spec.size} bytes at "
                    f"{address:#x} is not all in the {len(region)}-byte region")
    sig, start, used = ZONE_HEADER.unpack_from(raw)
    data = raw[ZONE_HEADER.size:]
    own = sig ^ PERSISTENT_RAM_SIG
    # ftrace zones xor in LINUX_VERSION_CODE (at most 0xffffff); the others xor in 0.
    if own != 0 and not (spec.kind == "ftrace" and own < 1 << 24):
        return Zone(spec, address, sig, start, used, b"", f"no ramoops signature "
                    f"(sig {sig:#010x})")
    if used > len(data) or start > used:
        return Zone(spec, address, sig, start, used, b"", f"invalid buffer (size {used}, "
                    f"start {start}, buffer {len(data)})")
    return Zone(spec, address, sig, start, used, data[start:used] + data[:start])


@dataclass(frozen=True)
class LogLine:
    """One kernel log line: level (syslog form only), printk timestamp, caller, message."""

    level: int | None
    timestamp: float
    caller: str | None
    message: str

    @property
    def key(self) -> tuple[float, str]:
        """What identifies the line in every form the log comes in."""
        return (self.timestamp, self.message.rstrip())


def parse_log(text: str) -> list[LogLine]:
    """The timestamped lines of a kernel log (other lines, such as a record's heading, are
    skipped)."""
    out = []
    for line in text.splitlines():
        m = LOG_LINE.match(line)
        if m:
            level = int(m.group(1)) if m.group(1) is not None else None
            out.append(LogLine(level, float(m.group(2)), m.group(3), m.group(4)))
    return out


@dataclass(frozen=True)
class DmesgRecord:
    """A dmesg record of a dmesg zone: its header, its payload and what that decodes to."""

    zone: int
    seconds: int
    microseconds: int
    compressed: bool
    payload: bytes
    text: str | None
    problem: str | None = None

    @property
    def time(self) -> float:
        """Wall-clock seconds of the dump (the first kernel's CLOCK_REALTIME)."""
        return self.seconds + self.microseconds / 1e6

    @property
    def heading(self) -> tuple[str, int, int] | None:
        """``(reason, count, part)`` from ``Panic#1 Part1``."""
        return record_heading(self.text or "")

    @property
    def reason(self) -> str | None:
        heading = self.heading
        return heading[0] if heading else None

    @property
    def lines(self) -> list[LogLine]:
        return parse_log(self.text or "")


def record_heading(text: str) -> tuple[str, int, int] | None:
    """``(reason, count, part)`` of a record's text (``Panic#1 Part1`` first line), as the
    region holds it and as /sys/fs/pstore/dmesg-ramoops-N shows it."""
    m = RECORD_HEADING.match(text)
    return (m.group(1), int(m.group(2)), int(m.group(3))) if m else None


def inflate(payload: bytes) -> bytes:
    """pstore's compressed payload: raw deflate (no zlib header, ``-MAX_WBITS``)."""
    inflater = zlib.decompressobj(-zlib.MAX_WBITS)
    try:
        data = inflater.decompress(payload)
    except zlib.error as exc:
        raise PstoreFormatError(f"the compressed record does not inflate: {exc}") from exc
    if not inflater.eof:
        raise PstoreFormatError("the compressed record ends before its deflate stream does")
    return data


def parse_dmesg_record(zone: Zone) -> DmesgRecord | None:
    """The record a dmesg zone holds (None when it holds none); one whose header the
    kernel would reject, or whose payload does not decode, carries a ``problem``."""
    if not zone.valid or zone.empty:
        return None
    m = KMSG_HEADER.match(zone.log)
    if not m:
        return DmesgRecord(zone.spec.index, 0, 0, False, zone.log, None,
                           "no ====seconds.microseconds header (the kernel drops it)")
    compressed = m.group(3) == b"C"
    payload = zone.log[m.end():]
    problem = None
    try:
        body = inflate(payload) if compressed else payload
        text: str | None = body.decode("utf-8", errors="replace")
    except PstoreFormatError as exc:
        text, problem = None, str(exc)
    return DmesgRecord(zone.spec.index, int(m.group(1)), int(m.group(2)), compressed,
                       payload, text, problem)


@dataclass(frozen=True)
class RamoopsRegion:
    """A decoded region: every zone and the records of the dmesg zones."""

    layout: RamoopsLayout
    zones: tuple[Zone, ...]
    records: tuple[DmesgRecord, ...]

    @property
    def dmesg_zones(self) -> tuple[Zone, ...]:
        return tuple(z for z in self.zones if z.spec.kind == "dmesg")

    def records_for(self, reason: str) -> list[DmesgRecord]:
        """The records of one kmsg_dump reason (``Panic``, ``Oops``...)."""
        return [r for r in self.records if r.reason == reason]

    def summary(self) -> str:
        valid = sum(z.valid for z in self.dmesg_zones)
        lines = [f"ramoops {self.layout.mem_size:#x}@{self.layout.mem_address:#x}: "
                 f"{len(self.dmesg_zones)} dmesg zones ({valid} initialised), "
                 f"{len(self.records)} record(s)"]
        for r in self.records:
            what = r.problem or f"{r.heading}, {len(r.lines)} lines"
            lines.append(f"  dmesg-{r.zone}: {r.time:.6f} {'C' if r.compressed else 'D'} "
                         f"{len(r.payload)} bytes: {what}")
        return "\n".join(lines)


def parse_region(region: bytes, layout: RamoopsLayout) -> RamoopsRegion:
    """Decode a region read from memory (``len(region)`` at least ``mem_size``)."""
    if len(region) < layout.mem_size:
        raise PstoreFormatError(f"{len(region)} bytes read, the region has "
                                f"{layout.mem_size:#x}")
    zones = tuple(parse_zone(region, spec, layout.mem_address) for spec in layout.zones())
    records = tuple(r for z in zones if z.spec.kind == "dmesg"
                    if (r := parse_dmesg_record(z)) is not None)
    return RamoopsRegion(layout, zones, records)


def logged_after(record: Sequence[LogLine], log: Sequence[LogLine]) -> list[LogLine]:
    """The lines of ``log`` (the kernel's whole log, e.g. the dump's) newer than the
    record's last line: what the kernel logged after kmsg_dump took the record."""
    if not record:
        return list(log)
    last = record[-1].key
    keys = [line.key for line in log]
    if last not in keys:
        return list(log)
    return list(log[len(keys) - keys[::-1].index(last):])


def missing_from(record: Sequence[LogLine], log: Sequence[LogLine]) -> list[LogLine]:
    """The record's lines that ``log`` lacks: none when the record is the same kernel's
    log (same timestamps and messages)."""
    keys = {line.key for line in log}
    return [line for line in record if line.key not in keys]
