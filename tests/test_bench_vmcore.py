"""The benchmark script still runs (its numbers are reported by hand, not asserted)."""

from __future__ import annotations

import pytest

from harness.bench.vmcore import main, range_case
from harness.vmcore.verifier import verify


def test_bench_main_smoke(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--size-gib", "6", "--cpus", "2", "--runs", "1", "--ranges", "64"]) == 0
    out = capsys.readouterr().out
    assert "verify verdict on the synthetic dump: accurate" in out
    assert "inspect ELF (open_dump)" in out and "median" in out
    assert "verify 64 ranges, 64 DIMMs, + header" in out and "verdict accurate" in out


def test_range_case_is_accurate_and_its_ranges_disjoint() -> None:
    dump, header, topology = range_case(100, 10)
    assert len(dump.ram_ranges) == len(topology.system_ram) == 100
    assert len(topology.memory_devices) == 10
    assert verify(dump, topology, raw_header=header).accurate
