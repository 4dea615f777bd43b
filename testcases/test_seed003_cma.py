"""seed003: CMA-backed kexec_file segments across kdump reloads (sid, Linux 6.17+).

The review of "kexec: Enable CMA based contiguous allocation" (2025; shared/seeds/003) found
CMA leaking across ``kdump-config reload``: the crash image's segments went into CMA as
well, and a load that failed ("kexec_file_load failed: Cannot assign requested address")
kept what it had taken.  What was merged places only a normal (``kexec -e``) image in CMA.

Every scenario boots sid with ``cma=256M`` and judges CMA two ways (harness/guest/cma.py):
the CMA allocator's own counters (``/sys/kernel/mm/cma/<area>``), exactly, and CmaFree
(/proc/meminfo) within ``FREE_TOLERANCE_KB``, because ordinary movable allocations share
CMA pageblocks.  Each writes what it saw, step by step, to ``cma.json`` in its evidence
directory.  Guests come from the ``kdump`` fixture (``kdump.boot``); a dump is judged by
``Capture.verify``, the harness's own verdict.

The guests have 2 GiB with a 1 MiB hole every 512 MiB (``SPLIT_RAM``): no System RAM range
is longer than 511 MiB, so a 600 MiB initrd fits neither CMA (256 MiB) nor RAM, and a normal
load of it fails with EADDRNOTAVAIL *after* purgatory, boot parameters and kernel were
placed in CMA: the seed's failed load, through the CMA path.
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict
from pathlib import Path
from typing import Any

import pytest

from harness.guest import Guest, cma
from harness.guest import kexec_tool as tool
from harness.guest.cma import FREE_TOLERANCE_KB, PAGE_KB, CmaLeak, CmaState, KexecRun
from harness.plugin.scenario import Capture, Scenario

#: kexec_file puts segments in CMA from 6.17 on (the kdump fixture skips older kernels).
pytestmark = [pytest.mark.guest, pytest.mark.seed003, pytest.mark.profile("sid"),
              pytest.mark.kernel(">=6.17")]

MiB = 1 << 20
CMA = ("cma=256M",)
SPLIT_RAM: dict[str, Any] = dict(
    memory=2048 * MiB,
    kernel_args=CMA + ("memmap=1M$512M", "memmap=1M$1024M", "memmap=1M$1536M"))
NO_FIT = 600 * MiB             # > CMA and > every System RAM range of SPLIT_RAM
OVER_CRASHKERNEL = 300 * MiB   # > crashkernel=256M (GuestConfig's default)
CYCLES = 5
NO_ROOM = "Cannot assign requested address"
APPEND = "console=ttyS0,115200"
#: kernel/crash_core.c, "kdump: wait for DMA to finish when using CMA" (6.17): with
#: crashkernel=,cma, __crash_kexec() waits this long before it jumps to the capture kernel.
CMA_DMA_TIMEOUT_SEC = 10.0


class Evidence:
    """Each step's numbers, rewritten to ``cma.json`` after every step (a failure keeps
    everything up to it)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.steps: list[dict[str, Any]] = []

    def add(self, step: str, run: KexecRun | None = None, **facts: Any) -> None:
        entry: dict[str, Any] = {"step": step, **facts}
        if run is not None:
            entry.update(command=run.command, status=run.status, output=run.output.strip(),
                         cma_pages_logged=run.cma_pages, before=run.before.summary(),
                         after=run.after.summary())
        self.steps.append(entry)
        self.path.write_text(json.dumps(self.steps, indent=2) + "\n")


def needs_cma_kexec(guest_image: Any) -> None:
    """Skip, saying why, unless sid's kernel (the image ``kdump.boot`` uses) was built with
    what these tests read; its version is the ``kernel`` marker's."""
    image = guest_image("sid")
    config = image.kernel_config
    missing = [o for o in ("CONFIG_CMA", "CONFIG_DMA_CMA", "CONFIG_CMA_SYSFS")
               if config.get(o) != "y"]
    if missing:
        pytest.skip(f"{image.kernel_release}: {', '.join(missing)} not =y")


def assert_back(guest: Guest, baseline: CmaState, run: KexecRun, what: str) -> int:
    """CMA after ``run`` is what it was at ``baseline``: the allocator exactly, CmaFree
    within the tolerance once settled.  Returns CmaFree's drift in kB."""
    leak = cma.allocator_leak(baseline, run.after)
    assert leak is None, f"{what}: {leak}\n{run.describe()}"
    settled = cma.settled_state(guest, baseline, run.after)
    drift = settled.free_kb - baseline.free_kb
    assert abs(drift) <= FREE_TOLERANCE_KB, (
        f"{what}: CmaFree {baseline.free_kb} -> {settled.free_kb} kB ({drift:+d}), more than "
        f"{FREE_TOLERANCE_KB} kB from the baseline with nothing held by the allocator")
    return drift


def crash_cycle(guest: Guest, baseline: CmaState, log: Evidence, n: int) -> None:
    """One kdump reload (unload + kexec -s -p) and an unload: no CMA at any point."""
    load = cma.run_kexec(guest, guest.kdump_reload_command())
    assert load.ok and load.after.crash_loaded, load.describe()
    assert not load.allocations, f"the crash image must not use CMA:\n{load.describe()}"
    log.add(f"crash load {n}", load, free_drift_kb=assert_back(guest, baseline, load,
                                                                f"crash load {n}"))
    unload = cma.run_kexec(guest, cma.CRASH_UNLOAD)
    assert unload.ok and not unload.after.crash_loaded, unload.describe()
    log.add(f"crash unload {n}", unload,
            free_drift_kb=assert_back(guest, baseline, unload, f"crash unload {n}"))


def normal_cycle(guest: Guest, baseline: CmaState, log: Evidence, n: int) -> None:
    """One normal load (in CMA, as the kernel logs and the allocator agrees) and its unload."""
    load = cma.run_kexec(guest, cma.normal_load(append=APPEND))
    assert load.ok and load.after.image_loaded, load.describe()
    pages = load.cma_pages
    assert len(load.allocations) >= 3 and pages > 0, f"not in CMA:\n{load.describe()}"
    taken = load.before.area().available_pages - load.after.area().available_pages
    assert taken == pages, f"the allocator gave {taken} pages, the log says {pages}"
    dropped = load.before.free_kb - load.after.free_kb
    assert dropped >= pages * PAGE_KB - FREE_TOLERANCE_KB, load.describe()
    log.add(f"normal load {n}", load, cma_free_drop_kb=dropped)
    unload = cma.run_kexec(guest, cma.NORMAL_UNLOAD)
    assert unload.ok and not unload.after.image_loaded, unload.describe()
    released = (unload.after.area().release_pages_success
                - unload.before.area().release_pages_success)
    assert released == pages, f"the unload released {released} of {pages} pages"
    log.add(f"normal unload {n}", unload,
            free_drift_kb=assert_back(guest, baseline, unload, f"normal unload {n}"))


def assert_accurate(capture: Capture) -> None:
    """The harness's verdict on the dump (``report.txt``; the whole report if it is not
    accurate), as the main job judges one (harness/job.py)."""
    result = capture.result
    assert capture.captured, f"{result.outcome.value}: {result.reason}\n{result.console_tail}"
    capture.verify(expect="accurate")


def test_reloads_give_cma_back_and_the_dump_stays_accurate(kdump: Scenario,
                                                           guest_image: Any) -> None:
    """5 kdump reloads and unloads, 5 normal loads and unloads, a crash load too big for
    crashkernel=256M: CMA back to its baseline after each; then a sysrq panic still gives
    an accurate dump."""
    needs_cma_kexec(guest_image)
    scenario = kdump.boot("sid", **SPLIT_RAM)
    guest = scenario.guest
    log = Evidence(kdump.out / "cma.json")
    baseline = cma.read_state(guest)
    assert baseline.total_kb == 256 * 1024 and baseline.area().total_pages == 65536
    log.add("baseline", state=baseline.summary())
    for n in range(1, CYCLES + 1):
        crash_cycle(guest, baseline, log, n)
    for n in range(1, CYCLES + 1):
        normal_cycle(guest, baseline, log, n)

    big = cma.sparse_file(guest, "initrd-300M", OVER_CRASHKERNEL)
    failed = cma.run_kexec(guest, f"KDUMP_INITRD={big} {guest.kdump_reload_command()}")
    assert not failed.ok and NO_ROOM in failed.output, failed.describe()
    assert not failed.allocations, f"a failed crash load used CMA:\n{failed.describe()}"
    log.add("crash load too big for crashkernel", failed,
            free_drift_kb=assert_back(guest, baseline, failed, "failed crash load"))

    reload = cma.run_kexec(guest, guest.kdump_reload_command())
    assert reload.ok and reload.after.crash_loaded and not reload.allocations, reload.describe()
    capture = scenario.panic("sysrq")
    log.add("capture", outcome=capture.result.outcome.value, times=asdict(capture.result.times))
    assert_accurate(capture)


#: Found by this scenario (Linux 7.2.13): the segments placed before the failing one stay
#: allocated.  Consistent with kimage_file_alloc_init()'s error path as mainline had it
#: when CMA went in: when the image loader (bzImage64_load) fails inside
#: kimage_file_prepare_segments(), the half-built image is kfree()d without kimage_free(),
#: the only caller of kimage_free_cma().
FAILED_LOAD_LEAKS = pytest.mark.xfail(
    strict=True, raises=CmaLeak,
    reason="7.2: a kexec_file_load that fails after kexec_add_buffer() placed segments in "
           "CMA keeps them (kimage_free_cma() is reached only through kimage_free(), which "
           "the prepare-segments error path skips): 15426 pages (60 MiB) per failed load")


@FAILED_LOAD_LEAKS
def test_a_failed_normal_load_gives_its_cma_back(kdump: Scenario, guest_image: Any) -> None:
    """The seed's failed load: a normal load that runs out of room after placing its
    first segments in CMA must give them back.  Twice, to show the leak adds up."""
    needs_cma_kexec(guest_image)
    guest = kdump.boot("sid", **SPLIT_RAM).guest
    log = Evidence(kdump.out / "cma.json")
    baseline = cma.read_state(guest)
    log.add("baseline", state=baseline.summary())
    big = cma.sparse_file(guest, "initrd-600M", NO_FIT)
    runs = []
    for n in (1, 2):
        run = cma.run_kexec(guest, cma.normal_load(initrd=big, append=APPEND))
        assert not run.ok and NO_ROOM in run.output and not run.after.image_loaded, \
            run.describe()
        # Through the CMA path: purgatory, boot parameters and kernel went to CMA before
        # the initrd found no room (its own CMA attempt fails: alloc_pages_fail).
        assert len(run.allocations) >= 3, f"not through CMA:\n{run.describe()}"
        assert run.after.area().alloc_pages_fail > run.before.area().alloc_pages_fail
        runs.append(run)
        log.add(f"failed normal load {n}", run, cma_allocations=[
            {"pages": a.pages, "pfn": hex(a.pfn)} for a in run.allocations])
    now = runs[-1].after
    held = now.area().allocated_pages - baseline.area().allocated_pages
    log.add("after the failed loads", held_pages=held, state=now.summary(),
            cma_free_drop_kb=baseline.free_kb - now.free_kb)
    if held:
        # This bug exactly: what stays held is what the failed loads took, no more.
        assert held == sum(r.cma_pages for r in runs), cma.allocator_leak(baseline, now)
        raise CmaLeak(f"failed kexec_file_load kept its CMA: {cma.allocator_leak(baseline, now)}"
                      f"\nCmaFree {baseline.free_kb} -> {now.free_kb} kB\n"
                      + "\n".join(r.describe() for r in runs))
    assert_back(guest, baseline, runs[-1], "failed normal loads")


def test_kexec_file_no_cma_keeps_a_load_out_of_cma(kdump: Scenario, guest_image: Any) -> None:
    """KEXEC_FILE_NO_CMA (which kexec-tools cannot pass) keeps a normal image out of CMA,
    and so the failed load has nothing to leak; the kernel accepts it on a crash load
    and refuses an unknown flag."""
    needs_cma_kexec(guest_image)
    binary = tool.build(kdump.out / "tool")
    if binary is None:
        pytest.skip("no C compiler (cc, gcc, clang) on this host to build the "
                    "kexec_file_load tool, and kexec-tools cannot pass KEXEC_FILE_NO_CMA")
    guest = kdump.boot("sid", **SPLIT_RAM).guest
    log = Evidence(kdump.out / "cma.json")
    help_text = guest.run("kexec --help 2>&1").stdout
    log.add("kexec --help mentions cma", found="cma" in help_text.lower())
    tool.install(guest, binary)
    baseline = cma.read_state(guest)
    flag = tool.KexecFileFlag

    def call(flags: int, initrd: str = cma.CAPTURE_INITRD) -> tuple[int, KexecRun]:
        run = cma.run_kexec(guest, tool.command(flag(flags), cma.KERNEL, initrd, APPEND))
        log.add(f"kexec_file_load flags={flags:#x} initrd={initrd}", run)
        return tool.parse_result(run.output)[0], run

    for flags, in_cma in ((flag.NONE, True), (flag.NO_CMA, False)):
        rc, load = call(flags)
        assert rc == 0 and load.after.image_loaded, load.describe()
        assert bool(load.allocations) is in_cma, load.describe()
        rc, unload = call(flag.UNLOAD, "-")
        assert rc == 0 and not unload.after.image_loaded, unload.describe()
        assert_back(guest, baseline, unload, f"unload after flags={flags:#x}")

    big = cma.sparse_file(guest, "initrd-600M", NO_FIT)
    rc, failed = call(flag.NO_CMA, big)
    assert rc == -tool.EADDRNOTAVAIL and not failed.allocations, failed.describe()
    assert_back(guest, baseline, failed, "failed load with KEXEC_FILE_NO_CMA")

    rc, crash = call(flag.ON_CRASH | flag.NO_CMA)
    assert rc == 0 and crash.after.crash_loaded and not crash.allocations, crash.describe()
    rc, bogus = call(0x40)
    assert rc == -tool.EINVAL, f"an unknown flag must be refused:\n{bogus.describe()}"


def capture_kernel_start(capture: Capture) -> float:
    """Seconds from the panic to the capture kernel's start: its uptime at capture-start,
    taken off the host's panic-to-capture-start time."""
    text = (capture.out / "console-capture-kernel.log").read_text(errors="replace")
    found = re.search(r"HARNESS: capture-start mode=\w+ uptime=(\d+\.\d+)", text)
    userspace = capture.result.times.capture_userspace
    assert found and userspace is not None, capture.result.reason
    return userspace - float(found.group(1))


@pytest.mark.slow
def test_crashkernel_cma_waits_for_dma_and_keeps_its_ranges_out_of_the_dump(
        kdump: Scenario, guest_image: Any) -> None:
    """crashkernel=256M,cma beside crashkernel=256M: reloads leave both CMA areas alone;
    the capture waits CMA_DMA_TIMEOUT_SEC (panic to capture measured with and without);
    the dump leaves the CMA ranges out, and the harness calls it accurate."""
    needs_cma_kexec(guest_image)
    log = Evidence(kdump.out / "cma.json")
    base = kdump.boot("sid", memory=2048 * MiB, kernel_args=CMA).panic("sysrq")
    assert_accurate(base)
    base_start = capture_kernel_start(base)
    log.add("without ,cma", capture_userspace=base.result.times.capture_userspace,
            panic_to_capture_kernel=base_start)

    scenario = kdump.boot("sid", memory=2048 * MiB,
                          kernel_args=CMA + ("crashkernel=256M,cma",))
    guest = scenario.guest
    ranges = cma.crash_cma_ranges(cma.kernel_log(guest))
    assert sum(r.size for r in ranges) == 256 * MiB, ranges
    baseline = cma.read_state(guest)
    crash_area = baseline.area(cma.CRASH_AREA)
    assert crash_area.available_pages == crash_area.total_pages == 65536, baseline.summary()
    log.add("baseline", state=baseline.summary(), crash_cma=[str(r) for r in ranges])
    for n in (1, 2):
        reload = cma.run_kexec(guest, guest.kdump_reload_command())
        assert reload.ok and not reload.allocations, reload.describe()
        log.add(f"kdump reload {n}", reload,
                free_drift_kb=assert_back(guest, baseline, reload, f"kdump reload {n}"))

    capture = scenario.panic("sysrq")
    # The harness's own topology has them (from sysfs): the boot log agrees.
    assert capture.observed.crash_cma == ranges, capture.observed.to_json()
    start = capture_kernel_start(capture)
    log.add("with ,cma", capture_userspace=capture.result.times.capture_userspace,
            panic_to_capture_kernel=start, added_by_cma=start - base_start)
    assert start >= CMA_DMA_TIMEOUT_SEC, f"capture kernel started {start:.1f} s after the panic"
    # The kernel leaves crashkernel CMA out of the elfcorehdr on purpose (the capture kernel
    # runs in it), and the observed topology counts it with Crash kernel: no adjustment here.
    assert_accurate(capture)
