"""``bench profile``: where panic-to-capture goes, by phase and by capture-kernel function.

A thread asks QEMU for every vCPU's registers (HMP ``info registers -a``) every few
milliseconds while the guest panics and boots its capture kernel; ``capture_profile``
turns the samples into phases (first kernel, purgatory, decompressor, capture kernel) and
the capture kernel's most sampled functions.  Each request takes QEMU's big lock
for a moment; at 3 ms the phases here (QEMU 10.0, TCG) summed to 3.46 s while `bench crash`
measured 3.89 s panic to capture in the same hour, so the sampling costs the guest less
than the runs vary.  The phase boundaries are known to within one interval.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

from ..crash import panic_and_capture
from ..errors import LostVMError, QmpError
from ..guest import Guest, GuestConfig
from ..guest.qmp import Qmp
from .capture_profile import (
    KexecLayout,
    Phase,
    RipSample,
    RunProfile,
    Symbols,
    hashed_bytes,
    parse_rips,
    profile_run,
    top_functions,
)
from .run_evidence import BenchEvidence
from .stats import Summary, summarize

#: Seconds between samples (each takes QEMU ~1-3 ms to answer under TCG).
INTERVAL = 0.003


class RipSampler:
    """``with RipSampler(guest.qmp) as sampler:`` samples until the block ends or QEMU
    goes away (the capture ends in QEMU's exit)."""

    def __init__(self, qmp: Qmp, interval: float = INTERVAL, timeout: float = 5.0) -> None:
        self.samples: list[RipSample] = []
        self._qmp = qmp
        self._interval = interval
        self._timeout = timeout
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, name="rip-sampler", daemon=True)

    def __enter__(self) -> RipSampler:
        self._qmp.transcript.record("note", f"sampling RIPs every {self._interval * 1000:g} "
                                            "ms (info registers -a, not recorded)")
        self._thread.start()
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 tb: TracebackType | None) -> None:
        self._stop.set()
        self._thread.join(self._timeout + 1.0)

    def _sample(self) -> None:
        while not self._stop.is_set():
            t = time.monotonic()
            try:
                text = self._qmp.hmp("info registers -a", timeout=self._timeout, record=False)
            except (LostVMError, QmpError):
                return          # QEMU is gone or busy ending: the capture is over
            self.samples.append(RipSample(t, parse_rips(text)))
            self._stop.wait(self._interval)


@dataclass(frozen=True)
class ProfileReport:
    rows: list[Summary]
    functions: list[tuple[str, float]]
    samples: int


def bench_profile(image: Any, runs: int, config: GuestConfig, trigger: str,
                  report: Callable[[str], None], keep: Path | None = None) -> ProfileReport:
    """Panic ``runs`` guests with their instruction pointers sampled; phases and the
    capture kernel's most sampled functions over all runs."""
    profiles: list[RunProfile] = []
    symbols: Symbols | None = None
    hashed: int | None = None
    with BenchEvidence("profile", report, keep) as evidence:
        for i in range(1, runs + 1):
            with evidence.run(i) as run, Guest(image, config, run.workdir) as g:
                dmesg = g.run("dmesg", check=True).stdout
                layout = KexecLayout.parse(g.readiness.get("crashkernel"), dmesg)
                hashed = hashed_bytes(dmesg) or hashed
                if symbols is None:
                    symbols = Symbols.from_kallsyms(g.run("cat /proc/kallsyms", check=True,
                                                          timeout=120).stdout)
                with RipSampler(g.qmp) as sampler:
                    start = time.monotonic()
                    result = panic_and_capture(g, trigger=trigger, out=run.workdir)
                profile = profile_run(sampler.samples, start, layout)
                run.value = sum(profile.phases.values()) or None
                report(f"  run {i}: {profile.line()} ({len(sampler.samples)} samples; "
                       f"{result.outcome.value})")
                if profile.cpu is not None:
                    profiles.append(profile)
    rows = [summarize(_row_name(phase, hashed), [p.phases.get(phase) for p in profiles])
            for phase in Phase if phase is not Phase.CAPTURE_USERSPACE
            and any(phase in p.phases for p in profiles)]
    rips = [rip for p in profiles for rip in p.capture_kernel_rips]
    functions = top_functions(rips, symbols) if symbols is not None and len(symbols) else []
    return ProfileReport(rows, functions, len(rips))


def _row_name(phase: Phase, hashed: int | None) -> str:
    if phase is Phase.PURGATORY and hashed:
        return f"{phase.value}, {hashed / 2**20:.1f} MiB"
    return phase.value


__all__ = ["INTERVAL", "ProfileReport", "RipSampler", "bench_profile"]
