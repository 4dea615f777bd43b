"""A snapshot's SSH session, connected before the snapshot is saved.

After a restore TCG translates every code path anew, and the guest's SSH server paid for
it before it said a word: its ``accept``, the seeding of its random pool from seven /proc
files, the ``fork`` of a session and that session's set-up took ~0.15 s of the ~0.25 s
from ``cont`` to SSH (QEMU 10.0, dropbear 2025.89).  So the snapshot carries a session
that has done all of that already:

* the snapshot's machine has a guest forward (slirp ``guestfwd``): a TCP connection from
  the guest to ``10.0.2.100:22`` is a QEMU chardev on the host (a Unix socket).  slirp
  keeps such a connection in the migration stream, and a restored QEMU serves it through
  its own socket, so the guest's end survives the restore;
* while the snapshot is made, ``/harness/ssh-presession start`` connects it and runs
  dropbear in inetd mode on it.  Dropbear speaks first (its version line, then its
  KEXINIT), and those bytes reach the host before the save: the builder keeps them as the
  snapshot's ``ssh-preamble``;
* a restored guest's host side connects to the chardev and hands paramiko a socket that
  answers with the preamble first (``ReplaySocket``), then with the guest: the handshake
  goes on from the server's KEXINIT.  The key exchange and the authentication are done
  after the restore, with fresh keys from the client; only the server's KEXINIT cookie
  and its random pool are the snapshot's, the same in every restore (as they would be in
  any restored SSH server).

It is used once per restore: a later ``GuestSsh.connect`` goes to the guest's SSH daemon
as after a cold boot.
"""

from __future__ import annotations

import socket
import struct
import time
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import SnapshotError

if TYPE_CHECKING:
    from .machine import Guest

#: slirp's guest forward: an address in the user network that no host or service has.
GUESTFWD = "10.0.2.100:22"
CHARDEV_ID = "sshpre"
#: Run in the guest (over SSH) to connect the session: guest-images/rootfs/harness/.
START_COMMAND = "/harness/ssh-presession start"
#: RFC 4253: a version line is at most 255 bytes; dropbear's KEXINIT is ~1 KiB.
_MAX_LINE = 255
_MAX_PACKET = 35000
_KEXINIT = 20


def presession_args(path: Path) -> tuple[list[str], str]:
    """QEMU's chardev for the session's host end, and the ``-netdev user`` suffix that
    forwards the guest's connection to it."""
    return (["-chardev", f"socket,id={CHARDEV_ID},path={path},server=on,wait=off"],
            f",guestfwd=tcp:{GUESTFWD}-chardev:{CHARDEV_ID}")


def connect(path: Path, timeout: float) -> socket.socket:
    """The host end: QEMU listens from its start, so one attempt is enough."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    try:
        sock.connect(str(path))
    except OSError as exc:
        sock.close()
        raise SnapshotError(f"cannot connect to the snapshot's SSH session at {path}: "
                            f"{exc}") from exc
    return sock


def read_preamble(sock: socket.socket, timeout: float) -> bytes:
    """What an SSH server sends before it hears from the client: its version line and its
    KEXINIT packet (unencrypted: ``uint32 length`` and that many bytes)."""
    deadline = time.monotonic() + timeout
    buf = bytearray()

    def need(n: int, what: str) -> None:
        while len(buf) < n:
            left = deadline - time.monotonic()
            if left <= 0:
                raise SnapshotError(f"the guest's SSH session sent no {what} within "
                                    f"{timeout:.0f} s (got {bytes(buf[:80])!r})")
            sock.settimeout(left)
            try:
                chunk = sock.recv(n - len(buf))
            except TimeoutError:
                continue
            if not chunk:
                raise SnapshotError(f"the guest's SSH session closed before its {what} "
                                    f"(got {bytes(buf[:80])!r})")
            buf.extend(chunk)

    while b"\n" not in buf:
        need(len(buf) + 1, "version line")
        if len(buf) > _MAX_LINE:
            raise SnapshotError(f"the guest's SSH session sent no version line: "
                                f"{bytes(buf[:80])!r}")
    start = buf.index(b"\n") + 1
    if not buf.startswith(b"SSH-2.0-"):
        raise SnapshotError(f"the guest's SSH session is not SSH 2: {bytes(buf[:80])!r}")
    need(start + 4, "KEXINIT")
    (length,) = struct.unpack(">I", buf[start:start + 4])
    if not 5 < length <= _MAX_PACKET:
        raise SnapshotError(f"the guest's SSH session sent a {length}-byte first packet")
    need(start + 4 + length, "KEXINIT")
    if buf[start + 5] != _KEXINIT:
        raise SnapshotError(f"the guest's SSH session's first packet is message "
                            f"{buf[start + 5]}, not KEXINIT")
    return bytes(buf[:start + 4 + length])


class ReplaySocket:
    """A connected socket whose first received bytes are ``preamble``: what the server
    sent before the snapshot was saved.  Only what paramiko's Transport uses."""

    def __init__(self, sock: socket.socket, preamble: bytes) -> None:
        self._sock = sock
        self._pending = bytearray(preamble)

    def recv(self, size: int) -> bytes:
        if self._pending:
            out = bytes(self._pending[:size])
            del self._pending[:size]
            return out
        return self._sock.recv(size)

    def send(self, data: bytes) -> int:
        return self._sock.send(data)

    def sendall(self, data: bytes) -> None:
        self._sock.sendall(data)

    def settimeout(self, timeout: float | None) -> None:
        self._sock.settimeout(timeout)

    def gettimeout(self) -> float | None:
        return self._sock.gettimeout()

    def fileno(self) -> int:
        return self._sock.fileno()

    def getpeername(self) -> str:
        return str(self._sock.getpeername())

    def close(self) -> None:
        self._sock.close()

    @property
    def _closed(self) -> bool:  # read by paramiko's Transport.stop_thread
        return self._sock.fileno() < 0


def start_presession(guest: Guest, timeout: float) -> tuple[socket.socket, bytes]:
    """Connect the snapshot's session in ``guest`` (a snapshot machine being made): the
    host end connects first, so no byte the server sends is lost.  Returns that end
    (keep it open until the state is saved) and the server's preamble."""
    sock = connect(guest.presession_socket, timeout)
    try:
        guest.run(START_COMMAND, check=True, timeout=timeout)
        return sock, read_preamble(sock, timeout)
    except BaseException:
        sock.close()
        raise


__all__ = ["GUESTFWD", "START_COMMAND", "ReplaySocket", "connect", "presession_args",
           "read_preamble", "start_presession"]
