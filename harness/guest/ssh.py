"""SSH into the guest with paramiko: a per-run key, a loopback-only forwarded port.

Commands run with a deadline and return their exit status and output; the serial shell
is only a fallback.  The guest runs dropbear with the public key from the kernel command
line, so no secret ever lands in a cached image.
"""

from __future__ import annotations

import functools
import io
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import paramiko
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from ..errors import GuestCommandError, SshError
from ..timeouts import Deadline, poll
from .presession import ReplaySocket

#: Key exchange, most preferred first: X25519 before paramiko's own first choice
#: (mlkem768x25519), whose ML-KEM and SHA-3 are ~900 more translation blocks for a
#: restored guest's TCG (QEMU 10.0, dropbear 2025.89: 20 ms of guest CPU).
_KEX_FIRST = "curve25519-sha256@libssh.org"


@dataclass(frozen=True)
class CommandResult:
    command: str
    status: int
    stdout: str
    stderr: str
    elapsed: float

    @property
    def output(self) -> str:
        return self.stdout + self.stderr

    @property
    def ok(self) -> bool:
        return self.status == 0


class SshKey:
    """The guest's authorized key pair: RSA, made once per process.

    Not ECDSA or Ed25519: the guest's dropbear verifies the user's signature under TCG,
    and after a snapshot restore (no translated code yet) an RSA verify (e = 65537) took
    ~35 ms less than an ECDSA P-256 one (measured, QEMU 10.0, dropbear 2025.89): a tenth
    of restore-to-kdump-ready.  Generating RSA costs ~50 ms, hence once per process (the
    guests are throwaway and reachable from this host only).
    """

    def __init__(self, key: paramiko.PKey | None = None) -> None:
        self.key = key or _process_key()

    @classmethod
    def load(cls, path: Path) -> SshKey:
        """The key pair ``save`` wrote (a snapshot's guest trusts only its own).

        Not paramiko's loader for RSA: cryptography checks an RSA private key's primes on
        every load, ~70 ms of each restore (OpenSSL 3); this key is the harness's own."""
        data = path.read_bytes()
        try:
            key = serialization.load_pem_private_key(data, None,
                                                     unsafe_skip_rsa_key_validation=True)
        except (ValueError, TypeError):
            key = None
        if isinstance(key, rsa.RSAPrivateKey):
            return cls(paramiko.RSAKey(key=key))
        return cls(paramiko.PKey.from_path(path))

    @property
    def public_line(self) -> str:
        return f"{self.key.get_name()} {self.key.get_base64()}"

    @property
    def kernel_arg(self) -> str:
        """The public key with its space replaced, fit for ``harness.authkey=``."""
        return f"{self.key.get_name()}:{self.key.get_base64()}"

    def save(self, path: Path) -> None:
        buf = io.StringIO()
        self.key.write_private_key(buf)
        path.write_text(buf.getvalue())
        path.chmod(0o600)


@functools.cache
def _process_key() -> paramiko.PKey:
    return paramiko.RSAKey.generate(bits=2048)


class GuestSsh:
    """One SSH transport to the guest, reused for every command."""

    def __init__(self, host: str, port: int, key: SshKey, *, user: str = "root") -> None:
        self.host = host
        self.port = port
        self.key = key
        self.user = user
        self._transport: paramiko.Transport | None = None
        #: Set when the guest's SSH server stopped opening channels: (when, why).  Every
        #: later command fails at once instead of waiting out its own timeout.
        self._unresponsive: tuple[float, str] | None = None

    def connect(self, timeout: float) -> None:
        """Connect, retrying while the guest's dropbear is not yet accepting."""
        deadline = Deadline(timeout, f"an SSH connection to {self.host}:{self.port}")
        last: list[Exception] = []

        def attempt() -> paramiko.Transport | None:
            sock: socket.socket | None = None
            try:
                sock = socket.create_connection((self.host, self.port), timeout=2)
                # Without it each handshake stalls twice on the guest's delayed ACK
                # (40 ms each): connecting to a running guest took 0.12 s, now 0.04 s.
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                return self._handshake(sock, deadline)
            except (OSError, paramiko.SSHException, EOFError) as exc:
                last[:] = [exc]
                if sock is not None:
                    sock.close()
                return None

        transport = poll(attempt, deadline=deadline, interval=0.1)
        if transport is None:
            raise SshError(f"no SSH connection to {self.host}:{self.port} within "
                           f"{timeout:.1f} s: {last[0] if last else 'no attempt'!r}")
        self._transport = transport

    def connect_over(self, sock: socket.socket, preamble: bytes, timeout: float) -> None:
        """Shake hands on an already connected ``sock`` whose server sent ``preamble``
        before this process existed: a snapshot's pre-connected session (presession.py)."""
        deadline = Deadline(timeout, "the SSH handshake on the snapshot's session")
        try:
            self._transport = self._handshake(ReplaySocket(sock, preamble), deadline)
        except (OSError, paramiko.SSHException, EOFError) as exc:
            sock.close()
            raise SshError(f"no SSH session over the snapshot's pre-connected channel "
                           f"within {timeout:.1f} s: {exc!r}") from exc

    def _handshake(self, sock: socket.socket | ReplaySocket,
                   deadline: Deadline) -> paramiko.Transport:
        transport = paramiko.Transport(sock)
        options = transport.get_security_options()
        options.kex = (_KEX_FIRST, *(k for k in options.kex if k != _KEX_FIRST))
        transport.banner_timeout = max(1.0, deadline.remaining())
        try:
            transport.start_client(timeout=max(1.0, deadline.remaining()))
            transport.auth_publickey(self.user, self.key.key)
            if not transport.is_authenticated():
                raise SshError("public key authentication failed")
        except BaseException:
            transport.close()
            raise
        transport.set_keepalive(5)
        return transport

    @property
    def connected(self) -> bool:
        return self._transport is not None and self._transport.is_active()

    def _check_usable(self, command: str) -> paramiko.Transport:
        if self._transport is None or not self._transport.is_active():
            raise SshError(f"SSH is not connected; cannot run: {command}")
        if self._unresponsive is not None:
            since, why = self._unresponsive
            raise SshError(f"the guest stopped answering SSH {time.monotonic() - since:.0f} s "
                           f"ago ({why}); not running: {command}")
        return self._transport

    def _open(self, transport: paramiko.Transport, command: str,
              timeout: float) -> paramiko.Channel:
        try:
            return transport.open_session(timeout=timeout)
        except paramiko.SSHException as exc:
            self._unresponsive = (time.monotonic(), f"no channel within {timeout:.0f} s "
                                                    f"for {command[:60]!r}")
            raise SshError(f"the guest's SSH server opened no channel within {timeout:.0f} s "
                           f"(the guest may have hung) for: {command}") from exc

    def run(self, command: str, *, timeout: float, check: bool = False,
            stdin: bytes | None = None) -> CommandResult:
        """Run ``command`` through the guest shell; raise ``SshError`` on timeout."""
        transport = self._check_usable(command)
        started = time.monotonic()
        chan = self._open(transport, command, timeout)
        try:
            chan.settimeout(timeout)
            chan.exec_command(command)
            if stdin is not None:
                chan.sendall(stdin)
            chan.shutdown_write()
            out, err = _collect(chan, started + timeout)
            if not chan.exit_status_ready():
                raise TimeoutError()
            status = chan.recv_exit_status()
            chan.close()
        except TimeoutError:
            raise SshError(f"guest command did not finish within {timeout:.1f} s: "
                           f"{command}") from None
        except (paramiko.SSHException, OSError, EOFError) as exc:
            raise SshError(f"SSH failed while running {command!r}: {exc!r}") from exc
        result = CommandResult(command, status, out.decode("utf-8", "replace"),
                               err.decode("utf-8", "replace"), time.monotonic() - started)
        if check and status != 0:
            raise GuestCommandError(command, status, result.output)
        return result

    def start(self, command: str, *, timeout: float,
              gone: Callable[[], bool] | None = None) -> paramiko.Channel:
        """Start ``command`` without waiting for it (e.g. a panic trigger); caller owns it.

        Raises ``SshError``; with ``maybe_sent`` set when the request to run it got no
        answer, so it may have started: the channel broke, ``timeout`` passed, or
        ``gone()`` said the guest is gone (a panic trigger kills the guest before dropbear
        answers, and paramiko waits for that answer until the connection breaks: never,
        for a snapshot's session, whose chardev outlives the guest's end of it).
        """
        chan = self._open(self._check_usable(command), command, timeout)
        answered = threading.Event()
        failed: list[BaseException] = []

        def request() -> None:
            try:
                chan.exec_command(command)
            except (paramiko.SSHException, OSError, EOFError) as exc:
                failed.append(exc)
            finally:
                answered.set()

        # The request waits in its own thread; one left waiting ends when the transport
        # closes (``close``, at the guest's shutdown).
        threading.Thread(target=request, name="ssh-exec-request", daemon=True).start()
        deadline = Deadline(timeout, f"an answer to the request to start {command!r}")
        while not answered.wait(0.02):
            if gone is not None and gone():
                raise SshError(f"the guest went away before its SSH server answered the "
                               f"request to start {command!r}", maybe_sent=True)
            if deadline.expired():
                raise SshError(f"the guest's SSH server did not answer the request to start "
                               f"{command!r} within {timeout:.1f} s", maybe_sent=True)
        if failed:
            raise SshError(f"SSH broke while starting {command!r}: {failed[0]!r}",
                           maybe_sent=True) from failed[0]
        return chan

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()
            self._transport = None


def _collect(chan: paramiko.Channel, deadline: float) -> tuple[bytes, bytes]:
    out, err = bytearray(), bytearray()
    while True:
        if time.monotonic() > deadline:
            raise TimeoutError()
        got = False
        while chan.recv_ready():
            out += chan.recv(65536)
            got = True
        while chan.recv_stderr_ready():
            err += chan.recv_stderr(65536)
            got = True
        if chan.exit_status_ready() and not chan.recv_ready() and not chan.recv_stderr_ready():
            # Drain what arrived between the checks, then stop.
            while chan.recv_ready():
                out += chan.recv(65536)
            while chan.recv_stderr_ready():
                err += chan.recv_stderr(65536)
            if chan.eof_received or chan.closed:
                return bytes(out), bytes(err)
            # exit status may precede EOF by a moment
            chan.status_event.wait(0.01)
            if chan.eof_received or chan.closed:
                return bytes(out), bytes(err)
            time.sleep(0.005)
            continue
        if not got:
            time.sleep(0.005)
