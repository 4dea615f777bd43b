"""The panic -> capture userspace phases, from a console log and a capture dmesg."""

from __future__ import annotations

import pytest

from harness.bench.capture_phases import capture_phases

# Trimmed from a real trixie run: the first kernel's replayed banner must not count, and
# the capture kernel's early lines arrive together once its console is registered.
CONSOLE = """\
[host   1.000000] [    0.000000] Linux version 6.12.117+deb13-cloud-amd64 (first kernel)
[host   3.268246] [    3.152881] Kernel panic - not syncing: sysrq triggered crash
[host   3.275270] [    3.160364]  </TASK>
[host   4.937127] [    0.000000] Linux version 6.12.117+deb13-cloud-amd64 (capture kernel)
[host   4.937891] [    0.072008] Kernel command line: elfcorehdr=0x2e000000 console=ttyS0
[host   4.938220] [    0.368653] Spurious LAPIC timer interrupt on cpu 0
[host   5.428742] [    0.858028] Failed to access perfctr msr (MSR c0010007 is 0)
[host   6.835952] HARNESS: capture-start mode=headers uptime=2.20 elfcorehdr=0x2e000000
"""
DMESG = "[    2.048061] Run /init as init process\n[    2.048100]   with arguments:\n"


def test_phases_from_console_and_dmesg() -> None:
    p = capture_phases(CONSOLE, DMESG)
    # Clock zero: the smallest arrival - printk time (4.938220 - 0.368653).
    assert p.to_kernel == pytest.approx(4.938220 - 0.368653 - 3.268246)
    assert p.to_init == pytest.approx(2.048061)
    assert p.to_capture_start == pytest.approx(2.20 - 2.048061)


def test_missing_evidence_gives_none() -> None:
    no_dmesg = capture_phases(CONSOLE, None)
    assert no_dmesg.to_kernel is not None
    assert no_dmesg.to_init is None and no_dmesg.to_capture_start is None
    no_capture = capture_phases(CONSOLE.split("[host   4.937127]")[0], DMESG)
    assert no_capture.to_kernel is None and no_capture.to_capture_start is None
