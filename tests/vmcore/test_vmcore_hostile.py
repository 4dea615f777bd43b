"""A hostile corpus: small synthetic files no kernel would write, and what the verifier says.

Each case breaks one structural fact; the reader must refuse it naming the program header
(or note) and field, or the verifier must call it ``invalid``; never ``stale`` or
``incomplete``, which a kernel developer reads as the hot-plug bug.
"""

from __future__ import annotations

import struct
import tracemalloc
from typing import Any

import pytest
from vmcore_guest import (
    BUSY,
    DUMP_RAM,
    IDLE,
    PANIC_WINDOW,
    RELEASE,
    make_spec,
    make_topology,
)

from harness.errors import VmcoreFormatError
from harness.topology import AddressRange
from harness.vmcore import (
    DumpFormat,
    FindingCode,
    Limits,
    Severity,
    Verdict,
    VerifyReport,
    open_dump,
    verify,
)
from harness.vmcore.constants import NoteType
from harness.vmcore.writer import (
    CoreSpec,
    SyntheticCpu,
    build_elf_core,
    build_kdump,
    build_raw_elfcorehdr,
    default_vmcoreinfo,
    flatten,
    note_bytes,
)

C = FindingCode
PHDR0 = 64                      # the first program header
_OFF, _PADDR, _FILESZ, _MEMSZ = 8, 24, 32, 40


def phdr_at(index: int, field: int) -> int:
    return PHDR0 + index * 56 + field


def patched(data: bytes, *edits: tuple[int, int]) -> bytes:
    """``data`` with each ``(offset, u64 value)`` written."""
    buf = bytearray(data)
    for offset, value in edits:
        struct.pack_into("<Q", buf, offset, value)
    return bytes(buf)


def u64(data: bytes, offset: int) -> int:
    return int(struct.unpack_from("<Q", data, offset)[0])


def refused(data: bytes, **kwargs: Any) -> VmcoreFormatError:
    with pytest.raises(VmcoreFormatError) as info:
        open_dump(data, **kwargs)
    assert "\n" not in str(info.value)
    return info.value


def check(data: bytes, **options: Any) -> VerifyReport:
    options.setdefault("panic_window", PANIC_WINDOW)
    return verify(open_dump(data), make_topology(), **options)


CORE = build_elf_core(make_spec(), memory="headers-only")      # PT_NOTE, text, 4 RAM loads
SPLIT = build_elf_core(make_spec(), memory="headers-only", split_notes=True)   # 3 PT_NOTEs
RAW = build_raw_elfcorehdr(make_spec(), possible_cpus=4)        # 4 CPU + 1 VMCOREINFO notes


# -- raw elfcorehdr or ELF core: p_offset decides, not the number of PT_NOTEs ----------------


def test_an_elf_core_with_several_pt_notes_is_an_elf_core_and_its_notes_are_checked() -> None:
    dump = open_dump(SPLIT)
    assert dump.format == DumpFormat.ELF and len(dump.cpu_notes) == 2
    assert dump.vmcoreinfo is not None and dump.vmcoreinfo.osrelease == RELEASE
    assert check(SPLIT).verdict == Verdict.ACCURATE
    wrong = build_elf_core(make_spec(vmcoreinfo=default_vmcoreinfo("6.1.0-other")),
                           memory="headers-only", split_notes=True)
    report = check(wrong)
    assert report.verdict == Verdict.MISMATCH
    assert [f.code for f in report.errors] == [C.OSRELEASE_MISMATCH]


def test_detection_by_content_and_forcing() -> None:
    spec = make_spec()
    assert open_dump(build_elf_core(spec)).format == DumpFormat.ELF
    assert open_dump(build_raw_elfcorehdr(spec)).format == DumpFormat.RAW_ELFCOREHDR
    assert open_dump(build_kdump(spec)).format == DumpFormat.KDUMP
    flat = open_dump(flatten(build_kdump(spec)))
    assert (flat.format, flat.flattened) == (DumpFormat.KDUMP, True)
    # A single-CPU machine's raw header has 2 PT_NOTEs; an ELF core may have several too.
    one_cpu = build_raw_elfcorehdr(spec, possible_cpus=1)
    assert open_dump(one_cpu).format == DumpFormat.RAW_ELFCOREHDR
    assert open_dump(one_cpu, format="raw-elfcorehdr").is_raw_header
    # Forcing a format the program headers contradict is refused, naming the PT_NOTE.
    wrong = refused(build_elf_core(spec), format="raw-elfcorehdr")
    assert (wrong.field, wrong.offset) == ("p_offset", 64 + 8) and "an ELF core" in str(wrong)
    wrong = refused(one_cpu, format="elf")
    assert (wrong.field, wrong.offset) == ("p_offset", 64 + 8) and "raw elfcorehdr" in str(wrong)
    assert refused(b"\0" * 100).field == "signature"
    assert "diskdump" in str(refused(b"DISKDUMP" + b"\0" * 100))
    assert refused(build_elf_core(spec), format="kdump").field == "signature"
    assert refused(build_kdump(spec), format="elf").field == "e_ident[EI_MAG]"
    with pytest.raises(ValueError, match="unknown dump format"):
        open_dump(b"", format="core")


@pytest.mark.parametrize(("data", "phdr"), [
    # A raw header whose second CPU PT_NOTE has a file offset.
    (patched(RAW, (phdr_at(1, _OFF), 0x1000)), 1),
    # A split ELF core whose VMCOREINFO PT_NOTE has p_paddr == p_offset.
    (patched(SPLIT, (phdr_at(2, _PADDR), u64(SPLIT, phdr_at(2, _OFF)))), 2),
    # A raw header whose RAM PT_LOAD has a file offset.
    (patched(RAW, (phdr_at(6, _OFF), 0x2000)), 6),
], ids=["raw-note-with-file-offset", "elf-note-with-physical-offset", "raw-load-file-offset"])
def test_half_raw_half_elf_is_refused_naming_the_program_header(data: bytes, phdr: int) -> None:
    error = refused(data)
    assert (error.field, error.offset) == ("p_offset", phdr_at(phdr, _OFF)), str(error)
    assert f"program header {phdr} " in str(error) and "half a raw elfcorehdr" in str(error)


def test_elf_notes_with_every_load_at_its_physical_address_are_refused() -> None:
    loads = range(1, 6)
    data = patched(CORE, *((phdr_at(i, _OFF), u64(CORE, phdr_at(i, _PADDR))) for i in loads))
    error = refused(data)
    assert (error.field, error.offset) == ("p_offset", phdr_at(1, _OFF))


def test_kexec_tools_backup_region_may_point_elsewhere() -> None:
    # kexec_load headers point the PT_LOAD of [0x1000, 0xa0000) at its backup copy.
    low = AddressRange(0x1000, 0xA_0000)
    raw = build_raw_elfcorehdr(make_spec(ram=(low, *DUMP_RAM)), possible_cpus=4)
    low_phdr = 4 + 1 + 1                      # CPU notes, VMCOREINFO, text, then low RAM
    assert u64(raw, phdr_at(low_phdr, _PADDR)) == low.start
    raw = patched(raw, (phdr_at(low_phdr, _OFF), 0x3F00_0000))
    dump = open_dump(raw)
    assert dump.format == DumpFormat.RAW_ELFCOREHDR
    assert verify(dump, make_topology()).verdict == Verdict.ACCURATE


# -- structural impossibilities are refused ---------------------------------------------------


def test_pt_load_data_over_notes_or_headers_is_refused() -> None:
    notes_at = u64(CORE, phdr_at(0, _OFF))
    for target, what in ((notes_at + 16, "PT_NOTE 0 data"), (PHDR0 + 8, "program header table"),
                         (0, "the ELF header")):
        error = refused(patched(CORE, (phdr_at(2, _OFF), target)))
        assert (error.field, error.offset) == ("p_offset", phdr_at(2, _OFF)), str(error)
        assert what in str(error) and "PT_LOAD 2 data" in str(error)


def test_a_load_without_file_data_may_point_anywhere() -> None:
    # p_filesz 0 (makedumpfile excluded every page): no data, so no overlap.
    data = patched(CORE, (phdr_at(2, _OFF), 0), (phdr_at(2, _FILESZ), 0))
    assert open_dump(data).format == DumpFormat.ELF


def test_pt_note_over_the_program_header_table_or_another_note_is_refused() -> None:
    error = refused(patched(CORE, (phdr_at(0, _OFF), PHDR0 + 56)))
    assert (error.field, error.offset) == ("p_offset", phdr_at(0, _OFF))
    assert "program header table" in str(error)
    second = u64(SPLIT, phdr_at(0, _OFF)) + 8        # note 1 starts inside note 0
    error = refused(patched(SPLIT, (phdr_at(1, _OFF), second)))
    assert (error.field, error.offset) == ("p_offset", phdr_at(1, _OFF))
    assert "PT_NOTE 1 data" in str(error) and "PT_NOTE 0 data" in str(error)


def test_no_pt_load_at_all_is_refused() -> None:
    only_notes = CoreSpec(cpus=(BUSY, IDLE), ram=(), text=None)
    for data in (build_elf_core(only_notes), build_raw_elfcorehdr(only_notes, possible_cpus=2)):
        error = refused(data)
        assert (error.field, error.offset) == ("e_phnum", 56) and "PT_LOAD" in str(error)


def test_raw_note_buffers_that_share_memory_are_refused() -> None:
    raw = build_raw_elfcorehdr(make_spec(), note_addresses=[0x7F00_0000, 0x7F00_0100])
    error = refused(raw)
    assert (error.field, error.offset) == ("p_paddr", phdr_at(1, _PADDR))


# -- contradictions inside a dump are invalid ---------------------------------------------------


def _vmcoreinfo_note(text: str) -> bytes:
    return note_bytes("VMCOREINFO", NoteType.NT_VMCOREINFO, text.encode())


def test_two_vmcoreinfo_notes_that_disagree_are_invalid() -> None:
    other = default_vmcoreinfo("6.1.0-other", crash_time=1_700_000_000)
    data = build_elf_core(make_spec(extra_notes=(_vmcoreinfo_note(other),)),
                          memory="headers-only")
    report = check(data)
    assert report.verdict == Verdict.INVALID
    conflict = next(f for f in report.errors if f.code == C.VMCOREINFO_CONFLICT)
    dump = open_dump(data)
    first, second = (f"{v.note_offset:#x}" for v in dump.vmcoreinfos)
    assert "OSRELEASE" in conflict.message and first in conflict.message
    assert second in conflict.message and conflict.verdict == Verdict.INVALID


def test_two_identical_vmcoreinfo_notes_are_a_warning() -> None:
    same = make_spec().vmcoreinfo
    assert same is not None
    report = check(build_elf_core(make_spec(extra_notes=(_vmcoreinfo_note(same),)),
                                  memory="headers-only"))
    assert report.verdict == Verdict.ACCURATE
    assert C.VMCOREINFO_DUPLICATE in report.codes(Severity.WARNING)


def test_a_vmcoreinfo_key_given_twice_is_invalid() -> None:
    text = default_vmcoreinfo(RELEASE, crash_time=1_700_000_000) + "OSRELEASE=6.1.0-other\n"
    report = check(build_elf_core(make_spec(vmcoreinfo=text), memory="headers-only"))
    assert report.verdict == Verdict.INVALID
    conflict = next(f for f in report.errors if f.code == C.VMCOREINFO_CONFLICT)
    assert "OSRELEASE twice" in conflict.message and "6.1.0-other" in conflict.message


def test_kdump_offset_vmcoreinfo_elsewhere_is_compared_with_the_note() -> None:
    data = bytearray(build_kdump(make_spec()))
    sub = 4096
    offset_note, size_note = struct.unpack_from("<qQ", data, sub + 48)
    other = default_vmcoreinfo("6.1.0-other", crash_time=1_700_000_000).encode()
    elsewhere = offset_note + size_note + 64
    data[elsewhere:elsewhere + len(other)] = other
    struct.pack_into("<qQ", data, sub + 32, elsewhere, len(other))
    report = check(bytes(data))
    assert report.verdict == Verdict.INVALID
    assert C.VMCOREINFO_CONFLICT in report.codes(Severity.ERROR)
    # makedumpfile's own layout (the field points at the note's descriptor): one VMCOREINFO.
    assert len(open_dump(build_kdump(make_spec())).vmcoreinfos) == 1


def test_kdump_header_release_and_vmcoreinfo_must_agree() -> None:
    report = check(build_kdump(make_spec(), release="6.1.0-other"))
    assert report.verdict == Verdict.INVALID
    [conflict] = report.errors
    assert conflict.code == C.VMCOREINFO_CONFLICT and "6.1.0-other" in conflict.message
    assert check(build_kdump(make_spec())).verdict == Verdict.ACCURATE


# -- limits: bounded memory, clear refusals -----------------------------------------------------


def test_cpu_notes_are_capped_at_nr_cpus_and_the_worst_case_stays_small() -> None:
    many = CoreSpec(cpus=tuple(SyntheticCpu(pid=i) for i in range(Limits.MAX_CPUS + 1)))
    data = build_elf_core(many, memory="headers-only")
    error = refused(data)
    assert error.field == "notes" and f"more than {Limits.MAX_CPUS} CPU notes" in str(error)
    # The first note past the cap: 8192 notes of 12 + 8 + 336 bytes after the PT_NOTE's start.
    assert error.offset == u64(data, phdr_at(0, _OFF)) + Limits.MAX_CPUS * 356
    most = build_elf_core(CoreSpec(cpus=many.cpus[:-1]), memory="headers-only")
    tracemalloc.start()
    try:
        dump = open_dump(most)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert len(dump.cpu_notes) == Limits.MAX_CPUS and dump.cpu_notes[-1].pid == Limits.MAX_CPUS - 1
    assert peak < 16 << 20, f"{peak / 2**20:.1f} MiB to read {Limits.MAX_CPUS} CPU notes"


def test_raw_cpu_slots_and_note_buffers_are_capped() -> None:
    raw = build_raw_elfcorehdr(make_spec(), possible_cpus=Limits.MAX_CPUS + 1)
    error = refused(raw)
    assert (error.field, error.offset) == ("p_type", phdr_at(Limits.MAX_CPUS, 0))
    huge = patched(RAW, (phdr_at(4, _MEMSZ), Limits.MAX_RAW_NOTE_BUFFER + 1),
                   (phdr_at(4, _FILESZ), 0))
    error = refused(huge)
    assert (error.field, error.offset) == ("p_memsz", phdr_at(4, _MEMSZ))


def test_vmcoreinfo_size_and_count_are_capped() -> None:
    big = default_vmcoreinfo() + "X" * Limits.MAX_VMCOREINFO
    error = refused(build_elf_core(make_spec(vmcoreinfo=big), memory="headers-only"))
    assert error.field == "n_descsz" and "VMCOREINFO" in str(error)
    text = make_spec().vmcoreinfo
    assert text is not None
    copies = (_vmcoreinfo_note(text),) * Limits.MAX_VMCOREINFO_NOTES
    error = refused(build_elf_core(make_spec(extra_notes=copies), memory="headers-only"))
    assert error.field == "notes" and "VMCOREINFO notes" in str(error)


def test_note_count_is_capped() -> None:
    tiny = (note_bytes("Xen", 0x100_0001, b""),) * Limits.MAX_NOTES
    error = refused(build_elf_core(make_spec(extra_notes=tiny), memory="headers-only"))
    assert error.field == "notes" and f"more than {Limits.MAX_NOTES} notes" in str(error)
