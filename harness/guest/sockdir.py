"""Each guest's socket directory (QMP socket, console FIFOs, SSH pre-session socket).

It lives in the system's temporary directory, not in the evidence directory: a Unix
socket's path is limited to 108 bytes.  A guest removes it when it stops; a harness
process killed outright (SIGKILL, the OOM killer; two tests do it on purpose) cannot, and
its QEMU dies with it (the parent-death signal) but the directory stayed: about two per
suite run.  So each directory is named after its process, and the next guest started on
the host removes those whose process is gone and whose sockets no process holds (none in
``/proc/net/unix``): both, so that the directory of a live harness in another PID
namespace sharing this ``/tmp`` is not taken for a stale one.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from pathlib import Path

PREFIX = "kh-"
_NAME = re.compile(rf"^{PREFIX}(\d+)-[\w-]+$")


_SWEPT_BY: set[int] = set()     # the processes that swept already (a fork sweeps anew)


def make_sockdir() -> Path:
    """A new socket directory for a guest of this process; the first one a process makes
    sweeps the stale ones first."""
    if os.getpid() not in _SWEPT_BY:
        _SWEPT_BY.add(os.getpid())
        sweep_stale()
    return Path(tempfile.mkdtemp(prefix=f"{PREFIX}{os.getpid()}-"))


def sweep_stale(parent: Path | None = None) -> list[Path]:
    """Remove the socket directories whose harness process is gone; return them."""
    parent = parent or Path(tempfile.gettempdir())
    removed: list[Path] = []
    try:
        entries = list(parent.iterdir())
    except OSError:
        return removed
    held: set[str] | None = None
    for entry in entries:
        match = _NAME.match(entry.name)
        if match is None or not entry.is_dir() or entry.is_symlink():
            continue
        if _process_alive(int(match.group(1))):
            continue
        held = _held_socket_paths() if held is None else held
        if any(path.startswith(f"{entry}/") for path in held):
            continue
        shutil.rmtree(entry, ignore_errors=True)
        removed.append(entry)
    return removed


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True          # someone else's process: alive, and not ours to judge
    return True


def _held_socket_paths(table: Path = Path("/proc/net/unix")) -> set[str]:
    """The paths of the Unix sockets some process holds (listening or connected)."""
    try:
        lines = table.read_text().splitlines()[1:]
    except OSError:
        return set()
    return {fields[7] for fields in (line.split() for line in lines) if len(fields) >= 8}


__all__ = ["PREFIX", "make_sockdir", "sweep_stale"]
