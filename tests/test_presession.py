"""A snapshot's pre-connected SSH session without a guest: the server's first words are
read, kept, and replayed to a client that did not exist when they were sent; paramiko
plays the SSH server (the guest's dropbear does in the end-to-end tests)."""

from __future__ import annotations

import socket
import struct
import threading
from collections.abc import Iterator
from pathlib import Path

import paramiko
import pytest

from harness.errors import SnapshotError, SshError
from harness.guest import presession
from harness.guest.presession import ReplaySocket, read_preamble
from harness.guest.ssh import GuestSsh, SshKey


def kexinit(payload: bytes = b"\x14" + b"\0" * 40) -> bytes:
    padding = 8 - (len(payload) + 5) % 8 + 8
    return struct.pack(">IB", len(payload) + padding + 1, padding) + payload + b"\0" * padding


@pytest.fixture
def pair() -> Iterator[tuple[socket.socket, socket.socket]]:
    a, b = socket.socketpair()
    yield a, b
    a.close()
    b.close()


def test_the_preamble_is_the_version_line_and_the_kexinit_and_nothing_more(
        pair: tuple[socket.socket, socket.socket]) -> None:
    guest, host = pair
    first = b"SSH-2.0-dropbear_2025.89\r\n" + kexinit()
    guest.sendall(first + b"more")           # anything later belongs to the handshake
    assert read_preamble(host, timeout=2) == first
    assert host.recv(16) == b"more"


@pytest.mark.parametrize(("sent", "error"), [
    (b"HTTP/1.1 400\r\n" + kexinit(), "not SSH 2"),
    (b"SSH-2.0-x\r\n" + kexinit(b"\x15" + b"\0" * 8), "message 21, not KEXINIT"),
    (b"SSH-2.0-x\r\n" + struct.pack(">I", 1 << 20), "1048576-byte first packet"),
    (b"SSH-2.0-" + b"x" * 300, "no version line"),
])
def test_a_preamble_that_is_not_an_ssh_servers_is_refused(
        pair: tuple[socket.socket, socket.socket], sent: bytes, error: str) -> None:
    guest, host = pair
    guest.sendall(sent)
    with pytest.raises(SnapshotError, match=error):
        read_preamble(host, timeout=1)


def test_a_silent_or_closed_session_is_an_error_that_says_what_came(
        pair: tuple[socket.socket, socket.socket]) -> None:
    guest, host = pair
    guest.sendall(b"SSH-2.0-dropbear\r\n")
    with pytest.raises(SnapshotError, match=r"sent no KEXINIT within 0 s .*dropbear"):
        read_preamble(host, timeout=0.2)
    guest.sendall(b"SSH-2.0-dropbear\r\n\0\0")
    guest.close()
    with pytest.raises(SnapshotError, match=r"closed before its KEXINIT \(got b'SSH-2.0"):
        read_preamble(host, timeout=1)


def test_nothing_listening_is_a_snapshot_error(tmp_path: Path) -> None:
    with pytest.raises(SnapshotError, match="cannot connect to the snapshot's SSH session"):
        presession.connect(tmp_path / "absent.sock", timeout=1)


class KeyOnly(paramiko.ServerInterface):
    def __init__(self, allowed: paramiko.PKey) -> None:
        self.allowed = allowed

    def get_allowed_auths(self, username: str) -> str:
        return "publickey"

    def check_auth_publickey(self, username: str, key: paramiko.PKey) -> int:
        ok = username == "root" and key.get_base64() == self.allowed.get_base64()
        return paramiko.AUTH_SUCCESSFUL if ok else paramiko.AUTH_FAILED


class SplitSocket:
    """The server's socket before and after the snapshot: its first send (the version
    line) goes to ``early`` (the snapshot builder's end), the rest to ``late`` (a
    restore's).  paramiko's server sends its KEXINIT only after the client's version line,
    so here the replayed preamble is the version line alone; dropbear's KEXINIT, sent at
    once, is replayed in the end-to-end tests."""

    def __init__(self, early: socket.socket, late: socket.socket) -> None:
        self.early, self.late, self.sent_first = early, late, False

    def send(self, data: bytes) -> int:
        target = self.late if self.sent_first else self.early
        self.sent_first = True
        return target.send(data)

    def recv(self, size: int) -> bytes:
        return self.late.recv(size)

    def settimeout(self, timeout: float | None) -> None:
        self.late.settimeout(timeout)

    def close(self) -> None:
        self.late.close()

    @property
    def _closed(self) -> bool:
        return self.late.fileno() < 0


def test_a_client_born_after_the_servers_first_words_shakes_hands_with_it() -> None:
    key = SshKey()
    builder_end, server_early = socket.socketpair()
    restore_end, server_late = socket.socketpair()
    server = paramiko.Transport(SplitSocket(server_early, server_late))  # type: ignore[arg-type]
    server.add_server_key(paramiko.RSAKey.generate(1024))
    server.start_server(event=threading.Event(), server=KeyOnly(key.key))  # in its thread
    try:
        # The builder keeps what the server said first; the snapshot is saved; later a
        # new client connects and is handed those bytes first.
        builder_end.settimeout(5)
        preamble = b""
        while not preamble.endswith(b"\n"):
            preamble += builder_end.recv(1)
        ssh = GuestSsh("snapshot", 0, key)
        ssh.connect_over(restore_end, preamble, timeout=10)
        assert ssh.connected
        assert server.is_authenticated() and server.get_username() == "root"
        ssh.close()
    finally:
        server.close()
        for s in (builder_end, server_early):
            s.close()


def test_a_replay_socket_hands_out_the_preamble_first_then_the_peer(
        pair: tuple[socket.socket, socket.socket]) -> None:
    guest, host = pair
    replay = ReplaySocket(host, b"abcdef")
    guest.sendall(b"xyz")
    assert [replay.recv(4), replay.recv(4), replay.recv(4)] == [b"abcd", b"ef", b"xyz"]
    assert replay.send(b"hi") == 2 and guest.recv(2) == b"hi"
    assert not replay._closed
    replay.close()
    assert replay._closed


def test_a_session_that_does_not_answer_is_an_ssh_error_within_its_deadline(
        pair: tuple[socket.socket, socket.socket]) -> None:
    _, host = pair
    ssh = GuestSsh("snapshot", 0, SshKey())
    with pytest.raises(SshError, match=r"snapshot's pre-connected channel within 1\.0 s"):
        ssh.connect_over(host, b"SSH-2.0-dropbear\r\n", timeout=1)
    assert not ssh.connected


def test_the_key_of_a_snapshot_loads_back_as_saved(tmp_path: Path) -> None:
    key = SshKey()
    key.save(tmp_path / "ssh-key")
    loaded = SshKey.load(tmp_path / "ssh-key")
    assert loaded.public_line == key.public_line
    assert (tmp_path / "ssh-key").stat().st_mode & 0o777 == 0o600
