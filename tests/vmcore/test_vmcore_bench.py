"""The benchmark script still runs (its numbers are reported by hand, not asserted)."""

from __future__ import annotations

import pytest

from harness.vmcore.bench import main


def test_bench_main_smoke(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--size-gib", "6", "--cpus", "2", "--runs", "1"]) == 0
    out = capsys.readouterr().out
    assert "verify verdict on the synthetic dump: accurate" in out
    assert "inspect ELF (open_dump)" in out and "median" in out
