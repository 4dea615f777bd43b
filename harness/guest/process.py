"""Process hygiene: QEMU dies with its runner and only our own processes are signalled."""

from __future__ import annotations

import atexit
import ctypes
import os
import signal
import subprocess
import weakref
from pathlib import Path
from typing import Protocol


class Killable(Protocol):
    def kill(self) -> None: ...


#: Guests whose QEMU is running; killed when the interpreter exits (the parent-death
#: signal covers ``kill -9``; this covers a normal exit that skipped a teardown).
LIVE: weakref.WeakSet[Killable] = weakref.WeakSet()


@atexit.register
def _kill_leftovers() -> None:
    for guest in list(LIVE):
        guest.kill()


def log_tail(path: Path, lines: int = 20) -> str:
    """The last ``lines`` of a log file (QEMU's), for error messages."""
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"

_PR_SET_PDEATHSIG = 1


def die_with_parent() -> None:
    """``preexec_fn``: SIGKILL the child when the thread that spawned it dies.

    Covers ``kill -9`` of pytest, where no Python cleanup runs (drgn's vmtest does the
    same).  The signal follows the spawning *thread*, so guests are started from a
    long-lived thread (the main thread in pytest and the CLI).
    """
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    # If the parent died before prctl took effect we would never be signalled.
    if os.getppid() == 1:
        os._exit(1)


def kill_process_group(proc: subprocess.Popen[bytes], sig: int = signal.SIGKILL) -> None:
    """Signal the process group led by ``proc`` (started with ``start_new_session``)."""
    if proc.poll() is not None:
        return
    try:
        # The group id equals the pid only because we made it a session leader: never
        # signal a group we did not create.
        if os.getpgid(proc.pid) == proc.pid:
            os.killpg(proc.pid, sig)
        else:
            proc.send_signal(sig)
    except ProcessLookupError:
        pass
