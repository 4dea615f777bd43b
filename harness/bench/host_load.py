"""What the host did while a benchmark ran: so a slow run or a slow day can be explained.

Two measures, both printed by the benchmarks with their numbers:

* ``HostLoad``: the host's counters over one run, from ``/proc``.  CPU wait (pressure
  stall information, "some": time any task waited for a core), I/O and memory wait (the
  same for I/O and reclaim), steal (time the hypervisor gave this machine's vCPUs to
  others), and pages faulted back in after they were dropped (major faults, working-set
  refaults: on this host DAMON pages out what sat idle for a minute).  Each is ``None``
  where the host kernel does not say (no PSI before 4.20, or ``psi=0``).
* ``gauge_line``: the TCG gauge (``tcg_gauge``), with the host's CPU count and load, for
  the first line of every benchmark.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, fields
from pathlib import Path

from .tcg_gauge import tcg_gauge

_PAGE = 4096


@dataclass(frozen=True)
class HostCounters:
    """Cumulative counters of the host at one moment (``None``: not available here)."""

    cpu_wait: float | None = None       # seconds, PSI cpu "some" total
    io_wait: float | None = None        # seconds, PSI io "some" total
    memory_wait: float | None = None    # seconds, PSI memory "some" total
    steal: float | None = None          # seconds, /proc/stat steal, all CPUs
    major_faults: int | None = None     # /proc/vmstat pgmajfault
    refaults: int | None = None         # pages, workingset_refault_{anon,file}

    @classmethod
    def read(cls, proc: Path = Path("/proc")) -> HostCounters:
        vmstat = _vmstat(proc / "vmstat")
        refaults = [vmstat[k] for k in ("workingset_refault_anon", "workingset_refault_file")
                    if k in vmstat]
        return cls(cpu_wait=_psi_some(proc / "pressure" / "cpu"),
                   io_wait=_psi_some(proc / "pressure" / "io"),
                   memory_wait=_psi_some(proc / "pressure" / "memory"),
                   steal=_steal(proc / "stat"),
                   major_faults=vmstat.get("pgmajfault"),
                   refaults=sum(refaults) if refaults else None)


@dataclass(frozen=True)
class HostLoad:
    """The host's counters over ``seconds`` of one benchmark run."""

    seconds: float
    cpu_wait: float | None = None
    io_wait: float | None = None
    memory_wait: float | None = None
    steal: float | None = None
    major_faults: int | None = None
    refaults: int | None = None

    @classmethod
    def between(cls, before: HostCounters, after: HostCounters, seconds: float) -> HostLoad:
        deltas: dict[str, float | int | None] = {}
        for f in fields(HostCounters):
            a, b = getattr(before, f.name), getattr(after, f.name)
            deltas[f.name] = None if a is None or b is None else b - a
        return cls(seconds, **deltas)  # type: ignore[arg-type]

    def text(self) -> str:
        """One line, only what the host reports: ``steal 0.00 s, CPU wait 1.20 s, ...``."""
        parts = [f"{label} {value:.2f} s" for label, value in (
            ("steal", self.steal), ("CPU wait", self.cpu_wait), ("I/O wait", self.io_wait),
            ("memory wait", self.memory_wait)) if value is not None]
        if self.refaults is not None:
            parts.append(f"{self.refaults * _PAGE / (1 << 20):.0f} MiB refaulted")
        if self.major_faults is not None:
            parts.append(f"{self.major_faults} major faults")
        return ", ".join(parts) or "no host counters here"

    def as_dict(self) -> dict[str, float | int | None]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


class HostLoadMeter:
    """``with HostLoadMeter() as m: ...`` then ``m.load``: the host over the block."""

    def __init__(self, proc: Path = Path("/proc")) -> None:
        self._proc = proc
        self._before = HostCounters()
        self._started = 0.0
        self.load: HostLoad | None = None

    def __enter__(self) -> HostLoadMeter:
        self._before = HostCounters.read(self._proc)
        self._started = time.monotonic()
        return self

    def __exit__(self, *_: object) -> None:
        self.load = HostLoad.between(self._before, HostCounters.read(self._proc),
                                     time.monotonic() - self._started)


def gauge_line(binary: str) -> str:
    """The benchmark's first line: how fast TCG runs on this host now, and its load."""
    return (f"host: TCG gauge {tcg_gauge(binary):.3f} s (a fixed guest program: compare "
            f"numbers taken when it read alike), {os.cpu_count()} CPUs, load {_loadavg()}")


def _psi_some(path: Path) -> float | None:
    """The "some" line's ``total=`` (microseconds) in seconds."""
    try:
        for line in path.read_text().splitlines():
            if line.startswith("some "):
                total = dict(kv.split("=", 1) for kv in line.split()[1:])["total"]
                return int(total) / 1e6
    except (OSError, ValueError, KeyError):
        return None
    return None


def _steal(path: Path) -> float | None:
    """The aggregate ``cpu`` line's 8th value (USER_HZ ticks) in seconds."""
    try:
        first = path.read_text().splitlines()[0].split()
        return int(first[8]) / os.sysconf("SC_CLK_TCK") if first[0] == "cpu" else None
    except (OSError, ValueError, IndexError):
        return None


def _vmstat(path: Path) -> dict[str, int]:
    try:
        pairs = (line.split() for line in path.read_text().splitlines())
        return {p[0]: int(p[1]) for p in pairs if len(p) == 2 and p[1].isdigit()}
    except OSError:
        return {}


def _loadavg() -> str:
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "?"


__all__ = ["HostCounters", "HostLoad", "HostLoadMeter", "gauge_line"]
