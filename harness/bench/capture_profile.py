"""Where a capture's time goes, from the vCPUs' instruction pointers sampled over QMP.

The console splits panic-to-capture at the capture kernel's first line only: before it,
the first kernel's crash path, purgatory and the bzImage's decompressor print nothing.
Their instruction pointers tell them apart (``rip_sampler`` samples them):

* the first kernel and the capture kernel run at kernel virtual addresses (``nokaslr`` in
  both: the same addresses, so the first kernel's ``/proc/kallsyms`` names the capture
  kernel's functions);
* purgatory and the decompressor run identity-mapped, at physical addresses inside the
  crashkernel reservation: the decompressor inside the kernel segment, purgatory in its own
  (6.8+ kernels log both segments when kexec_file_load runs with ``-d``; without them the
  two are one phase, "purgatory and decompressor");
* userspace runs at low addresses.

The panicking CPU is the one whose pointer enters the reservation; its phases only move
forward.  A phase lasts from its first sample to the next phase's first sample, so each
boundary is known to within one sampling interval.
"""

from __future__ import annotations

import bisect
import itertools
import re
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from enum import StrEnum

#: Canonical x86_64 addresses at and above this are the kernel's; below 2^47, userspace.
KERNEL_SPACE = 0xFFFF_8000_0000_0000
USER_SPACE_END = 0x0000_8000_0000_0000


class Phase(StrEnum):
    FIRST_KERNEL = "trigger to leaving first kernel"
    PURGATORY = "purgatory (digest check)"
    DECOMPRESSOR = "bzImage decompressor"
    KEXEC_CODE = "purgatory and decompressor"     # when the segments are not known
    CAPTURE_KERNEL = "capture kernel to userspace"
    CAPTURE_USERSPACE = "capture userspace"


_ORDER = (Phase.FIRST_KERNEL, Phase.PURGATORY, Phase.KEXEC_CODE, Phase.DECOMPRESSOR,
          Phase.CAPTURE_KERNEL, Phase.CAPTURE_USERSPACE)
_SEGMENT = re.compile(r"kexec-bzImage64: Loaded (purgatory|64bit kernel) at 0x([0-9a-f]+)"
                      r"(?: bufsz=0x[0-9a-f]+ memsz=0x([0-9a-f]+))?$", re.M)
_SEGMENT_SIZES = re.compile(r"kexec_file: segment\[\d+\]: .* mem=0x([0-9a-f]+) "
                            r"memsz=0x([0-9a-f]+)$", re.M)
#: kallsyms types of code: global and local text, weak symbols.
_TEXT_SYMBOL_TYPES = frozenset("tTwW")
_RIP = re.compile(r"\bRIP=([0-9a-f]{16})\b")


@dataclass(frozen=True)
class KexecLayout:
    """Where the capture kernel's code was placed in physical memory."""

    crash: tuple[int, int]                  # the crashkernel reservation, [start, end)
    kernel: tuple[int, int] | None = None   # the bzImage segment (the decompressor's)
    purgatory: int | None = None            # purgatory's segment start

    @classmethod
    def parse(cls, crashkernel: str, dmesg: str = "") -> KexecLayout:
        """From the readiness record's ``crashkernel`` ("2e000000-3dffffff,") and the
        first kernel's dmesg after a kexec_file_load with ``-d``."""
        first = crashkernel.strip().strip(",").split(",")[0]
        start, _, end = first.partition("-")
        try:
            crash = (int(start, 16), int(end, 16) + 1)
        except ValueError:
            raise ValueError(f"no crashkernel reservation in {crashkernel!r}") from None
        kernel = purgatory = None
        for m in _SEGMENT.finditer(dmesg):      # the last load is the one in place
            address = int(m.group(2), 16)
            if m.group(1) == "purgatory":
                purgatory = address
            elif m.group(3):
                kernel = (address, address + int(m.group(3), 16))
        return cls(crash, kernel, purgatory)

    def phase_of(self, rip: int) -> Phase | None:
        """The boot-chain phase of an address in the reservation (None: not in it)."""
        if not self.crash[0] <= rip < self.crash[1]:
            return None
        if self.kernel is None:
            return Phase.KEXEC_CODE
        return Phase.DECOMPRESSOR if self.kernel[0] <= rip < self.kernel[1] else Phase.PURGATORY


def hashed_bytes(dmesg: str) -> int | None:
    """Bytes purgatory hashes at the panic (None: the segments are not logged): every
    segment's memsz but purgatory's own and the ELF headers' (kexec_file.c skips both; the
    headers only with CONFIG_CRASH_HOTPLUG, which every profile's kernel has: without it
    they are hashed too, ~1 MiB).  The last load's segments are the ones in place."""
    loads = dmesg.split("kexec_file: nr_segments")
    if len(loads) < 2:
        return None
    segments = {int(mem, 16): int(size, 16) for mem, size in _SEGMENT_SIZES.findall(loads[-1])}
    skip = {int(a, 16) for a in re.findall(r"Loaded (?:ELF headers|purgatory) at 0x([0-9a-f]+)",
                                           dmesg)}
    return sum(size for mem, size in segments.items() if mem not in skip) or None


@dataclass(frozen=True)
class RipSample:
    t: float                    # host monotonic seconds
    rips: tuple[int, ...]       # one per vCPU, in QEMU's CPU order


def parse_rips(info_registers: str) -> tuple[int, ...]:
    """Every vCPU's RIP from HMP ``info registers -a``."""
    return tuple(int(r, 16) for r in _RIP.findall(info_registers))


@dataclass(frozen=True)
class RunProfile:
    """One panic's phases (seconds) and the capture kernel's sampled addresses."""

    phases: dict[Phase, float]
    capture_kernel_rips: tuple[int, ...]
    cpu: int | None             # the panicking vCPU; None: none entered the reservation

    def line(self) -> str:
        if self.cpu is None:
            return "no vCPU entered the crashkernel reservation"
        return ", ".join(f"{p.name.lower().replace('_', ' ')} {s:.2f} s"
                         for p, s in self.phases.items())


def profile_run(samples: Sequence[RipSample], start: float, layout: KexecLayout) -> RunProfile:
    """The phases of the panic that began at ``start`` (the trigger), ending at the
    capture's userspace (its duration is not measured: the sampling stops with QEMU)."""
    samples = [s for s in samples if s.t >= start]
    cpu = _panicking_cpu(samples, layout)
    if cpu is None:
        return RunProfile({}, (), None)
    firsts: dict[Phase, float] = {Phase.FIRST_KERNEL: start}
    kernel_rips: list[int] = []
    phase = Phase.FIRST_KERNEL
    for sample in samples:
        if cpu >= len(sample.rips):
            continue
        rip = sample.rips[cpu]
        phase = _next_phase(phase, rip, layout)
        firsts.setdefault(phase, sample.t)
        if phase is Phase.CAPTURE_KERNEL and rip >= KERNEL_SPACE:
            kernel_rips.append(rip)
    seen = [p for p in _ORDER if p in firsts]
    phases = {p: firsts[q] - firsts[p] for p, q in itertools.pairwise(seen)}
    return RunProfile(phases, tuple(kernel_rips), cpu)


def _panicking_cpu(samples: Iterable[RipSample], layout: KexecLayout) -> int | None:
    for sample in samples:
        for cpu, rip in enumerate(sample.rips):
            if layout.phase_of(rip) is not None:
                return cpu
    return None


def _next_phase(phase: Phase, rip: int, layout: KexecLayout) -> Phase:
    """Forward only: the chain never goes back to an earlier phase."""
    if _ORDER.index(phase) >= _ORDER.index(Phase.CAPTURE_KERNEL):
        user = rip < USER_SPACE_END and layout.phase_of(rip) is None
        return Phase.CAPTURE_USERSPACE if user or phase is Phase.CAPTURE_USERSPACE else phase
    in_chain = layout.phase_of(rip)
    if in_chain is not None:
        return in_chain if _ORDER.index(in_chain) >= _ORDER.index(phase) else phase
    if phase is Phase.FIRST_KERNEL:
        return phase
    return Phase.CAPTURE_KERNEL if rip >= KERNEL_SPACE else phase


class Symbols:
    """Function names for kernel addresses, from ``/proc/kallsyms``."""

    def __init__(self, entries: Iterable[tuple[int, str]]) -> None:
        pairs = sorted(entries)
        self._addresses = [a for a, _ in pairs]
        self._names = [n for _, n in pairs]

    @classmethod
    def from_kallsyms(cls, text: str) -> Symbols:
        """Text symbols only; all-zero addresses (``kptr_restrict``) give none."""
        entries = []
        for line in text.splitlines():
            fields = line.split()
            if len(fields) >= 3 and fields[1] in _TEXT_SYMBOL_TYPES:
                address = int(fields[0], 16)
                if address:
                    entries.append((address, fields[2]))
        return cls(entries)

    def __len__(self) -> int:
        return len(self._addresses)

    def name(self, address: int) -> str:
        i = bisect.bisect_right(self._addresses, address) - 1
        return self._names[i] if i >= 0 else f"{address:#x}"


def top_functions(rips: Iterable[int], symbols: Symbols,
                  count: int = 15) -> list[tuple[str, float]]:
    """The functions most sampled, with their share of all samples (0..1)."""
    names = Counter(symbols.name(rip) for rip in rips)
    total = sum(names.values())
    return [(name, n / total) for name, n in names.most_common(count)] if total else []


__all__ = ["KexecLayout", "Phase", "RipSample", "RunProfile", "Symbols", "hashed_bytes",
           "parse_rips", "profile_run", "top_functions"]
