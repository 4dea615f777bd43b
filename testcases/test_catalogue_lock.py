"""Catalogue scenarios 8 and 9: panics that meet the kexec lock, judged by the kernel's log.

``__crash_kexec()`` only tries the kexec lock: a panic while a crash hot-plug handler or a
kdump reload holds it gives no dump at all.  Each test here checks the harness's
classification against what the kernel itself logged (``crash hp: hp_action`` without its
``updated elfcorehdr``, ``kexec_file: kernel:`` without its ``kexec_file_load:`` line,
read from the dump's dmesg or from the console replay of a panic that did not kexec;
``harness.crash.lock_evidence``), never against a guess the harness made.
"""

from __future__ import annotations

import pytest

from harness.api import JobResult, LockHolder, Topology
from harness.plugin.scenario import Scenario
from harness.results import Result

pytestmark = pytest.mark.guest

MiB = 1 << 20


def missing_dimms(job: JobResult) -> set[str]:
    assert job.report is not None
    return {f.device for f in job.report.findings
            if f.code.value == "dimm-missing" and f.device is not None}


def assert_classified_by_the_kernels_log(job: JobResult) -> None:
    """The result agrees with the lock holder the kernel's own log names at the panic."""
    capture = job.capture
    assert capture is not None, job.reason
    lock = capture.lock_at_panic
    assert lock is not None and lock.holder is not LockHolder.UNKNOWN, (
        f"the kernel's log says nothing about the kexec lock: {capture.reason}")
    if job.result is Result.KDUMP_DID_NOT_OCCUR:
        assert lock.held, f"no dump, yet {lock.describe()}"
        assert lock.describe() in job.reason
        return
    assert capture.captured, f"{job.result.value}: {job.reason}"
    # A holder still logging at the panic line must have let go before the trylock.
    assert not lock.held or lock.closed_after_panic, lock.describe()
    assert job.result in (Result.ACCURATE, Result.STALE), f"{job.result.value}: {job.reason}"
    if job.result is Result.STALE:
        # x86 rebuilds the whole header from System RAM at each block's MEM_ONLINE, and a
        # block shows online only after its notifier ran: a DIMM can be missing from the
        # dump only if none of its blocks had come online yet.
        assert job.run_dir is not None
        observed = Topology.load(job.run_dir / "topology-observed.json")
        expected = Topology.load(job.run_dir / "topology-expected.json")
        size = observed.memory_block_size
        assert size, "the guest reported no memory block size"
        online = set(observed.memory_blocks_online)
        for dimm in expected.memory_devices:
            if dimm.id in missing_dimms(job):
                blocks = set(range(dimm.addr // size, (dimm.addr + dimm.size) // size))
                assert not blocks & online, (
                    f"{dimm.id} is missing from the dump although blocks "
                    f"{sorted(blocks & online)} were online: the kernel rebuilt the header "
                    f"after they were added ({lock.header_updates} updates logged)")


# 8. A panic inside a swarm, after K of its 16 events.
@pytest.mark.seed001
@pytest.mark.profile("trixie")
@pytest.mark.parametrize("after", [3, pytest.param(9, marks=pytest.mark.slow),
                                   pytest.param(15, marks=pytest.mark.slow)])
def test_a_panic_after_k_of_16_dimm_events_is_classified_by_the_kernels_log(
        kdump: Scenario, after: int) -> None:
    job = kdump.run("trixie", dimms="16x256M", add_cpus=0, panic_after=after,
                    expect=None)
    assert job.swarm is not None and job.swarm.stopped_early
    assert job.swarm.events_sent == after
    assert_classified_by_the_kernels_log(job)


# 8. ... and while a kdump reload is in flight: its kexec_file_load holds the lock.
@pytest.mark.seed001
@pytest.mark.kernel(">=6.8")
@pytest.mark.profile("trixie")
def test_a_panic_during_a_reload_finds_the_load_holding_the_lock(kdump: Scenario) -> None:
    job = kdump.run("trixie", dimms="2x256M", add_cpus=0, during_reload=True,
                    expect="kdump_did_not_occur")
    assert job.passed, f"{job.result.value}: {job.reason}"
    assert job.capture is not None and job.capture.lock_at_panic is not None
    assert job.capture.lock_at_panic.holder is LockHolder.KEXEC_FILE_LOAD, job.reason
    assert_classified_by_the_kernels_log(job)


# 9. seed000: the trylock failure, reproduced through the API.
@pytest.mark.seed000
@pytest.mark.profile("trixie")
def test_reload_contention_loses_dimms_and_the_live_audit_agrees_with_the_dump(
        kdump: Scenario, request: pytest.FixtureRequest) -> None:
    """A reload synced on the kexec lock during a 16-DIMM burst: the crash hot-plug
    handler's trylock fails.  The count goes into the JUnit XML; the header read live just
    before the panic and the dump's header lose the same memory."""
    guest = kdump.boot("trixie", contention=("reload",))
    swarm = guest.swarm(dimms="16x256M", contention=("reload",))
    klog = swarm.klog
    assert klog is not None and klog.trylock_failures > 0, swarm.summary()
    assert ("trylock_failures", klog.trylock_failures) in request.node.user_properties
    live = guest.audit()
    capture = guest.panic("sysrq")
    report = capture.verify()
    live_lost = {(f.range.start, f.range.end) for f in live.report.findings
                 if f.severity.value == "error" and f.range is not None}
    dump_lost = {(f.range.start, f.range.end) for f in report.findings
                 if f.severity.value == "error" and f.range is not None and not f.in_header}
    if klog.last_update_failed:
        # The last handler failed: nothing rebuilt the header after the reload.
        assert report.verdict.value == "stale", report.to_text()
        lost = {f.device for f in report.findings if f.code.value == "dimm-missing"}
        assert lost and None not in lost, report.to_text()
        assert live.report.verdict.value == "stale", live.report.to_text()
        assert merged(live_lost) == merged(dump_lost), (live.report.to_text(), report.to_text())
    else:
        # A handler after the reload rebuilt the header from all the memory then present.
        assert report.verdict.value == "accurate", report.to_text()
        assert live.report.verdict.value == "accurate", live.report.to_text()


def merged(ranges: set[tuple[int, int]]) -> list[tuple[int, int]]:
    """Ranges joined where they touch: one DIMM can be reported block by block."""
    out: list[tuple[int, int]] = []
    for start, end in sorted(ranges):
        if out and start <= out[-1][1]:
            out[-1] = (out[-1][0], max(end, out[-1][1]))
        else:
            out.append((start, end))
    return out
