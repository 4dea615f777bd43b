"""What the console says about the guest's health while it should be running.

A panic, the OOM killer and memory the kernel refused to add are the guest's own
results, named by the console line that showed them, as it happens: not the SSH failure
that follows once the OOM killer has taken the guest's SSH server, nor a settle deadline
that runs out long after the guest said why.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from ..errors import GuestOutOfMemory, GuestReset, HotplugNotHonoured, UnexpectedPanic
from ..signatures import CRASH_SIGNATURES, GUEST_MEMORY_SIGNATURES

#: QEMU's SHUTDOWN reasons a guest causes itself, as this module says them.
_ENDED = {"guest-reset": "reset itself", "guest-shutdown": "powered itself off",
          "guest-panic": "reported a panic to QEMU"}


def how_it_ended(shutdown: Mapping[str, Any] | None,
                 debug_log: Path | None = None) -> tuple[str, str]:
    """What QEMU said of a guest that ended itself: its SHUTDOWN event, and a triple fault
    when its debug log (``-d cpu_reset``, ``qemu_args``) has one; with that log's tail."""
    reason = str((shutdown or {}).get("reason", ""))
    seen = f"QEMU: SHUTDOWN {reason}" if reason else "QEMU exited with status 0"
    try:
        qemu_log = debug_log.read_text(errors="replace") if debug_log else ""
    except OSError:
        qemu_log = ""
    if "Triple fault" in qemu_log:
        seen += "; QEMU's log: a triple fault"
    return seen, "\n".join(qemu_log.splitlines()[-40:])


def guest_ended(shutdown: Mapping[str, Any] | None, doing: str, tail: str,
                debug_log: Path | None = None) -> GuestReset:
    """The error for a running guest whose QEMU exited 0 on its own (``-no-reboot``: a
    reset ends QEMU), named by QEMU's SHUTDOWN event when it came and by QEMU's debug log
    when that says why.  Seen under TCG during hot-plug bursts of DIMMs and vCPUs
    together, with nothing on the console, until TCG guests booted with
    ``no_ipi_broadcast=1`` (``qemu_args.GuestKernelOptions``); without this the settle
    waited out its whole deadline for ``_OST`` events."""
    reason = str((shutdown or {}).get("reason", ""))
    seen, log_tail = how_it_ended(shutdown, debug_log)
    return GuestReset(f"the guest {_ENDED.get(reason, 'ended')} ({seen}) while {doing}, "
                      "with nothing about it on its console",
                      details=f"console tail:\n{tail}\nQEMU debug log tail "
                              f"(qemu-debug.log):\n{log_tail}")


def console_health(text: str, doing: str, tail: Callable[[], str]) -> None:
    """Raise the guest error ``text`` (complete console lines) shows, if any: the one
    whose line came first, because what follows it is its consequence (a refused DIMM's
    ``add_memory failed``, then the OOM killer taking dropbear 0.14 s later: a health
    check on a busy host sees both lines at once)."""
    details = f"console tail:\n{tail()}" if text else None
    found: list[tuple[int, Callable[[], Exception]]] = []
    panic = CRASH_SIGNATURES["panic"].search(text)
    if panic:
        found.append((panic.start(), lambda: UnexpectedPanic(
            f"the guest panicked while {doing}: {line_at(text, panic)}", details=details)))
    oom = GUEST_MEMORY_SIGNATURES["oom"].search(text)
    if oom:
        found.append((oom.start(), lambda: GuestOutOfMemory(
            f"the guest ran out of memory while {doing}: {line_at(text, oom)}",
            details=details)))
    refused = list(GUEST_MEMORY_SIGNATURES["add_memory"].finditer(text))
    if refused:
        found.append((refused[0].start(), lambda: HotplugNotHonoured(
            f"the guest refused hot-added memory while {doing} ({len(refused)} time(s)): "
            f"{line_at(text, refused[0])}", details=details)))
    if found:
        raise min(found, key=lambda item: item[0])[1]()


def line_at(text: str, match: re.Match[str]) -> str:
    """The whole console line ``match`` is on, stripped."""
    start = text.rfind("\n", 0, match.start()) + 1
    end = text.find("\n", match.end())
    return text[start:end if end >= 0 else len(text)].strip()
