"""Benchmarks of snapshot-restored guests (issue 11's targets).

``bench_restore``: QEMU start to the guest running again, to SSH, to kdump-ready (its
readiness record checked), over guests restored from one snapshot.  ``bench_streams``:
verified crash cycles per hour, ``streams`` parallel streams of ``kdump-harness run`` one
after the other, cold and restored, measured in one call so both see the same host.  Each
also says the CPU time one cycle costs (the ``run`` processes and their QEMUs) and what
that allows on this host's cores: a stream count that keeps every core busy cannot beat it.
"""

from __future__ import annotations

import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from ..guest import Guest, GuestConfig
from ..settings import child_environment
from .run_evidence import BenchEvidence
from .stats import Summary, summarize


def bench_restore(image: Any, runs: int, config: GuestConfig,
                  report: Callable[[str], None], keep: Path | None = None) -> list[Summary]:
    """Restore ``runs`` guests from one snapshot (made first, not timed)."""
    config = replace(config, snapshot=True)
    restore, ssh, ready = [], [], []
    with BenchEvidence("restore", report, keep) as evidence:
        with Guest(image, config, evidence.root / "warm-up") as g:
            report(f"  snapshot {g.restored_from}")
        shutil.rmtree(evidence.root / "warm-up", ignore_errors=True)
        for i in range(1, runs + 1):
            with evidence.run(i) as run, Guest(image, config, run.workdir) as g:
                t = g.times
                run.value = t.kdump_ready
                restore.append(t.restore)
                ssh.append(t.ssh_ready)
                ready.append(t.kdump_ready)
                report(f"  run {i}: running {t.restore:.3f} s, kdump-ready "
                       f"{t.kdump_ready:.3f} s, guest clock {g.clock_offset:+.1f} s behind")
    return [summarize("restore: QEMU start to running", restore),
            summarize("restore: to SSH", ssh),
            summarize("restore to kdump-ready", ready)]


@dataclass(frozen=True)
class StreamsResult:
    """Cycles run by parallel streams in ``seconds`` of wall time."""

    label: str
    seconds: float
    results: tuple[str, ...]
    #: CPU time of every run process and its QEMU (user + system), and the cores there were.
    cpu_seconds: float = 0.0
    cores: int = 1
    #: Each run's TCG thread mode ("multi", "single"; "" when not TCG or not known).
    thread_modes: tuple[str, ...] = ()

    @property
    def verified(self) -> int:
        return sum(r in ("accurate", "stale") for r in self.results)

    @property
    def per_hour(self) -> float:
        return self.verified * 3600 / self.seconds if self.seconds else 0.0

    @property
    def cpu_per_cycle(self) -> float:
        return self.cpu_seconds / len(self.results) if self.results else 0.0

    @property
    def ceiling_per_hour(self) -> float:
        """Cycles per hour if every core did nothing but cycles at this CPU cost."""
        return self.cores * 3600 / self.cpu_per_cycle if self.cpu_per_cycle else 0.0

    def line(self) -> str:
        others = [r for r in self.results if r not in ("accurate", "stale")]
        return (f"{self.label:34} {self.per_hour:7.0f} verified cycles/hour  "
                f"({self.verified} in {self.seconds:.1f} s"
                + (f"; not verified: {', '.join(others)}" if others else "") + ")")

    def cpu_line(self) -> str:
        busy = self.cpu_seconds / self.seconds if self.seconds else 0.0
        modes = Counter(m for m in self.thread_modes if m)
        threads = ("; TCG threads " + ", ".join(f"{m} {n}" for m, n in sorted(modes.items()))
                   if modes else "")
        return (f"{'':34} {self.cpu_per_cycle:7.2f} CPU-s per cycle; {busy:.2f} of "
                f"{self.cores} cores busy; at most {self.ceiling_per_hour:.0f}/hour here"
                + threads)


def _stream(args: list[str], cycles: int, out: Path, streams: int = 1
            ) -> list[tuple[str, str]]:
    """One stream: ``kdump-harness run`` ``cycles`` times in a row, each its own process:
    each one's result and TCG thread mode.  Each run is told how many guests run at once
    (``guests_at_once``), unless the environment already says.  The evidence of a run that
    was not verified stays in ``out``."""
    env = child_environment(guests_at_once=str(streams))
    results = []
    for i in range(cycles):
        argv = [sys.executable, "-m", "harness", "run", "--json", "--out", str(out / str(i)),
                *args]
        done = subprocess.run(argv, capture_output=True, text=True, check=False, env=env)
        try:
            verdict = json.loads(done.stdout)
            threads = verdict.get("tcg_threads") or {}
            results.append((str(verdict["result"]), str(threads.get("mode") or "")))
        except (ValueError, KeyError, AttributeError):
            results.append((f"exit {done.returncode}", ""))
        if results[-1][0] in ("accurate", "stale"):
            shutil.rmtree(out / str(i), ignore_errors=True)
    return results


def bench_streams(label: str, args: list[str], cycles: int, streams: int,
                  report: Callable[[str], None]) -> StreamsResult:
    """``streams`` parallel streams of ``cycles`` runs each; wall time of them all."""
    out = Path(tempfile.mkdtemp(prefix="kh-bench-streams-"))
    # Every run process is waited for, and each waits for its QEMU: the children's usage
    # covers both (the streams are threads of this process, one phase at a time).
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.monotonic()
    with ThreadPoolExecutor(streams) as pool:
        futures = [pool.submit(_stream, args, cycles, out / f"stream{s}", streams)
                   for s in range(streams)]
        runs = [run for f in futures for run in f.result()]
    seconds = time.monotonic() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    result = StreamsResult(label, seconds, tuple(r for r, _ in runs), cpu,
                           len(os.sched_getaffinity(0)), tuple(m for _, m in runs))
    kept = sorted(str(p.parent.name + "/" + p.name) for p in out.glob("stream*/*"))
    if kept:
        report(f"  evidence of the runs not verified: {out} ({', '.join(kept)})")
    else:
        shutil.rmtree(out, ignore_errors=True)
    report(f"  {result.line()}")
    report(f"  {result.cpu_line()}")
    return result


__all__ = ["StreamsResult", "bench_restore", "bench_streams"]
