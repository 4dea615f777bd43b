"""Catalogue scenario 13: faults end in their documented result, within their deadline,
and leave no QEMU behind.

QEMU killed mid-swarm or mid-capture is a harness error naming the signal (never a
verdict about the kernel); a guest that never boots fails at once with its console tail;
a trigger that does not take is ``no_panic`` after the panic deadline.  (``kill -9`` of
the process that owns a guest, and of pytest itself: test_catalogue_plugin.py and
test_boot.py.)
"""

from __future__ import annotations

import os
import signal
import threading
import time

import pytest

from harness.api import Outcome
from harness.errors import BootFailure, LostVMError
from harness.hotplug import HookAction, SwarmProgress
from harness.plugin.scenario import Scenario
from harness.signatures import CAPTURE_CMDLINE
from harness.timeouts import wait_until

pytestmark = pytest.mark.guest


@pytest.mark.profile("trixie")
def test_qemu_killed_mid_swarm_is_a_harness_error_naming_the_signal(kdump: Scenario) -> None:
    guest = kdump.boot("trixie")
    pid = guest.guest.pid
    assert pid is not None
    killed: list[float] = []

    def kill_after_two(progress: SwarmProgress) -> HookAction | None:
        if progress.done == 2 and not killed:
            os.kill(pid, signal.SIGKILL)
            killed.append(time.monotonic())
        return None

    with pytest.raises(LostVMError, match=r"QEMU died \(killed by signal 9\)"):
        guest.swarm(dimms="8x256M", between=kill_after_two)
    assert killed and time.monotonic() - killed[0] < guest.guest.timeouts.command
    assert not guest.guest.alive()


@pytest.mark.profile("trixie")
def test_qemu_killed_mid_capture_is_a_harness_error_naming_the_signal(
        kdump: Scenario) -> None:
    """Killed once the capture kernel boots: the dump is lost to QEMU, not to the kernel."""
    guest = kdump.boot("trixie")
    pid, timeouts = guest.guest.pid, guest.guest.timeouts
    assert pid is not None
    start = guest.guest.console.mark()
    killed: list[float] = []

    def kill_when_the_capture_kernel_boots() -> None:
        wait_until(lambda: CAPTURE_CMDLINE.search(guest.guest.console.text(start)),
                   timeout=timeouts.panic + timeouts.capture_boot, interval=0.02,
                   what="the capture kernel's command line on the console")
        os.kill(pid, signal.SIGKILL)
        killed.append(time.monotonic())

    killer = threading.Thread(target=kill_when_the_capture_kernel_boots, daemon=True)
    killer.start()
    capture = guest.panic("sysrq")
    killer.join(timeouts.shutdown)
    assert killed, "the capture kernel never booted"
    assert capture.result.outcome is Outcome.HARNESS_ERROR, capture.result.reason
    assert "killed by signal 9" in capture.result.reason
    assert time.monotonic() - killed[0] < timeouts.shutdown + timeouts.command
    assert not guest.guest.alive()
    assert (capture.out / "vmcore.missing").read_text().startswith("harness_error")


@pytest.mark.slow   # a 30 s panic deadline under TCG
@pytest.mark.profile("trixie")
def test_an_nmi_the_kernel_does_not_panic_on_is_no_panic(kdump: Scenario) -> None:
    """With unknown_nmi_panic off, QMP's NMI is only reported ("Uhhuh. NMI received for
    unknown reason"): the guest keeps running, and the capture ends as no_panic once the
    panic deadline passes."""
    guest = kdump.boot("trixie")
    guest.guest.run("echo 0 > /proc/sys/kernel/unknown_nmi_panic", check=True)
    started = time.monotonic()
    capture = guest.panic("nmi")
    assert capture.result.outcome is Outcome.NO_PANIC, capture.result.reason
    timeouts = guest.guest.timeouts
    assert timeouts.panic <= time.monotonic() - started < (
        timeouts.panic + timeouts.shutdown + timeouts.command)
    assert "NMI received for unknown reason" in guest.guest.console.text()
    assert not guest.guest.alive()


@pytest.mark.profile("trixie")
def test_a_guest_that_never_boots_fails_fast_with_its_console_tail(kdump: Scenario) -> None:
    # rdinit pointing nowhere: the kernel panics with no init.
    started = time.monotonic()
    with pytest.raises(BootFailure) as info:
        kdump.boot("trixie", kernel_args=("rdinit=/does-not-exist",), crashkernel="")
    assert "Kernel panic" in str(info.value) and "console tail" in str(info.value)
    assert time.monotonic() - started < 60, "a panicking boot must fail at once, not time out"
    assert not kdump.guests[0].alive()
