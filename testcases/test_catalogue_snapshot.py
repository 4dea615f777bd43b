"""Snapshot-restored guests against cold ones: the same scenario, the same verdict.

Each scenario runs twice in one test, cold (boot, load kdump) and restored from the
snapshot of the same guest taken kdump-ready (``snapshot=True``; the snapshot is made on
first use and cached, keyed by image, configuration, QEMU and accelerator).  Both must end
in the same result with the same finding codes (but for which CPU an NMI found busy): a
restored guest must not hide a kernel behaviour a cold one shows, nor invent one.  Then
what a restored guest keeps from its snapshot is checked: its clock (the harness reads its
offset; CRASHTIME still lands in the panic window) and its random state (two guests
restored from one snapshot part ways).
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest

from harness.api import JobResult
from harness.guest.snapshot import USED_FILE, last_used
from harness.plugin.scenario import Scenario
from harness.results import Result

pytestmark = [pytest.mark.guest, pytest.mark.kh(snapshot="off")]


#: Which CPU an NMI caught busy depends on the moment, cold or restored alike (seen:
#: ``panic-cpu`` in one run, ``no-busy-cpu-note`` in the next): not compared.
INCIDENTAL = {"panic-cpu", "panic-cpu-idle", "panic-cpu-unknown", "no-busy-cpu-note"}


def codes(job: JobResult) -> set[str]:
    assert job.report is not None, f"{job.result.value}: {job.reason}"
    return {f.code.value for f in job.report.findings} - INCIDENTAL


def cold_and_restored(kdump: Scenario, profile: str, **run: Any) -> tuple[JobResult, JobResult]:
    cold = kdump.run(profile, **run)
    restored = kdump.run(profile, snapshot=True, **run)
    assert cold.snapshot is None and restored.snapshot is not None
    assert restored.times.get("restore") is not None
    assert restored.times.get("boot_to_userspace") is None, "a restored guest does not boot"
    return cold, restored


def assert_same(cold: JobResult, restored: JobResult) -> None:
    assert (cold.result, codes(cold)) == (restored.result, codes(restored)), (
        f"cold: {cold.result.value} {sorted(codes(cold))}\n"
        f"restored: {restored.result.value} {sorted(codes(restored))}: {restored.reason}")


@pytest.mark.profile("trixie")
def test_a_dimm_burst_is_accurate_cold_and_restored(kdump: Scenario) -> None:
    started = time.time()
    cold, restored = cold_and_restored(kdump, "trixie", dimms="8x256M", add_cpus=2)
    assert cold.result is Result.ACCURATE, cold.reason
    assert_same(cold, restored)
    # The restored guest's clock is the snapshot's: CRASHTIME fell in the panic window
    # only because the harness took the offset it read after the restore into account.
    assert "crashtime-in-window" in codes(restored)
    assert restored.run_dir is not None
    ready = json.loads((restored.run_dir / "readiness.json").read_text())
    record = json.loads((restored.run_dir / "verdict.json").read_text())
    assert ready["restored_from"] == record["snapshot"] and "clock_offset" in ready
    assert (restored.run_dir / "console-boot.log").stat().st_size > 0
    # The restore was noted: what `images prune --unused-for` goes by.
    assert restored.snapshot is not None
    used = Path(restored.snapshot) / USED_FILE
    assert used.stat().st_mtime >= started - 1 and last_used(used.parent) == used.stat().st_mtime


@pytest.mark.profile("bookworm")
def test_the_6_1_negative_control_is_stale_cold_and_restored(kdump: Scenario) -> None:
    cold, restored = cold_and_restored(kdump, "bookworm", dimms="4x256M", add_cpus=0,
                                       update="none", expect="stale",
                                       memhp_default_state="online")
    assert cold.result is Result.STALE, cold.reason
    assert_same(cold, restored)


@pytest.mark.seed004
@pytest.mark.profile("trixie")
def test_an_nmi_with_hot_added_cpus_is_accurate_cold_and_restored(kdump: Scenario) -> None:
    cold, restored = cold_and_restored(kdump, "trixie", dimms="", add_cpus=4, max_cpus=6,
                                       trigger="nmi")
    assert cold.result is Result.ACCURATE, cold.reason
    assert_same(cold, restored)


@pytest.mark.seed000
@pytest.mark.profile("trixie")
def test_reload_contention_is_judged_alike_cold_and_restored(kdump: Scenario) -> None:
    """The trylock race: which of stale or accurate it ends in depends on whether the last
    hot-plug handler failed (README's findings), cold or restored; each run must agree with
    its own kernel log, and two runs that lost the last update must agree exactly."""
    cold, restored = cold_and_restored(kdump, "trixie", dimms="16x256M", add_cpus=0,
                                       contention=("reload",), expect=None)
    for job in (cold, restored):
        assert job.swarm is not None and job.swarm.klog is not None, job.reason
        klog = job.swarm.klog
        assert klog.trylock_failures > 0, job.swarm.summary()
        wanted = Result.STALE if klog.last_update_failed else Result.ACCURATE
        assert job.result is wanted, f"{job.result.value} ({klog.trylock_failures} " \
                                     f"failures, last failed: {klog.last_update_failed})"
    if cold.result is restored.result:
        assert_same(cold, restored)


@pytest.mark.profile("trixie")
def test_guests_restored_from_one_snapshot_do_not_share_their_random_stream(
        kdump: Scenario) -> None:
    """vmgenid gives each restore a new generation ID and Linux (5.18+, CONFIG_VMGENID;
    not Debian's 6.1) reseeds its CRNG at once: without it both guests would read the
    same bytes from /dev/urandom until the next scheduled reseed."""
    first, second = (kdump.boot("trixie", snapshot=True) for _ in range(2))
    assert first.guest.restored_from == second.guest.restored_from
    read = "head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \\n'"
    a, b = (g.guest.run(read, check=True).stdout for g in (first, second))
    assert len(a) == 64 and a != b, (a, b)
    # The kernel's own word for it (drivers/char/random.c, add_vmfork_randomness()).
    for g in (first, second):
        log = g.guest.run("dmesg", check=True).stdout
        assert log.count("crng reseeded due to virtual machine fork") == 1, log[-2000:]


@pytest.mark.profile("trixie")
def test_a_snapshot_whose_guest_cannot_load_kdump_fails_as_that_guest_would(
        kdump: Scenario) -> None:
    """The snapshot's cold boot is the guest's boot: its failure is the guest's result,
    with the boot's evidence beside the run's."""
    job = kdump.run("trixie", dimms="", add_cpus=0, crashkernel="32M", snapshot=True,
                    expect="kdump_load_failed")
    assert job.result is Result.KDUMP_LOAD_FAILED, job.reason
    assert job.run_dir is not None
    assert (job.run_dir / "snapshot-build" / "console.log").stat().st_size > 0
