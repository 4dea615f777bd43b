"""The live elfcorehdr audit against real guests: no crash needed."""

from __future__ import annotations

import pytest

from harness.hotplug import SwarmOptions, SwarmSpec, build_plan, run_swarm
from harness.live_audit import audit, read_phys
from harness.vmcore import find_elfcorehdr

pytestmark = pytest.mark.guest

MiB = 1 << 20


@pytest.mark.profile("trixie")
def test_live_header_follows_every_wave_on_trixie(make_guest) -> None:
    guest = make_guest("trixie")
    first = audit(guest)
    assert first.location.source == "kernel log", "6.8+ logs 'Loaded ELF headers at' with -d"
    assert first.report.verdict.value == "accurate", first.report.to_text()
    for wave in range(2):
        plan = build_plan(SwarmSpec(dimms=(256 * MiB,) * 2, cpus=1, prefix=f"w{wave}-"))
        result = run_swarm(guest, plan)
        result.check()
        live = audit(guest, location=first.location)
        assert live.report.verdict.value == "accurate", live.report.to_text()
        # The header now describes the new DIMMs' RAM.
        assert any(r.start >= 0x100000000 for r in live.topology.system_ram)


@pytest.mark.profile("bookworm")
def test_live_header_goes_stale_on_6_1_without_updates(make_guest) -> None:
    guest = make_guest("bookworm", memhp_default_state="online")
    before = audit(guest)
    # Scanning the crashkernel region (for kernels that log no address) finds the same header.
    scanned = find_elfcorehdr(lambda a, n: read_phys(guest, a, n), before.topology.crash_kernel)
    assert scanned == before.location.addr
    assert before.report.verdict.value == "accurate", before.report.to_text()
    run_swarm(guest, build_plan(SwarmSpec(dimms=(256 * MiB,) * 2)),
              options=SwarmOptions(update="none")).check()
    after = audit(guest, location=before.location)
    assert after.report.verdict.value == "stale"
    assert "ram-not-in-dump" in after.report.codes()
