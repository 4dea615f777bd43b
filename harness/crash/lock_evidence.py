"""Who held the kexec lock when the kernel panicked, in the kernel's own words.

``__crash_kexec()`` only *tries* the kexec lock: when a holder has it at the panic, no
capture kernel starts (KNOWLEDGE.md).  Two holders log what they do while they hold it,
once dynamic debug is on for ``crash_core.c``, ``crash.c`` and ``kexec_file.c`` (6.6+):

* the crash hot-plug handler, ``crash_handle_hotplug_event()``: ``crash hp: hp_action 3``
  (or 4: memory) after taking the lock, ``crash hp: updated elfcorehdr`` (or an error)
  before releasing;
* ``kexec_file_load()`` (6.8+ with ``kexec -d`` or the dyndbg line): ``kexec_file:
  kernel: ...`` as it starts, ``kexec_file: kexec_file_load: type:...`` just before the
  unlock.

The lock is exclusive, so these sections cannot interleave: one that opens closes any
that was still open (it ended without a line, e.g. a load that failed).  A section still
open at the ``Kernel panic`` line is the holder.  The closing lines come a little before
the unlock (the handler still re-protects the crashkernel pages, which under TCG takes
tens of milliseconds), and sysfs readers of ``crash_hotplug`` and ``kexec_crash_size``
take the lock without a line: for those, a panic that does not kexec also prints every
other CPU's backtrace (``panic_print=0x40``), and a CPU caught inside a lock-taking
function names the holder.

The log comes from the dump (``vmcore-dmesg``) when there is one, else from the console:
with ``panic_print=0x20`` a panic that does not kexec replays the whole log buffer before
``---[ end Kernel panic``, debug lines included (``console_verbose()``), so the evidence
survives the lost guest.
"""

from __future__ import annotations

import enum
import re
from dataclasses import asdict, dataclass
from typing import Any

from ..signatures import PANIC, TRYLOCK_FAILURE


class LockHolder(enum.StrEnum):
    HOTPLUG_HANDLER = "crash_hotplug_handler"
    KEXEC_FILE_LOAD = "kexec_file_load"
    #: Every section the log opened had closed before the panic.
    NONE = "none"
    #: A ``crash_hotplug`` sysfs read (``crash_check_hotplug_support()``, 6.10+) or a
    #: ``kexec_crash_size`` access: only a backtrace shows these.
    SYSFS_READER = "sysfs_reader"
    KEXEC_LOAD = "kexec_load"
    #: The log has no section lines at all (no dynamic debug, a 6.1 kernel, a log that
    #: did not survive): nothing can be said.
    UNKNOWN = "unknown"


_OPENS = {
    # Memory actions only (ADD_MEMORY=3, REMOVE_MEMORY=4): for CPU actions x86 returns
    # without a line once the header describes every possible CPU (kexec_file_load, or
    # after the first update; arch/x86/kernel/crash.c), so their end is never logged.
    LockHolder.HOTPLUG_HANDLER: re.compile(r"crash hp: hp_action [34]$"),
    LockHolder.KEXEC_FILE_LOAD: re.compile(r"kexec_file: kernel: "),
}
_CLOSES = {
    LockHolder.HOTPLUG_HANDLER: re.compile(r"crash hp: (?!hp_action )"),
    LockHolder.KEXEC_FILE_LOAD: re.compile(r"kexec_file: kexec_file_load: type:"),
}
#: Functions that run with the kexec lock held (kernel/crash_core.c, kexec_file.c,
#: kexec.c, crash_reserve.c; 6.6 to 7.x), as they appear in a backtrace.
_HOLDING_FUNCTIONS = {
    "crash_handle_hotplug_event": LockHolder.HOTPLUG_HANDLER,
    "__do_sys_kexec_file_load": LockHolder.KEXEC_FILE_LOAD,
    "__se_sys_kexec_file_load": LockHolder.KEXEC_FILE_LOAD,
    "__do_sys_kexec_load": LockHolder.KEXEC_LOAD,
    "do_kexec_load": LockHolder.KEXEC_LOAD,
    "crash_check_hotplug_support": LockHolder.SYSFS_READER,
    "crash_get_memory_size": LockHolder.SYSFS_READER,
    "crash_shrink_memory": LockHolder.SYSFS_READER,
}
_BACKTRACE_CPU = re.compile(r"NMI backtrace for cpu (\d+)")
_FRAME = re.compile(r"^(\w+)\+0x[0-9a-f]+/0x[0-9a-f]+")
_TIMESTAMP = re.compile(r"^\[\s*\d+\.\d+\]\s*(?:\[\s*[TC]\d+\]\s*)?")


@dataclass(frozen=True)
class LockEvidence:
    """The kernel log's account of the kexec lock at the panic."""

    holder: LockHolder
    source: str                           # "vmcore-dmesg" or "console replay"
    opened_by: str | None = None          # the line that opened the unfinished section
    #: The open section's closing line came after the ``Kernel panic`` line: the holder
    #: let go while the panic ran, so the trylock in ``__crash_kexec()`` raced with it.
    closed_after_panic: bool = False
    sections: int = 0                     # complete sections before the panic
    header_updates: int = 0               # of which ``crash hp: updated elfcorehdr``
    trylock_failures: int = 0             # ``kexec_trylock() failed`` before the panic
    #: Another CPU's backtrace at the panic, inside a function that holds the lock:
    #: ``"cpu 1: crash_handle_hotplug_event+0x95/0x110"`` (panics that did not kexec).
    caught_in: str | None = None
    caught_holder: LockHolder | None = None

    @property
    def held(self) -> bool:
        """The log or a backtrace names a holder at the panic."""
        return self.caught_holder is not None or self.holder not in (LockHolder.NONE,
                                                                        LockHolder.UNKNOWN)

    def describe(self) -> str:
        caught = (f"; a backtrace caught the {self.caught_holder.value} in it ({self.caught_in})"
                  if self.caught_holder is not None else "")
        if self.holder is LockHolder.UNKNOWN:
            return (f"the {self.source} has no kexec lock lines (dynamic debug off or 6.1?)"
                    + caught)
        if self.holder is LockHolder.NONE:
            return (f"no section of the kexec lock was open at the panic ({self.sections} "
                    f"in the {self.source} had all ended){caught}")
        late = "; it ended after the panic line" if self.closed_after_panic else ""
        return (f"the kexec lock was held at the panic by the {self.holder.value} "
                f"('{self.opened_by}' had not ended in the {self.source}{late}){caught}")

    def to_json_dict(self) -> dict[str, Any]:
        return asdict(self)


def _message(raw: str) -> str:
    return _TIMESTAMP.sub("", raw.strip())


def _opened(line: str) -> LockHolder | None:
    return next((kind for kind, rx in _OPENS.items() if rx.search(line)), None)


def _closes(line: str, kind: LockHolder) -> bool:
    return bool(_CLOSES[kind].search(line)) and not TRYLOCK_FAILURE.search(line)


def kexec_lock_at_panic(log: str, *, source: str) -> LockEvidence:
    """Read ``log`` (a kernel log ending in, or holding, a panic) for the lock holder."""
    lines = [_message(raw) for raw in log.splitlines()]
    panic_at = next((i for i, line in enumerate(lines) if PANIC.search(line)), len(lines))
    open_kind: LockHolder | None = None
    opened_by: str | None = None
    sections = updates = failures = 0
    for line in lines[:panic_at]:
        if TRYLOCK_FAILURE.search(line):
            failures += 1
            continue
        kind = _opened(line)
        if kind is not None:
            open_kind, opened_by = kind, line
        elif open_kind is not None and _closes(line, open_kind):
            sections += 1
            open_kind = opened_by = None
        updates += "crash hp: updated elfcorehdr" in line
    caught_in, caught = _caught_holding(lines[panic_at + 1:])
    if open_kind is None:
        holder = LockHolder.NONE if sections else LockHolder.UNKNOWN
        return LockEvidence(holder, source, sections=sections, header_updates=updates,
                            trylock_failures=failures, caught_in=caught_in,
                            caught_holder=caught)
    late = any(_closes(line, open_kind) for line in lines[panic_at + 1:])
    return LockEvidence(open_kind, source, opened_by, late, sections, updates, failures,
                        caught_in, caught)


def _caught_holding(lines: list[str]) -> tuple[str | None, LockHolder | None]:
    """The first other CPU whose backtrace (``NMI backtrace for cpu N``) runs inside a
    function that holds the kexec lock; frames marked ``?`` are guesses and not read."""
    cpu: str | None = None
    for line in lines:
        m = _BACKTRACE_CPU.search(line)
        if m:
            cpu = m.group(1)
            continue
        frame = _FRAME.match(line)
        if cpu is not None and frame and frame.group(1) in _HOLDING_FUNCTIONS:
            return f"cpu {cpu}: {line}", _HOLDING_FUNCTIONS[frame.group(1)]
    return None, None
