"""The kernel-log scanner: what the crash hot-plug code said during one swarm.

Counts, from ``dmesg`` text:

* trylock failures, in both wordings (6.6-6.11 ``elfcorehdr may be inaccurate``, 6.12+
  ``kdump image may be inaccurate``); they come from the hot-plug handler *and* from
  ``crash_hotplug`` sysfs reads, which print the same line;
* ``crash hp: hp_action N`` debug lines per action code (ADD_CPU=1, REMOVE_CPU=2,
  ADD_MEMORY=3, REMOVE_MEMORY=4) and ``crash hp: updated elfcorehdr`` lines: both need
  ``dyndbg="file crash_core.c +p; file crash.c +p"`` (GuestKernelOptions sets it);
* every other ``crash hp:`` line (``unable to locate elfcorehdr segment``, ``update
  elfcorehdr elfsz ... > memsz ...``, ...), kept verbatim.

A swarm is delimited by markers written to ``/dev/kmsg`` (``KlogMarker``), so the counts
belong to that swarm even when the ring buffer holds the whole boot.
"""

from __future__ import annotations

import enum
import re
import uuid
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from .console import TRYLOCK_FAILURE

if TYPE_CHECKING:
    from .machine import Guest


class HpAction(enum.IntEnum):
    """``KEXEC_CRASH_HP_*`` action codes (include/linux/kexec.h)."""

    ADD_CPU = 1
    REMOVE_CPU = 2
    ADD_MEMORY = 3
    REMOVE_MEMORY = 4


_TRYLOCK_OLD = re.compile(r"crash hp: kexec_trylock\(\) failed, elfcorehdr may be inaccurate")
_TRYLOCK_NEW = re.compile(r"crash hp: kexec_trylock\(\) failed, kdump image may be inaccurate")
_HP_ACTION = re.compile(r"crash hp: hp_action (\d+)(?:, cpu (\d+))?")
_UPDATED = re.compile(r"crash hp: updated elfcorehdr")
_CRASH_HP = re.compile(r"crash hp: (.*)$")
_TIMESTAMP = re.compile(r"^\[\s*\d+\.\d+\]\s*")


@dataclass
class KlogCounts:
    """What one stretch of kernel log says about crash hot-plug."""

    trylock_failures: int = 0
    trylock_old_wording: int = 0
    trylock_new_wording: int = 0
    hp_actions: dict[str, int] = field(default_factory=dict)   # action name -> count
    updated_elfcorehdr: int = 0
    other_errors: list[str] = field(default_factory=list)
    lines: int = 0

    @property
    def hp_action_total(self) -> int:
        return sum(self.hp_actions.values())

    def to_json_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["hp_action_total"] = self.hp_action_total
        return d

    def summary(self) -> str:
        actions = ", ".join(f"{k}={v}" for k, v in sorted(self.hp_actions.items())) or "none"
        text = (f"trylock failures {self.trylock_failures} "
                f"(old wording {self.trylock_old_wording}, new {self.trylock_new_wording}); "
                f"hp_action lines {self.hp_action_total} ({actions}); "
                f"updated elfcorehdr {self.updated_elfcorehdr}")
        if self.other_errors:
            text += f"; other crash hp lines {len(self.other_errors)}"
        return text


def scan(text: str) -> KlogCounts:
    """Count crash hot-plug lines in kernel log text (``dmesg`` or console output)."""
    counts = KlogCounts()
    for raw in text.splitlines():
        line = _TIMESTAMP.sub("", raw.rstrip())
        counts.lines += 1
        if "crash hp:" not in line:
            continue
        if TRYLOCK_FAILURE.search(line):
            counts.trylock_failures += 1
            if _TRYLOCK_OLD.search(line):
                counts.trylock_old_wording += 1
            elif _TRYLOCK_NEW.search(line):
                counts.trylock_new_wording += 1
            continue
        m = _HP_ACTION.search(line)
        if m:
            code = int(m.group(1))
            try:
                name = HpAction(code).name
            except ValueError:
                name = f"ACTION_{code}"
            counts.hp_actions[name] = counts.hp_actions.get(name, 0) + 1
            continue
        if _UPDATED.search(line):
            counts.updated_elfcorehdr += 1
            continue
        other = _CRASH_HP.search(line)
        if other:
            counts.other_errors.append(other.group(0))
    return counts


def between_markers(text: str, start: str, end: str | None = None) -> str:
    """The part of ``text`` after the line containing ``start`` (and before ``end``)."""
    lines = text.splitlines()
    begin = next((i for i, line in enumerate(lines) if start in line), None)
    if begin is None:
        raise ValueError(f"marker {start!r} is not in the kernel log (ring buffer wrapped?)")
    stop = len(lines)
    if end is not None:
        stop = next((i for i in range(begin + 1, len(lines)) if end in lines[i]), len(lines))
    return "\n".join(lines[begin + 1:stop])


class KlogMarker:
    """Marks a stretch of the guest's kernel log, then scans just that stretch.

    ``begin()`` writes ``kdump-harness: <label> begin <token>`` to ``/dev/kmsg``;
    ``collect()`` reads ``dmesg`` and returns the counts after that line (and the text).
    """

    def __init__(self, guest: Guest, label: str = "swarm") -> None:
        self.guest = guest
        self.label = label
        self.token = uuid.uuid4().hex[:12]
        self.text = ""

    @property
    def start_line(self) -> str:
        return f"kdump-harness: {self.label} begin {self.token}"

    @property
    def end_line(self) -> str:
        return f"kdump-harness: {self.label} end {self.token}"

    def begin(self) -> None:
        self.guest.run(f"echo '{self.start_line}' > /dev/kmsg", check=True)

    def collect(self) -> KlogCounts:
        out = self.guest.run(f"echo '{self.end_line}' > /dev/kmsg; dmesg", check=True).stdout
        self.text = between_markers(out, self.start_line, self.end_line)
        return scan(self.text)
