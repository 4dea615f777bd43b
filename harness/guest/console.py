"""The serial console: drained to a timestamped log, scanned for crash signatures.

QEMU writes the serial port into a FIFO (``-chardev pipe``) we made and opened before it
started, so nothing the guest prints before we are ready is lost.  Not a Unix socket:
QEMU's 16550 writes one byte per write(2), a socket charges each such write ~768 bytes
of its 208 KiB send buffer, so a reader that lags by ~280 characters (two CPU hogs were
enough) made QEMU drop console output after four retries (seen: a capture kernel's
``Kernel command line:`` line lost).  A FIFO holds 1 MiB of characters.  A daemon
thread reads it through pexpect's ``fdspawn`` and appends every line to ``console.log``
with a host timestamp; waiters look for patterns in the accumulated text.  Every wait
fails at once on a kernel panic (unless the caller expects one) instead of timing out
later, as QEMU's functional tests do.

Only complete lines are ever matched.  Under load the serial port delivers a line in
pieces, and a pattern whose tail is ``\\S+`` or ``[\\d.]+`` then matches the first piece:
``elfcorehdr=0x2e0`` of ``elfcorehdr=0x2e000000`` once sent the harness to read guest
memory at the wrong address.  So ``text()``, ``find()``, ``wait_for()`` and ``mark()`` see
the console up to its last newline; the unterminated rest joins them when its newline
arrives, or when the console closes (the end of the stream ends the line too).
``LineBuffer`` does the same for any other stream (SSH channels, the kmsg watcher).
"""

from __future__ import annotations

import fcntl
import os
import re
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from re import Pattern
from typing import IO

import pexpect
import pexpect.fdpexpect

from ..errors import BootFailure, DeadlineExceeded, LostVMError, UnexpectedPanic
from ..signatures import CRASH_SIGNATURES
from ..timeouts import Deadline, poll


class LineBuffer:
    """Assembles a stream that arrives in arbitrary pieces into complete lines.

    ``feed`` returns the lines a piece completed (without their newline); the piece of a
    line still waiting for its newline stays inside until then, or until ``flush`` at the
    end of the stream.  Carriage returns are dropped (the serial console sends CRLF).
    """

    def __init__(self) -> None:
        self._partial = ""

    def feed(self, chunk: str) -> list[str]:
        data = self._partial + chunk.replace("\r", "")
        *lines, self._partial = data.split("\n")
        return lines

    def flush(self) -> str | None:
        """The unterminated rest at the end of the stream (None when there is none)."""
        rest, self._partial = self._partial, ""
        return rest or None

    @property
    def partial(self) -> str:
        """What arrived of the line still waiting for its newline."""
        return self._partial


@dataclass(frozen=True)
class ConsoleMatch:
    """Where a pattern matched: offsets into the console text, and the match itself."""

    start: int
    end: int
    text: str
    groups: tuple[str | None, ...]
    at: float          # host monotonic time the matching text arrived (approx.)


#: Linux's F_SETPIPE_SZ (fcntl.h); 1 MiB is /proc/sys/fs/pipe-max-size's default.
_F_SETPIPE_SZ = 1031
PIPE_BYTES = 1 << 20


class Console:
    """One guest's serial console.  ``listen()`` before QEMU starts, ``accept()`` after.

    ``path`` is the base QEMU's ``-chardev pipe,path=`` gets: the guest's output goes
    into ``path.out``, the serial shell's input comes from ``path.in``.
    """

    def __init__(self, path: Path, log_path: Path) -> None:
        self.path = path
        self.log_path = log_path
        self._fd: int | None = None
        self._child: pexpect.fdpexpect.fdspawn | None = None
        # Complete lines only (each ending in "\n"); the line still arriving is in _lines.
        self._text: list[str] = []
        self._joined = ""
        self._length = 0
        self._arrivals: list[tuple[int, float]] = []   # (offset, monotonic) per line batch
        self._lines = LineBuffer()
        self._cond = threading.Condition()
        self._closed = False
        self._thread: threading.Thread | None = None
        self._log: IO[str] | None = None
        self._t0 = time.monotonic()

    # -- lifecycle ------------------------------------------------------------------------
    def listen(self) -> None:
        """Make the FIFOs and open the output one (no writer yet: reads see end of file)."""
        for end in ("in", "out"):
            os.mkfifo(f"{self.path}.{end}", 0o600)
        self._fd = os.open(f"{self.path}.out", os.O_RDONLY | os.O_NONBLOCK)
        try:
            fcntl.fcntl(self._fd, _F_SETPIPE_SZ, PIPE_BYTES)
        except OSError:
            pass    # a lower pipe-max-size: the default 64 KiB still beats a socket

    def accept(self, timeout: float, still_running: Callable[[], bool] | None = None) -> None:
        """Wait for QEMU to open the FIFO; give up early once ``still_running()`` says it
        exited.  A FIFO without a writer reads as end of file, with one as empty."""
        fd = self._fd
        assert fd is not None, "listen() first"
        first: list[bytes] = []

        def connected() -> bool:
            try:
                chunk = os.read(fd, 65536)
            except BlockingIOError:
                return True         # a writer, nothing written yet
            first.append(chunk)
            return bool(chunk)      # b"": no writer yet

        def qemu_alive() -> None:
            if still_running is not None and not still_running():
                raise LostVMError("QEMU exited before connecting its serial console")

        if not poll(connected, deadline=Deadline(timeout, "QEMU connecting its console"),
                    interval=0.01, health=qemu_alive):
            raise LostVMError(f"QEMU did not connect its serial console within {timeout:.1f} s")
        self._child = pexpect.fdpexpect.fdspawn(fd, encoding="utf-8", codec_errors="replace")
        # Lives as long as the console: the drain thread appends until close().
        self._log = open(self.log_path, "a", encoding="utf-8")  # noqa: SIM115
        self._t0 = time.monotonic()
        if first and first[-1]:
            self.feed(first[-1].decode("utf-8", errors="replace"))
        self._thread = threading.Thread(target=self._drain, name="console-drain", daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._closed = True
        if self._thread is not None:
            self._thread.join(timeout=2)
        if self._fd is not None:
            try:
                os.close(self._fd)
            except OSError:
                pass
            self._fd = None
        with self._cond:
            self._end_of_stream()
            if self._log is not None:
                self._log.close()
                self._log = None
            self._cond.notify_all()

    @property
    def eof(self) -> bool:
        return self._closed

    def wait_eof(self, timeout: float) -> bool:
        """Wait until the stream has ended and everything in it is readable (QEMU exited:
        the drain thread still has to deliver the last bytes); False if not in time."""
        with self._cond:
            return self._cond.wait_for(lambda: self._closed, timeout)

    # -- the drain thread -----------------------------------------------------------------
    def _drain(self) -> None:
        assert self._child is not None
        while not self._closed:
            try:
                chunk = self._child.read_nonblocking(65536, timeout=0.2)
            except pexpect.TIMEOUT:
                continue
            except (pexpect.EOF, OSError, ValueError):
                break
            if chunk:
                self.feed(chunk)
        with self._cond:
            self._end_of_stream()
            self._closed = True
            self._cond.notify_all()

    def _end_of_stream(self) -> None:
        """The stream ended: its unterminated last line is complete now (lock held)."""
        rest = self._lines.flush()
        if rest is not None:
            self._add_lines([rest], time.monotonic())

    def feed(self, chunk: str) -> None:
        """Take ``chunk`` as output from the guest (the drain thread calls this; so may tests)."""
        now = time.monotonic()
        with self._cond:
            lines = self._lines.feed(chunk)
            if lines:
                self._add_lines(lines, now)
            self._cond.notify_all()

    def _add_lines(self, lines: list[str], now: float) -> None:
        """Make ``lines`` visible to readers and write them to the log (lock held)."""
        self._arrivals.append((self._length, now))
        block = "".join(line + "\n" for line in lines)
        self._text.append(block)
        self._length += len(block)
        for line in lines:
            self._write_line(line, now)
        if self._log is not None:
            self._log.flush()

    def _write_line(self, line: str, now: float | None = None) -> None:
        if self._log is not None:
            t = (now if now is not None else time.monotonic()) - self._t0
            self._log.write(f"[host {t:10.6f}] {line}\n")

    # -- reading --------------------------------------------------------------------------
    def text(self, start: int = 0) -> str:
        """The console's complete lines from offset ``start`` on."""
        with self._cond:
            if len(self._text) > 1:
                self._joined = "".join(self._text)
                self._text = [self._joined]
            elif self._text:
                self._joined = self._text[0]
            return self._joined[start:]

    def mark(self) -> int:
        """The end of the complete lines so far, to search only what comes after."""
        with self._cond:
            return self._length

    def tail(self, lines: int = 40) -> str:
        """The last ``lines`` lines for evidence, with the line still arriving, if any."""
        with self._cond:
            partial = self._lines.partial
        text = self.text() + (partial + " [line incomplete]" if partial else "")
        return "\n".join(text.splitlines()[-lines:])

    def arrival_time(self, offset: int) -> float:
        """Host monotonic time at which the text at ``offset`` arrived."""
        with self._cond:
            best = self._t0
            for off, t in self._arrivals:
                if off > offset:
                    break
                best = t
            return best

    def find(self, pattern: str | Pattern[str], start: int = 0) -> ConsoleMatch | None:
        rx = re.compile(pattern) if isinstance(pattern, str) else pattern
        text = self.text()
        m = rx.search(text, start)
        if m is None:
            return None
        return ConsoleMatch(m.start(), m.end(), m.group(0), m.groups(),
                            self.arrival_time(m.start()))

    def wait_for(
        self,
        pattern: str | Pattern[str],
        *,
        timeout: float,
        start: int = 0,
        what: str,
        fail_on: Iterable[str] = ("panic", "kvm_error"),
        during_boot: bool = False,
    ) -> ConsoleMatch:
        """Wait until ``pattern`` appears after offset ``start``.

        Fails at once if a signature in ``fail_on`` shows up (``UnexpectedPanic`` or, with
        ``during_boot``, ``BootFailure``), with ``LostVMError`` if the console closes, and
        with ``DeadlineExceeded`` (a harness error) when only time runs out.
        """
        rx = re.compile(pattern) if isinstance(pattern, str) else pattern
        bad = [CRASH_SIGNATURES[k] for k in fail_on]
        deadline = time.monotonic() + timeout
        while True:
            m = self.find(rx, start)
            if m is not None:
                return m
            text = self.text(start)
            for sig in bad:
                hit = sig.search(text)
                if hit:
                    err = BootFailure if during_boot else UnexpectedPanic
                    raise err(f"{what}: the guest printed {hit.group(0)!r} instead",
                              details="console tail:\n" + self.tail())
            with self._cond:
                if self._closed:
                    raise LostVMError(f"{what}: the console closed (QEMU exited?)",
                                      details="console tail:\n" + self.tail())
                left = deadline - time.monotonic()
                if left <= 0:
                    # No crash signature, only time: a slow host as likely as a hung guest,
                    # so a harness error that says how to give it more time.
                    raise DeadlineExceeded(
                        f"{what} did not happen within {timeout:.1f} s (no panic or oops on "
                        "the console; on a busy host raise KDUMP_HARNESS_TIMEOUT_SCALE)",
                        details="console tail:\n" + self.tail())
                self._cond.wait(min(left, 0.25))

    # -- the serial shell fallback --------------------------------------------------------
    def send(self, text: str) -> None:
        """Type ``text`` on the serial port (fallback only: the 16550 FIFO may stall short
        input, so a few newlines follow to push it through)."""
        if self._child is None:
            raise LostVMError("console is not connected")
        try:
            fd = os.open(f"{self.path}.in", os.O_WRONLY | os.O_NONBLOCK)
        except OSError as exc:      # ENXIO: QEMU no longer has it open
            raise LostVMError(f"console input is gone: {exc}") from None
        try:
            os.write(fd, (text + "\n\n\n").encode())
        finally:
            os.close(fd)
