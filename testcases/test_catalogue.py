"""The scenario catalogue: each end to end with real guests, each asserting its cause.

Written with the scenario API (the ``kdump`` fixture, ``harness.plugin.scenario``), the way
a kernel developer or a QA engineer writes their own.  The mailing-list threads the
harness grew from are marked ``seed000`` .. ``seed004`` (see ../shared/seeds/README.md);
``pytest testcases -m seed004`` runs one thread's scenarios.  A known kernel limitation is
a strict xfail naming the kernels and the mechanism: it fails the day a kernel fixes it.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from harness.plugin.scenario import Scenario
from harness.vmcore import open_dump

pytestmark = pytest.mark.guest

#: 6.12 and 7.2 rebuild the whole header at MEM_OFFLINE, while the block is still System
#: RAM, and nothing rebuilds it after remove_memory: the last removed block stays described.
UNPLUG_LEAVES_LAST_BLOCK = pytest.mark.xfail(
    strict=True, reason="6.12 and 7.2: the crash header is rebuilt at MEM_OFFLINE, before "
                        "the removed memory's resource is released, and not after "
                        "remove_memory: the last removed block stays in the header "
                        "(dump-range-not-ram)")


def codes(report: object, severity: str = "error") -> set[str]:
    return {f.code.value for f in report.findings  # type: ignore[attr-defined]
            if f.severity.value == severity}


# 1. DIMM burst + sysrq on trixie and sid: accurate.
@pytest.mark.seed001
@pytest.mark.kernel(">=6.6")
@pytest.mark.parametrize("profile", [pytest.param(p, marks=pytest.mark.profile(p))
                                     for p in ("trixie", "sid")])
def test_dimm_burst_and_sysrq_is_accurate(kdump: Scenario, profile: str,
                                          request: pytest.FixtureRequest) -> None:
    guest = kdump.boot(profile)
    swarm = guest.swarm(dimms="8x256M")
    assert swarm.klog is not None and swarm.klog.updated_elfcorehdr >= 16
    report = guest.panic("sysrq").verify()
    assert report.verdict == "accurate", report.to_text()
    assert "dimm-present" in codes(report, "info")
    recorded = dict(request.node.user_properties)
    assert {"kernel_release", "accel", "evidence", "time.capture_userspace"} <= set(recorded)


# 2. vCPU burst to maxcpus, then NMI: a note for every online CPU, hot-added ones too.
@pytest.mark.seed001
@pytest.mark.profile("trixie")
def test_vcpu_burst_to_maxcpus_then_nmi_saves_every_cpus_note(kdump: Scenario) -> None:
    guest = kdump.boot("trixie", cpus=2, max_cpus=8)
    guest.swarm(add_cpus=6)
    capture = guest.panic("nmi")
    report = capture.verify()
    assert report.verdict == "accurate", report.to_text()
    dump = open_dump(capture.result.files["vmcore"])
    assert len(dump.cpu_notes) == len(capture.observed.cpus_online) == 8


# 3. A mixed swarm: adds paced and in waves are accurate; removes hit the known limitation.
@pytest.mark.seed001
@pytest.mark.profile("trixie")
@pytest.mark.parametrize("timing", [pytest.param("paced:0.05", marks=pytest.mark.slow),
                                    "waves:3:0.2"])
def test_mixed_adds_paced_and_in_waves_are_accurate(kdump: Scenario, timing: str) -> None:
    job = kdump.run(dimms="4x256M,2x512M", add_cpus=3, virtio_mem="1G", timing=timing,
                    seed=7)
    assert job.result == "accurate", job.reason


@pytest.mark.seed001
@pytest.mark.profile("trixie")
@UNPLUG_LEAVES_LAST_BLOCK
def test_mixed_swarm_with_removes_is_accurate(kdump: Scenario) -> None:
    job = kdump.run(dimms="6x256M", add_cpus=3, unplug=3, unplug_cpus=1, seed=11,
                    timing="waves:3:0.1")
    assert job.result == "accurate", job.reason


# 4. virtio-mem grow is accurate; a shrink hits the same limitation as a DIMM unplug.
@pytest.mark.profile("trixie")
def test_virtio_mem_grow_is_accurate(kdump: Scenario) -> None:
    job = kdump.run(dimms="", add_cpus=0, virtio_mem="1G")
    assert job.result == "accurate", job.reason


@pytest.mark.profile("trixie")
@UNPLUG_LEAVES_LAST_BLOCK
def test_virtio_mem_grow_and_shrink_is_accurate(kdump: Scenario) -> None:
    job = kdump.run(dimms="", add_cpus=0, virtio_mem="1G:256M")
    assert job.result == "accurate", job.reason


# 5. Both load syscalls through a dump, on 6.12 and 7.x.
@pytest.mark.seed001
@pytest.mark.kernel(">=6.6")
@pytest.mark.parametrize(("profile", "kexec"), [
    pytest.param(p, k, marks=[pytest.mark.profile(p)] + ([] if default else [pytest.mark.slow]))
    for p, k, default in (("trixie", "classic", True), ("sid", "file", True),
                          ("trixie", "file", False), ("sid", "classic", False))])
def test_both_load_syscalls_keep_the_header_current(kdump: Scenario, profile: str,
                                                    kexec: str) -> None:
    job = kdump.run(profile, dimms="4x256M", add_cpus=1, kexec=kexec, update="kernel")
    assert job.result == "accurate", job.reason
    readiness = json.loads((kdump.out / "readiness.json").read_text())["readiness"]
    # kexec-tools falls back from file to classic on some errors: check which one ran.
    assert readiness["kdump_syscall"].split()[0] == kexec, readiness["kdump_syscall"]
    assert readiness["crash_hotplug_memory"] == "1", "the loaded image is kernel-updatable"


# 6. The 6.1 negative control, and the reload strategy that repairs it.
@pytest.mark.profile("bookworm")
def test_bookworm_without_updates_is_stale_naming_the_dimms(kdump: Scenario) -> None:
    job = kdump.run("bookworm", dimms="4x256M", add_cpus=0, update="none", expect="stale",
                    memhp_default_state="online")
    assert job.result == "stale", job.reason
    assert job.report is not None
    for in_header in (False, True):        # the dump, and the raw header beside it
        missing = {f.device for f in job.report.findings
                   if f.code.value == "dimm-missing" and f.in_header is in_header}
        assert missing == {f"dimm{i}" for i in range(4)}, (in_header, missing)


@pytest.mark.profile("bookworm")
def test_bookworm_with_reload_updates_is_accurate(kdump: Scenario) -> None:
    job = kdump.run("bookworm", dimms="4x256M", add_cpus=1, update="reload",
                    memhp_default_state="online")
    assert job.result == "accurate", job.reason
    assert job.swarm is not None and job.swarm.reloads


# 7. seed004: several CPUs panicking at once, and with crash_kexec_post_notifiers.
@pytest.mark.seed004
@pytest.mark.profile("trixie")
@pytest.mark.parametrize("notifiers", [(), ("crash_kexec_post_notifiers",)],
                         ids=["plain", "post-notifiers"])
def test_nmi_with_hot_added_cpus_online_saves_every_cpus_note(
        kdump: Scenario, notifiers: tuple[str, ...]) -> None:
    guest = kdump.boot("trixie", cpus=2, max_cpus=6, kernel_args=notifiers)
    guest.swarm(add_cpus=4)
    capture = guest.panic("nmi")
    report = capture.verify()
    assert report.verdict == "accurate", report.to_text()
    online = capture.observed.cpus_online
    # QEMU raises LINT1 everywhere but Linux masks it on all CPUs but the boot CPU: CPU 0
    # panics from NMI context (unknown_nmi_error -> nmi_panic) and every other CPU, the
    # hot-added ones too, saves its note through the panic's NMI shootdown.
    log = Path(capture.result.files["vmcore_dmesg"]).read_text(errors="replace")
    cpus = {int(m) for m in re.findall(r"NMI received for unknown reason \w+ on CPU (\d+)", log)}
    assert cpus == {0}, cpus
    assert "Kernel panic - not syncing: NMI: Not continuing" in log
    dump = open_dump(capture.result.files["vmcore"])
    assert len(dump.cpu_notes) == len(online) == 6


@pytest.mark.seed004
@pytest.mark.profile("trixie")
@pytest.mark.parametrize("notifiers", [(), ("crash_kexec_post_notifiers",)],
                         ids=["plain", "post-notifiers"])
def test_sysrq_on_several_cpus_at_once_is_captured_with_every_note(
        kdump: Scenario, notifiers: tuple[str, ...]) -> None:
    """Each attempt must give an accurate dump with every note; the concurrency the
    scenario is about must show in the notes of one attempt of three.  The host decides
    when each vCPU runs: with two CPU hogs beside two guests it once let one writer panic
    while the other two writers' CPUs were idle (notes of CPUs 0-2 in the idle loop)."""
    seen = []
    for _ in range(3):
        losers, notes = sysrq_on_three_cpus(kdump, notifiers)
        if losers:
            return
        seen.append(notes)
    pytest.skip(f"the panics were never concurrent in 3 attempts (a busy host?): {seen}")


def sysrq_on_three_cpus(kdump: Scenario, notifiers: tuple[str, ...]) -> tuple[list[int], str]:
    """One attempt: the CPUs that lost the race into panic(), and every note's CPU, pid
    and rip (for the record)."""
    guest = kdump.boot("trixie", cpus=2, max_cpus=4, kernel_args=notifiers)
    guest.swarm(add_cpus=2)                # two of the panicking CPUs are hot-added
    stop, stop_end = guest.symbol_range("panic_smp_self_stop")
    capture = guest.panic("sysrq-multi", cpus=(1, 2, 3))
    report = capture.verify()
    assert report.verdict == "accurate", report.to_text()
    dump = open_dump(capture.result.files["vmcore"])
    assert len(dump.cpu_notes) == 4
    # Concurrent, proven by the notes: a CPU that entered panic() while another owned it
    # stops in panic_smp_self_stop() (kernel/panic.c), where the NMI shootdown saved its
    # registers, with its own writer (not the idle task) current.  Its sysrq line is not
    # in the log: since 6.7 printk drops messages of CPUs other than the panicking one.
    status = [(n.index, n.prstatus) for n in dump.cpu_notes if n.prstatus is not None]
    losers = [cpu for cpu, ps in status if ps.pid and stop <= ps.rip < stop_end]
    return losers, ", ".join(f"cpu{cpu} pid {ps.pid} rip {ps.rip:#x}" for cpu, ps in status)
