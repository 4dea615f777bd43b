"""The SSH channel's failure handling (a fake transport; no guest)."""

from __future__ import annotations

import threading
import time

import paramiko
import pytest

from harness.errors import SshError
from harness.guest.ssh import GuestSsh, SshKey


class HungTransport:
    """A transport whose peer stopped opening channels (a hung guest)."""

    def __init__(self) -> None:
        self.opens = 0

    def is_active(self) -> bool:
        return True

    def open_session(self, timeout: float) -> None:
        self.opens += 1
        raise paramiko.SSHException("Timeout opening channel.")


def test_a_guest_that_stops_opening_channels_fails_every_later_command_at_once() -> None:
    ssh = GuestSsh("127.0.0.1", 22, SshKey())
    transport = HungTransport()
    ssh._transport = transport  # type: ignore[assignment]
    with pytest.raises(SshError, match=r"opened no channel within 30 s .*may have hung"):
        ssh.run("echo 1 > /sys/devices/system/cpu/cpu2/online", timeout=30)
    started = time.monotonic()
    with pytest.raises(SshError, match=r"stopped answering SSH \d+ s ago .*cpu2/online.*"
                                        "not running: cat /proc/iomem"):
        ssh.run("cat /proc/iomem", timeout=30)
    with pytest.raises(SshError, match="stopped answering"):
        ssh.start("echo c > /proc/sysrq-trigger", timeout=30)
    assert time.monotonic() - started < 1 and transport.opens == 1


class SilentChannel:
    """A channel whose peer never answers the exec request (the guest died first)."""

    def __init__(self) -> None:
        self.release = threading.Event()

    def exec_command(self, command: str) -> None:
        self.release.wait(10)
        raise paramiko.SSHException("Channel closed.")


class OpeningTransport:
    def __init__(self, chan: SilentChannel) -> None:
        self.chan = chan

    def is_active(self) -> bool:
        return True

    def open_session(self, timeout: float) -> SilentChannel:
        return self.chan


def test_a_trigger_whose_guest_died_before_answering_does_not_wait_for_the_answer() -> None:
    """A snapshot's session outlives the guest's end of it: paramiko would wait for the
    exec answer until QEMU exited (seen: 30 s, the capture kernel's fallback poweroff,
    and the raw header was lost)."""
    ssh = GuestSsh("127.0.0.1", 22, SshKey())
    chan = SilentChannel()
    ssh._transport = OpeningTransport(chan)  # type: ignore[assignment]
    panicked = threading.Event()
    # The clock starts first: under load the timer's own start can lag (seen: 0.19 s).
    started = time.monotonic()
    threading.Timer(0.2, panicked.set).start()
    with pytest.raises(SshError, match=r"the guest went away before its SSH server answered "
                                        r"the request to start 'echo c > /proc/sysrq-trigger'"
                       ) as raised:
        ssh.start("echo c > /proc/sysrq-trigger", timeout=30, gone=panicked.is_set)
    assert raised.value.maybe_sent and 0.2 <= time.monotonic() - started < 2
    with pytest.raises(SshError, match=r"did not answer the request to start 'sleep 1' "
                                        r"within 0.3 s"):
        ssh.start("sleep 1", timeout=0.3)
    chan.release.set()          # the transport closes: the waiting request ends
    with pytest.raises(SshError, match=r"SSH broke while starting 'true'.*Channel closed"):
        ssh.start("true", timeout=5)
