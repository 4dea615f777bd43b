"""The SSH channel's failure handling (a fake transport; no guest)."""

from __future__ import annotations

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
