"""The topology oracle's data model: what the guest should have and what it shows.

A ``Topology`` is a JSON-serialisable snapshot.  ``expected`` snapshots come from QMP
(``query-memory-devices``, ``query-hotpluggable-cpus``, ``query-cpus-fast``); ``observed``
ones from inside the guest (``/proc/iomem``, the CPU masks in sysfs, memory block states,
the crash_hotplug sysfs files).  The verifier compares a vmcore with the observed snapshot
taken just before the panic, and uses the QMP view to name DIMMs.

Address ranges are half-open ``[start, end)`` everywhere in the harness: /proc/iomem's
inclusive ends are converted once, when parsed.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Collection, Iterable, Sequence
from dataclasses import asdict, dataclass, field, replace
from operator import attrgetter
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .cmdline import GiB

if TYPE_CHECKING:
    from .machine import Guest


@dataclass(frozen=True, order=True, slots=True)
class AddressRange:
    """A half-open physical address range ``[start, end)``.

    Slotted: a dump at the kernel's limits has 16384 of these per view, and a
    ``__dict__`` per range would triple their memory.
    """

    start: int
    end: int

    def __post_init__(self) -> None:
        if self.start < 0 or self.end < self.start:
            raise ValueError(f"bad address range [{self.start:#x}, {self.end:#x})")

    @property
    def size(self) -> int:
        return self.end - self.start

    def overlaps(self, other: AddressRange) -> bool:
        return self.start < other.end and other.start < self.end

    def __str__(self) -> str:
        return f"[{self.start:#x}-{self.end:#x})"


# The range algebra below is O(n log n): one sort, then linear sweeps over sorted, merged
# inputs.  A crash header may hold 8192 ranges (CONFIG_CRASH_MAX_MEMORY_RANGES) and the
# verifier combines several such lists, so anything quadratic costs seconds.


class _Merged(tuple[AddressRange, ...]):
    """A tuple of ranges known to be sorted, disjoint, non-adjacent and non-empty.

    Every function below returns one, and ``merge_ranges`` hands one back untouched, so
    chained set operations sort once instead of at every step.
    """

    __slots__ = ()


_SPAN = attrgetter("start", "end")


def merge_ranges(ranges: Iterable[AddressRange]) -> tuple[AddressRange, ...]:
    """Sort and merge overlapping or adjacent ranges."""
    if isinstance(ranges, _Merged):
        return ranges
    merged: list[AddressRange] = []
    for r in sorted(ranges, key=_SPAN):
        if r.start == r.end:
            continue
        if merged and r.start <= merged[-1].end:
            last = merged[-1]
            if r.end > last.end:
                merged[-1] = AddressRange(last.start, r.end)
        else:
            merged.append(r)
    return _Merged(merged)


def subtract_ranges(
    ranges: Iterable[AddressRange], holes: Iterable[AddressRange]
) -> tuple[AddressRange, ...]:
    """``ranges`` minus every byte covered by ``holes``, merged."""
    pieces = merge_ranges(ranges)
    gaps = merge_ranges(holes)
    out: list[AddressRange] = []
    first = 0           # the first hole that may still reach a later piece
    for r in pieces:
        while first < len(gaps) and gaps[first].end <= r.start:
            first += 1
        start = r.start
        k = first
        while k < len(gaps) and gaps[k].start < r.end:
            if gaps[k].start > start:
                out.append(AddressRange(start, gaps[k].start))
            start = max(start, gaps[k].end)
            k += 1
        if start == r.start:
            out.append(r)
        elif start < r.end:
            out.append(AddressRange(start, r.end))
    # Pieces of disjoint, non-adjacent inputs cut by holes stay disjoint and non-adjacent.
    return _Merged(out)


def intersect_ranges(
    a: Iterable[AddressRange], b: Iterable[AddressRange]
) -> tuple[AddressRange, ...]:
    """Bytes covered by both ``a`` and ``b``, merged."""
    xs, ys = merge_ranges(a), merge_ranges(b)
    out: list[AddressRange] = []
    i = j = 0
    while i < len(xs) and j < len(ys):
        x, y = xs[i], ys[j]
        lo, hi = max(x.start, y.start), min(x.end, y.end)
        if lo < hi:
            out.append(x if (lo, hi) == (x.start, x.end) else AddressRange(lo, hi))
        if x.end < y.end:
            i += 1
        else:
            j += 1
    return _Merged(out)


@dataclass(frozen=True)
class IomemEntry:
    """One line of /proc/iomem: its nesting depth, range and name."""

    depth: int
    range: AddressRange
    name: str


_IOMEM_LINE = re.compile(
    r"^(?P<indent> *)(?P<start>[0-9a-fA-F]+)-(?P<end>[0-9a-fA-F]+) : (?P<name>.*)$")


def parse_iomem(text: str) -> tuple[IomemEntry, ...]:
    """Parse /proc/iomem (read as root: unprivileged readers see zeroed addresses)."""
    entries = []
    for line in text.splitlines():
        m = _IOMEM_LINE.match(line.rstrip())
        if not m:
            continue
        start, end = int(m["start"], 16), int(m["end"], 16)
        entries.append(
            IomemEntry(len(m["indent"]) // 2, AddressRange(start, end + 1), m["name"].strip())
        )
    return tuple(entries)


def system_ram_ranges(entries: Sequence[IomemEntry]) -> tuple[AddressRange, ...]:
    """Every ``System RAM`` range (top-level and nested, e.g. virtio_mem), merged."""
    return merge_ranges(e.range for e in entries if e.name.startswith("System RAM"))


def crash_kernel_ranges(entries: Sequence[IomemEntry]) -> tuple[AddressRange, ...]:
    """The ``Crash kernel`` reservations (one, or a low and a high part)."""
    return merge_ranges(e.range for e in entries if e.name == "Crash kernel")


def parse_cpu_list(text: str) -> tuple[int, ...]:
    """Parse a sysfs CPU list such as ``0-3,6,8-9`` (empty string: no CPUs)."""
    cpus: list[int] = []
    text = text.strip()
    if not text:
        return ()
    for part in text.split(","):
        if "-" in part:
            lo, hi = part.split("-", 1)
            cpus.extend(range(int(lo), int(hi) + 1))
        else:
            cpus.append(int(part))
    return tuple(sorted(set(cpus)))


def format_cpu_list(cpus: Iterable[int]) -> str:
    """The inverse of ``parse_cpu_list``: ``(0, 1, 2, 5)`` -> ``0-2,5``."""
    items = sorted(set(cpus))
    parts: list[str] = []
    i = 0
    while i < len(items):
        j = i
        while j + 1 < len(items) and items[j + 1] == items[j] + 1:
            j += 1
        parts.append(str(items[i]) if i == j else f"{items[i]}-{items[j]}")
        i = j + 1
    return ",".join(parts)


@dataclass(frozen=True)
class MemoryDevice:
    """A hot-plugged memory device as QEMU reports it (``query-memory-devices``)."""

    id: str
    kind: str            # "dimm" (pc-dimm) or "virtio-mem"
    addr: int
    size: int            # for virtio-mem: the size currently plugged
    slot: int | None = None
    region_size: int | None = None      # virtio-mem: the whole device region (max-size)
    requested_size: int | None = None   # virtio-mem: what the host asked the guest to plug

    @property
    def range(self) -> AddressRange:
        return AddressRange(self.addr, self.addr + self.size)

    @property
    def extent(self) -> AddressRange:
        """The address space the device occupies: a DIMM's range, a virtio-mem region."""
        return AddressRange(self.addr, self.addr + max(self.size, self.region_size or 0))


def check_devices_disjoint(devices: Sequence[MemoryDevice]) -> None:
    """Raise ``ValueError`` naming two memory devices whose address spaces overlap.

    QEMU places every device in its own part of the device-memory region, so overlapping
    devices describe no machine: a snapshot that has them was edited or corrupted, and
    every comparison made with it would blame the kernel for the snapshot's fault.
    """
    placed = sorted((d for d in devices if d.extent.size), key=lambda d: (d.addr, d.extent.end))
    widest: MemoryDevice | None = None
    for dev in placed:
        if widest is not None and dev.addr < widest.extent.end:
            raise ValueError(f"memory devices {widest.id or '(no id)'} {widest.extent} and "
                             f"{dev.id or '(no id)'} {dev.extent} overlap")
        if widest is None or dev.extent.end > widest.extent.end:
            widest = dev


@dataclass(frozen=True)
class CpuSlot:
    """A vCPU slot from ``query-hotpluggable-cpus`` (``qom_path`` set when occupied)."""

    driver: str
    socket_id: int | None
    core_id: int | None
    thread_id: int | None
    qom_path: str | None = None
    cpu_index: int | None = None   # from query-cpus-fast, for occupied slots


@dataclass(frozen=True)
class Topology:
    """A snapshot of the machine's CPUs and memory.

    ``source`` is ``"expected"`` (QMP) or ``"observed"`` (the guest); fields a source
    cannot know are left empty / None.  ``taken_at`` is host wall-clock time (Unix seconds),
    so it can be compared with VMCOREINFO's CRASHTIME.
    """

    source: str
    taken_at: float
    kernel_release: str | None = None
    system_ram: tuple[AddressRange, ...] = ()
    crash_kernel: tuple[AddressRange, ...] = ()
    cpus_possible: tuple[int, ...] = ()
    cpus_present: tuple[int, ...] = ()
    cpus_online: tuple[int, ...] = ()
    memory_block_size: int | None = None
    memory_blocks_online: tuple[int, ...] = ()
    memory_blocks_offline: tuple[int, ...] = ()
    crash_hotplug_cpu: int | None = None
    crash_hotplug_memory: int | None = None
    memory_devices: tuple[MemoryDevice, ...] = ()
    cpu_slots: tuple[CpuSlot, ...] = ()
    boot_memory: int | None = None       # bytes of -m base memory (expected only)
    notes: tuple[str, ...] = field(default=())
    # (guest CPU number, QEMU cpu-index) pairs (observed only), read from the name of each
    # CPU's ACPI object: QEMU calls them \_SB.CPUS.Cxxx with xxx the cpu-index in hex
    # (hw/acpi/cpu.c, CPU_NAME_FMT).  This is how a guest CPU is matched to its vCPU.
    cpu_firmware_ids: tuple[tuple[int, int], ...] = ()

    def __post_init__(self) -> None:
        # Refused when built (from QMP, JSON or replace()) rather than reported by each
        # consumer: the diff and the verifier would otherwise each invent a verdict for it.
        check_devices_disjoint(self.memory_devices)

    def with_changes(self, **changes: Any) -> Topology:
        return replace(self, **changes)

    # -- JSON ---------------------------------------------------------------------------
    def to_json_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["system_ram"] = [_range_json(r) for r in self.system_ram]
        d["crash_kernel"] = [_range_json(r) for r in self.crash_kernel]
        return d

    def to_json(self) -> str:
        return json.dumps(self.to_json_dict(), indent=2, sort_keys=True)

    def save(self, path: Path) -> None:
        path.write_text(self.to_json() + "\n")

    @classmethod
    def from_json_dict(cls, d: dict[str, Any]) -> Topology:
        def ranges(items: Iterable[Any]) -> tuple[AddressRange, ...]:
            return tuple(_range_from_json(x) for x in items)

        return cls(
            source=str(d["source"]),
            taken_at=float(d["taken_at"]),
            kernel_release=d.get("kernel_release"),
            system_ram=ranges(d.get("system_ram", ())),
            crash_kernel=ranges(d.get("crash_kernel", ())),
            cpus_possible=tuple(d.get("cpus_possible", ())),
            cpus_present=tuple(d.get("cpus_present", ())),
            cpus_online=tuple(d.get("cpus_online", ())),
            memory_block_size=d.get("memory_block_size"),
            memory_blocks_online=tuple(d.get("memory_blocks_online", ())),
            memory_blocks_offline=tuple(d.get("memory_blocks_offline", ())),
            crash_hotplug_cpu=d.get("crash_hotplug_cpu"),
            crash_hotplug_memory=d.get("crash_hotplug_memory"),
            memory_devices=tuple(MemoryDevice(**m) for m in d.get("memory_devices", ())),
            cpu_slots=tuple(CpuSlot(**c) for c in d.get("cpu_slots", ())),
            boot_memory=d.get("boot_memory"),
            notes=tuple(d.get("notes", ())),
            cpu_firmware_ids=tuple((int(c), int(u)) for c, u in d.get("cpu_firmware_ids", ())),
        )

    @classmethod
    def load(cls, path: Path) -> Topology:
        return cls.from_json_dict(json.loads(path.read_text()))


def _range_json(r: AddressRange) -> dict[str, str]:
    # Hex strings: JSON readers in other languages lose precision above 2**53.
    return {"start": hex(r.start), "end": hex(r.end)}


def _range_from_json(x: Any) -> AddressRange:
    if isinstance(x, dict):
        return AddressRange(int(str(x["start"]), 0), int(str(x["end"]), 0))
    start, end = x
    return AddressRange(int(start), int(end))


# == Collection: the observed snapshot (one SSH command) ================================

#: Section markers in the output of ``observe_command``; each is followed by its content.
_SECTION = re.compile(r"^@@(\w+)$", re.MULTILINE)


def observe_command(*, crash_hotplug: bool = True) -> str:
    """The one guest shell command that prints every observed section.

    One SSH round trip instead of a dozen, and only shell builtins (``read``, ``printf``,
    globs): under TCG every fork+exec costs 10-20 ms, an SSH round trip ~70 ms.
    ``crash_hotplug=False`` skips the ``crash_hotplug`` files: reading them takes the
    crash hot-plug mutex and the kexec lock (KNOWLEDGE.md), so settle polling must not
    read them while a swarm is running or it would perturb what it measures.
    """
    s = "/sys/devices/system"
    # r FILE: print a one-line file; each: print FILE:LINE for every file of a glob.
    parts = [
        "r() { IFS= read -r v < \"$1\" && printf '%s\\n' \"$v\"; } 2>/dev/null",
        ("each() { for f in \"$@\"; do IFS= read -r v < \"$f\" && printf '%s:%s\\n' "
         "\"$f\" \"$v\"; done 2>/dev/null; }"),
        "echo @@release; r /proc/sys/kernel/osrelease",
        "echo @@iomem; while IFS= read -r l; do printf '%s\\n' \"$l\"; done < /proc/iomem",
        f"echo @@cpus_possible; r {s}/cpu/possible",
        f"echo @@cpus_present; r {s}/cpu/present",
        f"echo @@cpus_online; r {s}/cpu/online",
        f"echo @@block_size; r {s}/memory/block_size_bytes",
        f"echo @@blocks; each {s}/memory/memory*/state",
        f"echo @@cpu_firmware_ids; each {s}/cpu/cpu*/firmware_node/path",
    ]
    if crash_hotplug:
        parts += [
            f"echo @@crash_hotplug_cpu; r {s}/cpu/crash_hotplug",
            f"echo @@crash_hotplug_memory; r {s}/memory/crash_hotplug",
        ]
    parts.append("echo @@end")
    return "; ".join(parts)


def _sections(text: str) -> dict[str, str]:
    marks = list(_SECTION.finditer(text))
    out: dict[str, str] = {}
    for i, m in enumerate(marks):
        end = marks[i + 1].start() if i + 1 < len(marks) else len(text)
        out[m.group(1)] = text[m.end():end].strip("\n")
    return out


_BLOCK_STATE = re.compile(r"/memory(\d+)/state:(\S+)")
_CPU_ACPI = re.compile(r"/cpu(\d+)/firmware_node/path:\S*\.C([0-9A-Fa-f]+)\s*$", re.MULTILINE)


def _optional_int(text: str | None) -> int | None:
    text = (text or "").strip()
    return int(text) if text.isdigit() else None


def parse_observation(text: str, *, taken_at: float) -> Topology:
    """Build the observed ``Topology`` from the output of ``observe_command``."""
    sec = _sections(text)
    if "end" not in sec:
        raise ValueError("the guest's topology report is truncated (no @@end marker)")
    entries = parse_iomem(sec.get("iomem", ""))
    online: list[int] = []
    offline: list[int] = []
    for m in _BLOCK_STATE.finditer(sec.get("blocks", "")):
        (online if m.group(2) == "online" else offline).append(int(m.group(1)))
    block_size_text = sec.get("block_size", "").strip()
    ids = sorted((int(m.group(1)), int(m.group(2), 16))
                  for m in _CPU_ACPI.finditer(sec.get("cpu_firmware_ids", "")))
    return Topology(
        source="observed",
        taken_at=taken_at,
        kernel_release=sec.get("release", "").strip() or None,
        system_ram=system_ram_ranges(entries),
        crash_kernel=crash_kernel_ranges(entries),
        cpus_possible=parse_cpu_list(sec.get("cpus_possible", "")),
        cpus_present=parse_cpu_list(sec.get("cpus_present", "")),
        cpus_online=parse_cpu_list(sec.get("cpus_online", "")),
        # block_size_bytes is hexadecimal without a 0x prefix ("8000000" = 128 MiB).
        memory_block_size=int(block_size_text, 16) if block_size_text else None,
        memory_blocks_online=tuple(sorted(online)),
        memory_blocks_offline=tuple(sorted(offline)),
        crash_hotplug_cpu=_optional_int(sec.get("crash_hotplug_cpu")),
        crash_hotplug_memory=_optional_int(sec.get("crash_hotplug_memory")),
        cpu_firmware_ids=tuple(ids),
    )


def observe(guest: Guest, *, crash_hotplug: bool = True) -> Topology:
    """The guest's own view, with one SSH command (see ``observe_command``)."""
    result = guest.run(observe_command(crash_hotplug=crash_hotplug), check=True)
    return parse_observation(result.stdout, taken_at=time.time())


# == Collection: the expected snapshot (QMP) ===========================================

def expected_from_qmp(
    memory_devices: Sequence[dict[str, Any]],
    hotpluggable_cpus: Sequence[dict[str, Any]],
    cpus_fast: Sequence[dict[str, Any]],
    *,
    boot_memory: int | None,
    taken_at: float,
) -> Topology:
    """Build the expected ``Topology`` from QMP replies (pure; unit-tested without QEMU).

    ``memory_devices`` is ``query-memory-devices``, ``hotpluggable_cpus`` is
    ``query-hotpluggable-cpus`` and ``cpus_fast`` is ``query-cpus-fast``.
    """
    devices: list[MemoryDevice] = []
    for item in memory_devices:
        kind, data = item.get("type"), item.get("data", {})
        if kind == "dimm":
            devices.append(MemoryDevice(id=str(data.get("id") or ""), kind="dimm",
                                        addr=int(data["addr"]), size=int(data["size"]),
                                        slot=data.get("slot")))
        elif kind == "virtio-mem":
            devices.append(MemoryDevice(
                id=str(data.get("id") or ""), kind="virtio-mem", addr=int(data["memaddr"]),
                size=int(data["size"]), region_size=int(data["max-size"]),
                requested_size=int(data["requested-size"])))
        # nvdimm, virtio-pmem, sgx-epc...: not System RAM, not the harness's business.
    index_by_path = {str(c["qom-path"]): int(c["cpu-index"]) for c in cpus_fast}
    slots: list[CpuSlot] = []
    for item in hotpluggable_cpus:
        props = item.get("props", {})
        path = item.get("qom-path")
        slots.append(CpuSlot(
            driver=str(item.get("type", "")), socket_id=props.get("socket-id"),
            core_id=props.get("core-id"), thread_id=props.get("thread-id"),
            qom_path=str(path) if path else None,
            cpu_index=index_by_path.get(str(path)) if path else None))
    slots.sort(key=lambda s: (s.socket_id or 0, s.core_id or 0, s.thread_id or 0))
    return Topology(source="expected", taken_at=taken_at, memory_devices=tuple(devices),
                    cpu_slots=tuple(slots), boot_memory=boot_memory)


def expect(guest: Guest) -> Topology:
    """What QEMU says the machine has (three or four cheap QMP queries)."""
    qmp = guest.qmp
    memory = qmp.execute("query-memory-devices")
    hotpluggable = qmp.execute("query-hotpluggable-cpus")
    cpus = qmp.execute("query-cpus-fast")
    summary = qmp.execute("query-memory-size-summary")
    return expected_from_qmp(memory, hotpluggable, cpus,
                             boot_memory=int(summary["base-memory"]), taken_at=time.time())


def snapshot(guest: Guest, *, crash_hotplug: bool = True) -> tuple[Topology, Topology]:
    """``(expected, observed)`` now.  The panic code calls this just before a panic.

    QMP first, then the guest: both take well under a second, and the guest view is
    the one a vmcore is checked against, so it is taken last, closest to the panic.
    """
    expected = expect(guest)
    observed = observe(guest, crash_hotplug=crash_hotplug)
    return expected, observed


# == The diff ==========================================================================

def device_memory_base(boot_memory: int) -> int:
    """Where QEMU's q35 machine starts the hot-plug (device memory) region.

    QEMU's pc_q35_init keeps all of ``-m`` below 4 GiB when it is under 2.75 GiB and
    otherwise splits it at 2 GiB; the device region starts at the next 1 GiB boundary
    after the RAM above 4 GiB (hw/i386/pc.c, pc_memory_init).
    """
    above_4g = boot_memory - 0x80000000 if boot_memory >= 0xB0000000 else 0
    end = 4 * GiB + above_4g
    return (end + GiB - 1) // GiB * GiB


@dataclass(frozen=True)
class Mismatch:
    """One way the guest's view differs from QEMU's.

    ``kind`` is one of: ``memory-not-ram``, ``memory-blocks-offline``, ``virtio-mem-pending``,
    ``virtio-mem-size``, ``removed-still-ram``, ``removed-blocks-present``, ``unexpected-ram``,
    ``cpu-missing``, ``cpu-offline``, ``cpu-online-unexpected``, ``cpu-extra``, ``cpu-count``,
    ``cpu-online-count``, ``cpu-not-possible``.
    """

    kind: str
    subject: str
    detail: str

    def __str__(self) -> str:
        return f"{self.kind} {self.subject}: {self.detail}"


@dataclass(frozen=True)
class TopologyDiff:
    """Every mismatch between an expected and an observed snapshot; empty when they agree."""

    mismatches: tuple[Mismatch, ...] = ()
    expected_taken_at: float | None = None
    observed_taken_at: float | None = None

    @property
    def ok(self) -> bool:
        return not self.mismatches

    def kinds(self) -> set[str]:
        return {m.kind for m in self.mismatches}

    def summary(self) -> str:
        if self.ok:
            return "the guest shows exactly what QEMU has"
        return "\n".join(f"  - {m}" for m in self.mismatches)

    def to_json_dict(self) -> dict[str, Any]:
        return {"ok": self.ok, "mismatches": [asdict(m) for m in self.mismatches],
                "expected_taken_at": self.expected_taken_at,
                "observed_taken_at": self.observed_taken_at}


def _fmt_ranges(ranges: Iterable[AddressRange]) -> str:
    return ", ".join(str(r) for r in ranges)


def _blocks(r: AddressRange, block_size: int) -> range:
    return range(r.start // block_size, (r.end + block_size - 1) // block_size)


def _total(ranges: Iterable[AddressRange]) -> int:
    return sum(r.size for r in ranges)


def _memory_mismatches(expected: Topology, observed: Topology,
                       removed: Sequence[MemoryDevice]) -> list[Mismatch]:
    out: list[Mismatch] = []
    ram = observed.system_ram
    bs = observed.memory_block_size
    online, offline = set(observed.memory_blocks_online), set(observed.memory_blocks_offline)
    for dev in expected.memory_devices:
        if dev.kind == "dimm":
            missing = subtract_ranges([dev.range], ram)
            if missing:
                out.append(Mismatch("memory-not-ram", dev.id,
                                    f"DIMM {dev.range} is not System RAM in the guest: "
                                    f"{_fmt_ranges(missing)} missing"))
            if bs:
                bad = [b for b in _blocks(dev.range, bs) if b not in online]
                if bad:
                    states = ", ".join(f"memory{b} {'offline' if b in offline else 'absent'}"
                                       for b in bad)
                    out.append(Mismatch("memory-blocks-offline", dev.id,
                                        f"{len(bad)} of {len(_blocks(dev.range, bs))} memory "
                                        f"blocks not online: {states}"))
        elif dev.kind == "virtio-mem":
            if dev.requested_size is not None and dev.requested_size != dev.size:
                out.append(Mismatch("virtio-mem-pending", dev.id,
                                    f"requested-size {dev.requested_size:#x} but the guest has "
                                    f"plugged {dev.size:#x}"))
            region = AddressRange(dev.addr, dev.addr + (dev.region_size or dev.size))
            shown = _total(intersect_ranges([region], ram))
            if shown != dev.size:
                out.append(Mismatch("virtio-mem-size", dev.id,
                                    f"QEMU reports {dev.size:#x} plugged in {region}; the guest "
                                    f"shows {shown:#x} of it as System RAM"))
    current = [AddressRange(d.addr, d.addr + max(d.size, d.region_size or 0))
               for d in expected.memory_devices]
    for dev in removed:
        # A later device may sit where a removed one was: only the rest must be gone.
        gone = subtract_ranges([AddressRange(dev.addr, dev.addr + (dev.region_size or dev.size))],
                               current)
        still = intersect_ranges(gone, ram)
        if still:
            out.append(Mismatch("removed-still-ram", dev.id,
                                f"removed from QEMU but {_fmt_ranges(still)} is still System RAM"))
        if bs:
            left = sorted({b for r in gone for b in _blocks(r, bs) if b in online or b in offline})
            if left:
                out.append(Mismatch("removed-blocks-present", dev.id,
                                    f"memory blocks still registered: "
                                    f"{', '.join(f'memory{b}' for b in left)}"))
    if expected.boot_memory is not None:
        base = device_memory_base(expected.boot_memory)
        hot_ram = intersect_ranges(ram, [AddressRange(base, 1 << 62)])
        stray = subtract_ranges(hot_ram, current)
        # A removed device's leftovers are already reported above, once.
        stray = subtract_ranges(stray, [AddressRange(d.addr, d.addr + (d.region_size or d.size))
                                        for d in removed])
        if stray:
            out.append(Mismatch("unexpected-ram", "device-memory",
                                f"System RAM no QEMU memory device accounts for: "
                                f"{_fmt_ranges(stray)}"))
    return out


def _cpu_mismatches(expected: Topology, observed: Topology,
                    cpus_offline: Collection[int]) -> list[Mismatch]:
    out: list[Mismatch] = []
    occupied = [s for s in expected.cpu_slots if s.qom_path]
    present, online = set(observed.cpus_present), set(observed.cpus_online)
    if observed.cpus_possible:
        beyond = present - set(observed.cpus_possible)
        if beyond:
            out.append(Mismatch("cpu-not-possible", format_cpu_list(beyond),
                                "present but not in the possible mask"))
    if not occupied:
        return out
    by_index = {index: cpu for cpu, index in observed.cpu_firmware_ids}
    indexes = [s.cpu_index for s in occupied]
    if observed.cpu_firmware_ids and all(i is not None for i in indexes):
        for slot in occupied:
            assert slot.cpu_index is not None
            name = f"vCPU {slot.cpu_index} (socket {slot.socket_id}, {slot.qom_path})"
            cpu = by_index.get(slot.cpu_index)
            if cpu is None or cpu not in present:
                out.append(Mismatch("cpu-missing", name, "QEMU has it; the guest does not show "
                                                         "it present"))
            elif cpu not in online and slot.cpu_index not in cpus_offline:
                out.append(Mismatch("cpu-offline", name, f"guest cpu{cpu} is present but offline"))
            elif cpu in online and slot.cpu_index in cpus_offline:
                out.append(Mismatch("cpu-online-unexpected", name,
                                    f"guest cpu{cpu} is online but was to be left offline"))
        known = {s.cpu_index for s in occupied}
        for cpu, index in observed.cpu_firmware_ids:
            if cpu in present and index not in known:
                out.append(Mismatch("cpu-extra", f"cpu{cpu}",
                                    f"the guest shows it present (ACPI object C{index:03X}) "
                                    "but QEMU has no such vCPU"))
        return out
    # No ACPI object links (not QEMU's ACPI tables?): all that is left is to count.
    if len(present) != len(occupied):
        out.append(Mismatch("cpu-count", "cpus", f"QEMU has {len(occupied)} vCPUs; the guest "
                                                 f"shows {len(present)} present "
                                                 f"({format_cpu_list(present)})"))
    want_online = len(occupied) - len(cpus_offline)
    if len(online) != want_online:
        out.append(Mismatch("cpu-online-count", "cpus",
                            f"{want_online} vCPUs should be online; the guest shows "
                            f"{len(online)} ({format_cpu_list(online)})"))
    return out


def diff_topology(
    expected: Topology,
    observed: Topology,
    *,
    removed: Sequence[MemoryDevice] = (),
    cpus_offline: Collection[int] = (),
) -> TopologyDiff:
    """Name every mismatch between QEMU's view (``expected``) and the guest's (``observed``).

    ``removed`` lists memory devices unplugged earlier (as they were when plugged): their
    ranges must be gone from the guest.  ``cpus_offline`` holds the QEMU cpu-index of vCPUs
    deliberately left offline.
    """
    mismatches = (_memory_mismatches(expected, observed, removed)
                  + _cpu_mismatches(expected, observed, cpus_offline))
    return TopologyDiff(tuple(mismatches), expected.taken_at, observed.taken_at)
