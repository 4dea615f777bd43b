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
belong to that swarm even when the ring buffer holds the whole boot; the log is streamed
while the swarm runs, so a flood that overruns the ring buffer loses nothing (or says
how many records it lost).
"""

from __future__ import annotations

import enum
import itertools
import re
import uuid
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from ..errors import HarnessError
from ..signatures import TRYLOCK_FAILURE

if TYPE_CHECKING:
    from ..guest import Guest


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
    lost_records: int = 0    # log records the reader missed: the counts are lower bounds
    #: Whether the last crash hot-plug handler to run failed its trylock (True) or
    #: rewrote the header (False; None when neither was logged).  A failure leaves the
    #: header stale only if no later successful event rebuilt it: this says which.
    last_update_failed: bool | None = None

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
        if self.lost_records:
            text += f"; {self.lost_records} log records LOST (counts are lower bounds)"
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
            counts.last_update_failed = True
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
            counts.last_update_failed = False
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
        raise HarnessError(f"marker {start!r} is not in the kernel log (ring buffer wrapped?)")
    stop = len(lines)
    if end is not None:
        stop = next((i for i in range(begin + 1, len(lines)) if end in lines[i]), len(lines))
    return "\n".join(lines[begin + 1:stop])


@dataclass(frozen=True)
class KmsgRecord:
    """One ``/dev/kmsg`` record: sequence number, timestamp (s) and message."""

    seq: int
    ts: float
    msg: str

    def line(self) -> str:
        return f"[{self.ts:12.6f}] {self.msg}"


def parse_kmsg(text: str) -> list[KmsgRecord]:
    """``/dev/kmsg`` output (``PRIO,SEQ,USEC,FLAGS;MESSAGE``), de-duplicated, in order.

    The streamer restarts ``cat`` when it falls behind (read returns EPIPE), which
    replays the buffer: records are unique by sequence number.
    """
    records: dict[int, KmsgRecord] = {}
    for line in text.splitlines():
        if not line or line[0] == " ":       # " SUBSYSTEM=..." dictionary continuation
            continue
        head, sep, msg = line.partition(";")
        fields = head.split(",")
        if not sep or len(fields) < 3 or not fields[1].isdigit() or not fields[2].isdigit():
            continue
        seq = int(fields[1])
        records.setdefault(seq, KmsgRecord(seq, int(fields[2]) / 1e6, msg))
    return sorted(records.values(), key=lambda r: r.seq)


def missing_records(records: Sequence[KmsgRecord]) -> int:
    """Records absent between the first and the last (overwritten before they were read)."""
    return sum(b.seq - a.seq - 1 for a, b in itertools.pairwise(records))


_KMSG_DIR = "/run/harness/klog"


class KlogMarker:
    """Records the guest's kernel log for one stretch (a swarm) and scans just that.

    ``begin()`` starts streaming ``/dev/kmsg`` to a file in the guest, then writes a
    marker record; ``collect()`` writes an end marker, waits for it to reach the file,
    stops the stream and scans what lies between.  Streaming, not ``dmesg`` afterwards:
    a contention run can print more than the ring buffer holds (every ``crash_hotplug``
    read that fails its trylock prints a line), and ``dmesg`` would then have lost the
    start.  Records the stream itself missed are counted (``KlogCounts.lost_records``).
    """

    def __init__(self, guest: Guest, label: str = "swarm") -> None:
        self.guest = guest
        self.label = label
        self.token = uuid.uuid4().hex[:12]
        self.text = ""
        self._dir = f"{_KMSG_DIR}/{self.token}"

    @property
    def start_line(self) -> str:
        return f"kdump-harness: {self.label} begin {self.token}"

    @property
    def end_line(self) -> str:
        return f"kdump-harness: {self.label} end {self.token}"

    def begin(self) -> None:
        d = self._dir
        # The stream restarts cat when it falls behind (EPIPE); the host de-duplicates.
        self.guest.run(
            f"mkdir -p {d}; (while [ ! -e {d}/stop ]; do cat /dev/kmsg & echo $! > {d}/cat; "
            f"wait $!; done) > {d}/kmsg 2>/dev/null & echo $! > {d}/loop; "
            f"n=0; until grep -q . {d}/kmsg 2>/dev/null || [ $n -ge 200 ]; do "
            f"sleep 0.01; n=$((n+1)); done; "
            f"echo '{self.start_line}' > /dev/kmsg", check=True)

    def collect(self, timeout: float = 10.0) -> KlogCounts:
        """Counts between the markers; raises ``HarnessError`` if the stretch is lost."""
        d = self._dir
        out = self.guest.run(
            f"echo '{self.end_line}' > /dev/kmsg; n=0; "
            f"until grep -q '{self.end_line}' {d}/kmsg || [ $n -ge {int(timeout * 20)} ]; do "
            f"sleep 0.05; n=$((n+1)); done; touch {d}/stop; n=0; "
            # A cat that fell behind is restarted by the loop: kill until the loop is gone,
            # or the new cat and its pid file race the rm below (seen under CPU load).
            f"while kill -0 $(cat {d}/loop) 2>/dev/null && [ $n -lt 200 ]; do "
            f"kill $(cat {d}/cat) 2>/dev/null; sleep 0.01; n=$((n+1)); done; "
            f"cat {d}/kmsg && {{ rm -rf {d}; true; }}", check=True, timeout=timeout + 30).stdout
        records = parse_kmsg(out)
        begin = next((i for i, r in enumerate(records) if self.start_line in r.msg), None)
        if begin is None:
            raise HarnessError(f"the kernel log stream lost its start marker {self.start_line!r}")
        end = next((i for i in range(begin, len(records)) if self.end_line in records[i].msg),
                   len(records))
        stretch = records[begin:end + 1]
        self.text = "\n".join(r.line() for r in stretch[1:end - begin])
        counts = scan(self.text)
        counts.lost_records = missing_records(stretch)
        return counts
