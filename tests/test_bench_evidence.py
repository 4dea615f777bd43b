"""Benchmarks say what the host did, and keep the evidence of the runs worth a look."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import pytest

from harness.bench.host_load import HostCounters, HostLoad, HostLoadMeter
from harness.bench.run_evidence import BenchEvidence, outliers


def _fake_proc(root: Path, *, cpu: int, io: int, steal: int, majflt: int,
               refault: int, psi: bool = True) -> Path:
    if psi:
        (root / "pressure").mkdir(parents=True, exist_ok=True)
        for name, total in (("cpu", cpu), ("io", io), ("memory", 0)):
            (root / "pressure" / name).write_text(
                f"some avg10=0.00 avg60=0.00 avg300=0.00 total={total}\n"
                "full avg10=0.00 avg60=0.00 avg300=0.00 total=0\n")
    (root / "stat").write_text(f"cpu  100 0 50 900 10 0 1 {steal} 0 0\ncpu0 1 2 3 4\n")
    (root / "vmstat").write_text(f"nr_free_pages 12\npgmajfault {majflt}\n"
                                 f"workingset_refault_anon 0\n"
                                 f"workingset_refault_file {refault}\n")
    return root


def test_the_host_counters_over_a_run_come_from_proc(tmp_path: Path) -> None:
    tick = os.sysconf("SC_CLK_TCK")
    before = HostCounters.read(_fake_proc(tmp_path, cpu=1_000_000, io=5, steal=0,
                                          majflt=10, refault=100))
    after = HostCounters.read(_fake_proc(tmp_path, cpu=3_500_000, io=140_005,
                                         steal=2 * tick, majflt=25, refault=100 + 22_528))
    load = HostLoad.between(before, after, 6.0)
    assert load.cpu_wait == pytest.approx(2.5)
    assert load.io_wait == pytest.approx(0.14)
    assert load.memory_wait == 0
    assert load.steal == pytest.approx(2.0)
    assert (load.major_faults, load.refaults) == (15, 22_528)
    assert load.text() == ("steal 2.00 s, CPU wait 2.50 s, I/O wait 0.14 s, memory wait "
                           "0.00 s, 88 MiB refaulted, 15 major faults")


def test_a_host_without_pressure_information_says_only_what_it_has(tmp_path: Path) -> None:
    proc = _fake_proc(tmp_path, cpu=0, io=0, steal=0, majflt=1, refault=0, psi=False)
    load = HostLoad.between(HostCounters.read(proc), HostCounters.read(proc), 1.0)
    assert load.cpu_wait is None and load.io_wait is None
    assert "CPU wait" not in load.text() and load.text().startswith("steal 0.00 s")
    empty = tmp_path / "nothing"
    assert HostLoad.between(HostCounters.read(empty), HostCounters.read(empty),
                            1.0).text() == "no host counters here"


def test_the_meter_reads_this_host() -> None:
    with HostLoadMeter() as meter:
        sum(range(200_000))
    assert meter.load is not None and meter.load.seconds > 0
    assert meter.load.major_faults is not None      # every Linux has /proc/vmstat


@pytest.mark.parametrize("values, expected", [
    ([5.1, 5.4, 12.1, 5.2], [2]),          # the 12.1 s boot among 5.1-5.4 s ones
    ([5.1, None, 5.2], [1]),               # a run that gave no measure
    ([5.0, 7.4, 5.1], []),                 # slower, under 1.5x the median
    ([5.0, 7.5, 5.0], [1]),                # exactly 1.5x
    ([9.0], []),                           # nothing to compare with
    ([None], [0]),
    ([], []),
])
def test_outliers_are_runs_far_above_the_median_or_without_a_measure(
        values: list[float | None], expected: list[int]) -> None:
    assert outliers(values) == expected


def _runs(evidence: BenchEvidence, values: list[float | None]) -> None:
    for i, value in enumerate(values, 1):
        with evidence.run(i) as run:
            run.workdir.mkdir()
            (run.workdir / "console.log").write_text("boot\n")
            run.value = value


def test_only_the_outliers_keep_their_evidence(tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))   # mkdtemp caches TMPDIR
    lines: list[str] = []
    with BenchEvidence("boot", lines.append) as evidence:
        _runs(evidence, [5.2, 11.7, 5.0, 5.4])
    root = evidence.root
    assert root.parent == tmp_path
    assert sorted(p.name for p in root.iterdir()) == ["run-2"]
    record = json.loads((root / "run-2" / "host-load.json").read_text())
    assert record["value"] == 11.7 and "steal" in record and "cpu_wait" in record
    assert (root / "run-2" / "console.log").exists()
    assert len(lines) == 1 and lines[0].startswith(
        "  run 2 kept: 11.70 s, 2.2x the median 5.30 s; host: ")
    assert lines[0].endswith(f"evidence in {root / 'run-2'}")


def test_ordinary_runs_leave_nothing_behind(tmp_path: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))   # mkdtemp caches TMPDIR
    lines: list[str] = []
    with BenchEvidence("crash", lines.append) as evidence:
        _runs(evidence, [3.0, 3.1, 2.9])
    assert not evidence.root.exists() and lines == [] and not list(tmp_path.iterdir())


def test_keep_keeps_every_run(tmp_path: Path) -> None:
    lines: list[str] = []
    with BenchEvidence("run", lines.append, keep=tmp_path / "kept") as evidence:
        _runs(evidence, [3.0, 3.1, None])
    assert sorted(p.name for p in (tmp_path / "kept").iterdir()) == ["run-1", "run-2", "run-3"]
    assert lines[0].startswith("  run 3 kept: no measure; host: ")
    assert lines[-1] == f"  evidence of every run in {tmp_path / 'kept'}"


def test_a_run_that_raised_keeps_the_whole_directory(tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))   # mkdtemp caches TMPDIR
    lines: list[str] = []
    with pytest.raises(RuntimeError), BenchEvidence("boot", lines.append) as evidence:
        _runs(evidence, [5.0])
        with evidence.run(2) as run:
            run.workdir.mkdir()
            raise RuntimeError("QEMU exited")
    assert evidence.root.parent == tmp_path
    assert sorted(p.name for p in evidence.root.iterdir()) == ["run-1", "run-2"]
    assert lines[0].startswith("  run 2 kept: RuntimeError: QEMU exited; host: ")
    assert json.loads((evidence.root / "run-2" / "host-load.json").read_text())[
        "failed"] == "RuntimeError: QEMU exited"
