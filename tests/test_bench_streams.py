"""bench streams: cycles per hour, and what a cycle costs in CPU time on this host."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from harness.bench import snapshot as bench_snapshot
from harness.bench.snapshot import StreamsResult, bench_streams


def test_cycles_per_hour_and_the_ceiling_of_the_cores() -> None:
    result = StreamsResult("run --snapshot", 36.0, ("accurate",) * 9 + ("guest_error",),
                           cpu_seconds=70.0, cores=2)
    assert result.per_hour == pytest.approx(900)
    assert result.cpu_per_cycle == pytest.approx(7.0)
    assert result.ceiling_per_hour == pytest.approx(2 * 3600 / 7)
    assert "not verified: guest_error" in result.line()
    assert result.cpu_line().split() == ["7.00", "CPU-s", "per", "cycle;", "1.94", "of", "2",
                                         "cores", "busy;", "at", "most", "1029/hour", "here"]


def test_the_cpu_of_each_run_process_is_counted(monkeypatch: pytest.MonkeyPatch) -> None:
    def stream(args: list[str], cycles: int, out: Path,
               streams: int = 1) -> list[tuple[str, str]]:
        assert streams == 2
        for _ in range(cycles):     # a child that burns CPU, as a run's QEMU does
            subprocess.run([sys.executable, "-c", "sum(range(3_000_000))"], check=True)
        return [("accurate", "single")] * cycles

    monkeypatch.setattr(bench_snapshot, "_stream", stream)
    lines: list[str] = []
    result = bench_streams("test", [], 2, 2, lines.append)
    assert result.results == ("accurate",) * 4
    assert result.cpu_seconds > 0.05
    assert result.cores >= 1
    assert "CPU-s per cycle" in lines[-1]
    assert lines[-1].endswith("; TCG threads single 4")


def test_each_runs_thread_mode_is_read_from_its_verdict(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    outputs = iter([
        '{"result": "accurate", "tcg_threads": {"mode": "single", "reason": "2 vCPU(s) ..."}}',
        '{"result": "stale", "tcg_threads": {"mode": "multi", "reason": "0 vCPU(s) ..."}}',
        '{"result": "accurate", "tcg_threads": null}',           # KVM
        'Traceback (most recent call last):',                     # a run that broke
    ])

    def run(argv: list[str], env: dict[str, str],
            **_: object) -> subprocess.CompletedProcess[str]:
        # Each run is told how many guests run at once (tcg_threads=auto counts them).
        assert env["KDUMP_HARNESS_GUESTS_AT_ONCE"] == "2"
        return subprocess.CompletedProcess(argv, 3, stdout=next(outputs), stderr="")

    monkeypatch.delenv("KDUMP_HARNESS_GUESTS_AT_ONCE", raising=False)
    monkeypatch.setattr(bench_snapshot.subprocess, "run", run)
    runs = bench_snapshot._stream([], 4, tmp_path, streams=2)
    assert runs == [("accurate", "single"), ("stale", "multi"), ("accurate", ""),
                    ("exit 3", "")]
    result = StreamsResult("x", 10.0, tuple(r for r, _ in runs), 8.0, 2,
                           tuple(m for _, m in runs))
    assert result.cpu_line().endswith("; TCG threads multi 1, single 1")
