"""Benchmarks of the guest phases: boot, kdump load, panic to capture, the whole job.

Benchmarks print median and spread over several runs; they are not timed tests.  Targets
come from the issues and are shown next to each number.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..crash import panic_and_capture
from ..guest import Guest, GuestConfig
from .capture_phases import CapturePhases, capture_phases
from .run_evidence import BenchEvidence
from .stats import Summary, summarize


def bench_boot(image: Any, runs: int, config: GuestConfig,
               report: Callable[[str], None], keep: Path | None = None) -> list[Summary]:
    """Boot to userspace, kdump load (in the guest), boot to kdump-ready."""
    userspace, ssh, load, ready = [], [], [], []
    with BenchEvidence("boot", report, keep) as evidence:
        for i in range(1, runs + 1):
            with evidence.run(i) as run, Guest(image, config, run.workdir) as g:
                t = g.times
                run.value = t.kdump_ready
                userspace.append(t.userspace)
                ssh.append(t.ssh_ready)
                load.append(t.guest_kdump_load)
                ready.append(t.kdump_ready)
                report(f"  run {i}: userspace {t.userspace:.2f} s, kdump-ready "
                       f"{t.kdump_ready:.2f} s ({g.accel.name})")
    return [summarize("boot to userspace", userspace), summarize("boot to SSH", ssh),
            summarize("kdump load (in guest)", load),
            summarize("boot to kdump-ready", ready)]


def bench_crash(image: Any, runs: int, config: GuestConfig, trigger: str,
                report: Callable[[str], None], keep: Path | None = None) -> list[Summary]:
    """Panic to capture-kernel userspace (and its phases), dump written, collected."""
    to_capture, written, collected, total = [], [], [], []
    phases: list[CapturePhases] = []
    with BenchEvidence("crash", report, keep) as evidence:
        for i in range(1, runs + 1):
            with evidence.run(i) as run, Guest(image, config, run.workdir) as g:
                started = time.monotonic()
                r = panic_and_capture(g, trigger=trigger, out=run.workdir)
                if not r.captured:
                    report(f"  run {i}: {r.outcome.value}: {r.reason}")
                    continue
                run.value = r.times.capture_userspace
                to_capture.append(r.times.capture_userspace)
                written.append(r.times.dump_written)
                collected.append(r.times.collected)
                total.append(time.monotonic() - started)
                phases.append(_phases(run.workdir, r.files.get("capture_dmesg")))
                report(f"  run {i}: panic->capture {r.times.capture_userspace:.2f} s "
                       f"({_fmt_phases(phases[-1])}), written {r.times.dump_written:.2f} s, "
                       f"collected {r.times.collected:.2f} s")
    mode = config.capture_mode
    return [summarize("panic to capture userspace", to_capture),
            summarize("  panic to capture kernel", [p.to_kernel for p in phases]),
            summarize("  capture kernel to /init", [p.to_init for p in phases]),
            summarize("  /init to capture-start", [p.to_capture_start for p in phases]),
            summarize(f"dump written ({mode})", written),
            summarize("written to collected on host", collected),
            summarize("trigger to collected", total)]


def _phases(workdir: Path, dmesg: str | None) -> CapturePhases:
    console = workdir / "console.log"
    if not console.exists():
        return CapturePhases()
    return capture_phases(console.read_text(errors="replace"),
                          Path(dmesg).read_text(errors="replace") if dmesg else None)


def _fmt_phases(p: CapturePhases) -> str:
    def fmt(value: float | None) -> str:
        return "?" if value is None else f"{value:.2f}"
    return (f"to kernel {fmt(p.to_kernel)}, to /init {fmt(p.to_init)}, "
            f"userspace {fmt(p.to_capture_start)}")
