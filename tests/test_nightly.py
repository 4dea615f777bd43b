"""The nightly matrix's report, from rows as ``ci/nightly.py`` collects them (no QEMU)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType, SimpleNamespace
from typing import Any

import pytest


@pytest.fixture
def nightly(monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    path = Path(__file__).parents[1] / "ci" / "nightly.py"
    spec = importlib.util.spec_from_file_location("nightly", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "nightly", module)
    spec.loader.exec_module(module)
    monkeypatch.setattr(module, "qemu_version", lambda: (7, 2, 22))
    return module


def row(cell: str, result: str, expected: str, **extra: Any) -> dict[str, Any]:
    base = {"cell": cell, "result": result, "expected": expected,
            "passed": result == expected, "accel": "tcg", "seconds": 14.2,
            "times": {"boot_to_kdump_ready": 4.1, "panic_to_capture": 4.4},
            "trylock_failures": 0, "boot_faults": [], "reason": "", "evidence": f"out/{cell}"}
    base.update(extra)
    return base


def test_report_names_versions_failures_and_retried_boots(nightly: ModuleType) -> None:
    image = SimpleNamespace(kernel_release="6.12.117+deb13-cloud-amd64",
                            drift_summary=lambda: "")
    drifted = SimpleNamespace(kernel_release="7.2.14+deb14-cloud-amd64",
                              drift_summary=lambda: "sid/cloud differs: libc6 2.43-7 -> 2.43-8")
    rows = [row("trixie-burst-sysrq-file", "accurate", "accurate"),
            row("sid-burst-nmi-file", "kdump_did_not_occur", "accurate",
                reason="the kexec lock was held at the panic",
                boot_faults=["boot attempt 1 ended by a known emulator fault (stale-int3)"])]
    text = nightly.render_markdown(rows, {"trixie": image, "sid": drifted}, "2026-12-02")
    assert "QEMU 7.2.22 (tcg). **1 of 2 cells passed.**" in text
    assert "| trixie | 6.12.117+deb13-cloud-amd64 | as locked |" in text
    assert "libc6 2.43-7 -> 2.43-8" in text
    assert "| trixie-burst-sysrq-file | ✔ accurate | accurate | 0 | 4.1 | - | 4.4 |" in text
    assert ("- **sid-burst-nmi-file**: kdump_did_not_occur (expected accurate): the kexec "
            "lock was held at the panic") in text
    assert "evidence: `out/sid-burst-nmi-file`" in text
    assert "- sid-burst-nmi-file: boot attempt 1 ended by a known emulator fault" in text
