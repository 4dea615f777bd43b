"""What the console says about the guest's health while it should be running.

A panic, the OOM killer and memory the kernel refused to add are the guest's own
results, named by the console line that showed them, as it happens: not the SSH failure
that follows once the OOM killer has taken the guest's SSH server, nor a settle deadline
that runs out long after the guest said why.
"""

from __future__ import annotations

import re
from collections.abc import Callable

from ..errors import GuestOutOfMemory, HotplugNotHonoured, UnexpectedPanic
from ..signatures import CRASH_SIGNATURES, GUEST_MEMORY_SIGNATURES


def console_health(text: str, doing: str, tail: Callable[[], str]) -> None:
    """Raise the guest error ``text`` (complete console lines) shows, if any."""
    details = f"console tail:\n{tail()}" if text else None
    panic = CRASH_SIGNATURES["panic"].search(text)
    if panic:
        raise UnexpectedPanic(f"the guest panicked while {doing}: {line_at(text, panic)}",
                              details=details)
    oom = GUEST_MEMORY_SIGNATURES["oom"].search(text)
    if oom:
        raise GuestOutOfMemory(f"the guest ran out of memory while {doing}: "
                               f"{line_at(text, oom)}", details=details)
    refused = list(GUEST_MEMORY_SIGNATURES["add_memory"].finditer(text))
    if refused:
        raise HotplugNotHonoured(
            f"the guest refused hot-added memory while {doing} ({len(refused)} time(s)): "
            f"{line_at(text, refused[0])}", details=details)


def line_at(text: str, match: re.Match[str]) -> str:
    """The whole console line ``match`` is on, stripped."""
    start = text.rfind("\n", 0, match.start()) + 1
    end = text.find("\n", match.end())
    return text[start:end if end >= 0 else len(text)].strip()
