"""The TCG gauge that heads every benchmark runs its program through real QEMU."""

from __future__ import annotations

import pytest

from harness.bench import tcg_gauge as gauge
from harness.errors import HostError
from harness.guest.accel import qemu_binary
from harness.timeouts import Timeouts


def test_the_tcg_gauge_runs_its_program_to_its_exit() -> None:
    seconds = gauge.tcg_gauge(qemu_binary(), runs=1)
    assert 0 < seconds < Timeouts.for_accel("tcg").gauge


def test_a_program_that_ends_otherwise_is_a_host_error(monkeypatch: pytest.MonkeyPatch) -> None:
    real = gauge.firmware()
    wrong = real.replace(bytes([0xB0, 0x00, 0xE6, 0xF4]), bytes([0xB0, 0x01, 0xE6, 0xF4]))
    assert wrong != real
    monkeypatch.setattr(gauge, "firmware", lambda: wrong)     # exits 3: (1 << 1) | 1
    with pytest.raises(HostError, match="exited 3, not 1"):
        gauge.tcg_gauge(qemu_binary(), runs=1)
