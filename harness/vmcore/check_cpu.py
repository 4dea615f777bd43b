"""CPU checks: the dump's CPU notes against the online CPUs, the header's note slots.

/proc/vmcore keeps the notes of the CPUs that saved one, in ascending CPU order, and the
capture kernel finds them through the first kernel's elfcorehdr: one PT_NOTE slot per CPU
*present* when the header was built (Linux 6.1) or per *possible* CPU (6.6+).  An online CPU
without a slot cannot save a note however well it answers the shutdown NMI, so when the
header is at hand a shortfall it explains is reported once, as the header being stale for
CPUs (``header-cpu-slots-missing``), and only notes missing beyond that as CPUs that did not
answer (``cpu-notes-missing``).
"""

from __future__ import annotations

from collections.abc import Sequence

from ..topology import Topology, format_cpu_list
from .findings import Finding, FindingCode, Verdict, error, info, warning
from .model import Dump
from .notes import CpuNote

C = FindingCode


def cpus_without_slot(slots: int, online: Sequence[int]) -> tuple[int, ...]:
    """The online CPUs a header with ``slots`` CPU slots cannot hold.

    The kernel fills slots in ascending CPU order (``for_each_present_cpu`` /
    ``for_each_possible_cpu``), so the highest-numbered online CPUs are the ones left out.
    """
    return tuple(sorted(online)[slots:])


def check_cpu_notes(dump: Dump, topology: Topology, panic_cpu: int | None,
                    header: Dump | None) -> list[Finding]:
    """Count the CPU notes, check each decodes, and find the CPU that panicked."""
    notes = dump.cpu_notes
    online = tuple(sorted(topology.cpus_online))
    slots = len(header.cpu_note_segments) if header is not None else None
    out, mapping = _count_notes(notes, online, slots)
    out += _check_contents(notes, mapping)
    out += _check_panic_cpu(notes, online, mapping, panic_cpu)
    return out


def _count_notes(notes: Sequence[CpuNote], online: tuple[int, ...],
                 slots: int | None) -> tuple[list[Finding], dict[int, int] | None]:
    """Findings about the number of notes, and note index -> CPU when it can be told."""
    cpus = format_cpu_list(online)
    if not online:
        return [info(C.CPU_NOTES_UNCHECKED, f"{len(notes)} CPU note(s); the topology lists no "
                                            "online CPUs to compare with")], None
    if len(notes) == len(online):
        return [info(C.CPU_NOTES_MATCH, f"{len(notes)} CPU notes for {len(online)} online CPUs "
                                        f"({cpus})")], dict(enumerate(online))
    if len(notes) > len(online):
        return [error(C.CPU_NOTES_EXTRA, Verdict.MISMATCH,
                      f"{len(notes)} CPU notes but only {len(online)} online CPUs ({cpus}): "
                      "the topology is not this dump's")], None
    short = len(online) - len(notes)
    if slots is None:
        why = "CPUs that did not answer the shutdown NMI, or a header without their slots"
    elif slots < len(online):
        # header-cpu-slots-missing reports the CPUs without a slot; only the rest is news.
        slotless = len(cpus_without_slot(slots, online))
        short -= slotless
        if short <= 0:
            return [], dict(enumerate(online[:len(notes)]))
        why = (f"beyond the {slotless} CPU(s) without a header slot: CPUs that did not "
               "answer the shutdown NMI")
    else:
        why = f"the header has {slots} slots: CPUs that did not answer the shutdown NMI"
    return [error(C.CPU_NOTES_MISSING, Verdict.INCOMPLETE,
                  f"{len(notes)} CPU notes for {len(online)} online CPUs ({cpus}): {short} "
                  f"missing ({why})")], None


def _check_contents(notes: Sequence[CpuNote], mapping: dict[int, int] | None) -> list[Finding]:
    out = []
    for note in notes:
        cpu = mapping.get(note.index) if mapping is not None else None
        which = f"CPU note {note.index}" + (f" (CPU {cpu})" if cpu is not None else "")
        if note.prstatus is None:
            out.append(error(C.CPU_NOTE_UNDECODABLE, Verdict.INVALID,
                             f"{which} at {note.offset:#x} has a {note.desc_size}-byte "
                             "descriptor, not a 336-byte x86_64 prstatus", cpu=cpu))
        elif note.prstatus.rip == 0:
            out.append(warning(C.CPU_NOTE_NO_RIP, f"{which} has rip 0: its registers were not "
                                                  "saved", cpu=cpu))
    return out


def _check_panic_cpu(notes: Sequence[CpuNote], online: tuple[int, ...],
                     mapping: dict[int, int] | None, panic_cpu: int | None) -> list[Finding]:
    if panic_cpu is None:
        return _busy_notes(notes, mapping)
    if mapping is None:
        return [warning(C.PANIC_CPU_UNKNOWN, f"cannot tell which note is CPU {panic_cpu}'s: "
                                             f"{len(notes)} notes for {len(online)} online CPUs",
                        cpu=panic_cpu)]
    index = next((i for i, c in mapping.items() if c == panic_cpu), None)
    status = notes[index].prstatus if index is not None else None
    if index is None:
        return [warning(C.PANIC_CPU_UNKNOWN, f"CPU {panic_cpu} panicked but is not online per "
                                             "the topology", cpu=panic_cpu)]
    if status is None:
        return []
    if status.pid == 0:
        return [error(C.PANIC_CPU_IDLE, Verdict.MISMATCH,
                      f"CPU {panic_cpu} panicked but its note shows the idle task (pid 0, rip "
                      f"{status.rip:#x})", cpu=panic_cpu)]
    return [info(C.PANIC_CPU, f"CPU {panic_cpu} (the panicking CPU) ran pid {status.pid} at "
                              f"rip {status.rip:#x}", cpu=panic_cpu)]


def _busy_notes(notes: Sequence[CpuNote], mapping: dict[int, int] | None) -> list[Finding]:
    # Without the caller's word, the panicking CPU is the one whose note is not idle
    # (several with an NMI panic: every CPU was running something).
    busy = [n for n in notes if n.prstatus is not None and n.prstatus.pid != 0]
    if not busy:
        if not notes:
            return []
        # An NMI-triggered panic on an idle CPU saves pid 0 everywhere; a sysrq panic cannot.
        return [warning(C.NO_BUSY_CPU_NOTE, "every CPU note shows the idle task (pid 0): "
                                            "expected only when an NMI panicked an idle CPU")]

    def label(index: int) -> str:
        cpu = mapping.get(index) if mapping is not None else None
        return f"CPU {cpu}" if cpu is not None else f"note {index}"

    described = ", ".join(f"{label(n.index)} pid {n.prstatus.pid} rip {n.prstatus.rip:#x}"
                          for n in busy[:8] if n.prstatus is not None)
    more = f" and {len(busy) - 8} more" if len(busy) > 8 else ""
    first = mapping.get(busy[0].index) if mapping is not None else None
    return [info(C.PANIC_CPU, f"non-idle CPU note(s): {described}{more}", cpu=first)]


def check_header_slots(header: Dump, topology: Topology, *, in_header: bool) -> list[Finding]:
    """The raw header's CPU note slots against the CPUs, and its one VMCOREINFO PT_NOTE."""
    out = [_slot_finding(len(header.cpu_note_segments), topology)]
    infos = len(header.vmcoreinfo_segments)
    if infos == 0:
        out.append(error(C.HEADER_VMCOREINFO_NOTE, Verdict.INCOMPLETE,
                         "the header has no VMCOREINFO PT_NOTE"))
    elif infos > 1:
        where = ", ".join(f"{s.address:#x}" for s in header.vmcoreinfo_segments[:4])
        out.append(error(C.HEADER_VMCOREINFO_NOTE, Verdict.INVALID,
                         f"the header has {infos} VMCOREINFO PT_NOTEs (at {where}); a kernel "
                         "writes one"))
    if in_header:
        out = [_mark_header(f) for f in out]
    return out


def _cpus(cpus: Sequence[int]) -> str:
    """``CPU 2`` or ``CPUs 2-3``."""
    return f"CPU {cpus[0]}" if len(cpus) == 1 else f"CPUs {format_cpu_list(cpus)}"


def _mark_header(f: Finding) -> Finding:
    return Finding(f.severity, f.code, f.message, f.verdict, f.cpu, f.range, f.device,
                   in_header=True)


def _slot_finding(slots: int, topology: Topology) -> Finding:
    possible, present = topology.cpus_possible, topology.cpus_present
    online = tuple(sorted(topology.cpus_online))
    counts = (f"{len(possible)} possible, {len(present)} present, {len(online)} online CPUs")
    if not possible:
        return info(C.CPU_NOTES_UNCHECKED, f"the header has {slots} CPU note slot(s); the "
                                           "topology lists no possible CPUs to compare with")
    if slots == len(possible):
        return info(C.HEADER_CPU_NOTES_MATCH,
                    f"the header has a note slot for each of the {slots} possible CPUs "
                    f"({format_cpu_list(possible)})")
    if slots > len(possible):
        # The kernel writes at most one per possible CPU: this header is another machine's.
        return error(C.HEADER_CPU_NOTES_WRONG, Verdict.MISMATCH,
                     f"the header has {slots} CPU note slot(s), more than the {counts}: "
                     "not this machine's header")
    if slots < len(online):
        left_out = cpus_without_slot(slots, online)
        return error(C.HEADER_CPU_SLOTS_MISSING, Verdict.STALE,
                     f"the crash header is stale for CPUs: {slots} note slot(s) for {counts}, "
                     f"so there is no slot for {_cpus(left_out)}, which cannot save a note at "
                     "a panic (the header is sized by the CPUs present (before 6.6) or possible "
                     "when it is built, and was not rebuilt since)", cpu=left_out[0])
    if slots == len(present):
        # Before 6.6 crash_prepare_elf64_headers() wrote one PT_NOTE per *present* CPU.
        return warning(C.HEADER_CPU_NOTES_PRESENT_ONLY,
                       f"the header has note slots for the {slots} present CPUs, not the "
                       f"{len(possible)} possible ones (kernels before 6.6 do this)")
    return error(C.HEADER_CPU_NOTES_WRONG, Verdict.STALE,
                 f"the header has {slots} CPU note slot(s) for {counts}")
