"""ELF, note and kernel-layout constants for x86_64 crash dumps.

Enum members carry the C names (``PT_LOAD``, ``NT_PRSTATUS``) so they can be grepped for in
the kernel and in ``elf.h``.  Sizes and offsets cite the structure they come from.
"""

from __future__ import annotations

from enum import IntEnum, StrEnum


class ElfClass(IntEnum):
    """``e_ident[EI_CLASS]``."""

    ELFCLASSNONE = 0
    ELFCLASS32 = 1
    ELFCLASS64 = 2


class ElfData(IntEnum):
    """``e_ident[EI_DATA]``: the byte order."""

    ELFDATANONE = 0
    ELFDATA2LSB = 1
    ELFDATA2MSB = 2


class ElfType(IntEnum):
    """``e_type``."""

    ET_NONE = 0
    ET_REL = 1
    ET_EXEC = 2
    ET_DYN = 3
    ET_CORE = 4


class ElfMachine(IntEnum):
    """``e_machine`` values worth naming in an error message."""

    EM_386 = 3
    EM_PPC64 = 21
    EM_S390 = 22
    EM_ARM = 40
    EM_X86_64 = 62
    EM_AARCH64 = 183
    EM_RISCV = 243


class PhdrType(IntEnum):
    """``p_type`` of a program header."""

    PT_NULL = 0
    PT_LOAD = 1
    PT_DYNAMIC = 2
    PT_INTERP = 3
    PT_NOTE = 4
    PT_SHLIB = 5
    PT_PHDR = 6
    PT_TLS = 7


class PhdrFlags(IntEnum):
    """``p_flags`` bits."""

    PF_X = 1
    PF_W = 2
    PF_R = 4


class NoteType(IntEnum):
    """``n_type`` of the notes a Linux crash dump carries.

    A note's type only means something together with its name: ``NT_PRSTATUS`` is type 1 in a
    ``CORE`` note, while the ``VMCOREINFO`` note uses type 0.
    """

    NT_VMCOREINFO = 0      # name "VMCOREINFO" (kernel/vmcore_info.c, append_elf_note)
    NT_PRSTATUS = 1
    NT_PRFPREG = 2
    NT_PRPSINFO = 3
    NT_TASKSTRUCT = 4
    NT_AUXV = 6
    NT_X86_XSTATE = 0x202


class DumpFormat(StrEnum):
    """What a dump file (or buffer) is; the values are the CLI's ``--format`` words."""

    ELF = "elf"                          # /proc/vmcore, makedumpfile -E
    RAW_ELFCOREHDR = "raw-elfcorehdr"    # the first kernel's header, read from guest memory
    KDUMP = "kdump"                      # makedumpfile -c/-l/-z (disk_dump_header "KDUMP   ")
    FLATTENED = "flattened"              # makedumpfile -F: a stream of (offset, size, data) records


#: ``\x7fELF``
ELF_MAGIC = b"\x7fELF"
EI_NIDENT = 16
EI_CLASS = 4
EI_DATA = 5
EI_VERSION = 6
EV_CURRENT = 1

#: ``sizeof(Elf64_Ehdr)``, ``sizeof(Elf64_Phdr)``, ``sizeof(Elf64_Shdr)``, ``sizeof(Elf64_Nhdr)``
ELF64_EHDR_SIZE = 64
ELF64_PHDR_SIZE = 56
ELF64_SHDR_SIZE = 64
ELF64_NHDR_SIZE = 12
#: Linux aligns note names and descriptors to 4 bytes, also in ELF64 cores (``ALIGN(x, 4)``
#: in kernel/crash_core.c and fs/proc/vmcore.c).
NOTE_ALIGN = 4
#: ``e_phnum`` value meaning "the real count is in section header 0's ``sh_info``".
PN_XNUM = 0xFFFF

#: Note names (``n_name`` without the terminating NUL).
CORE_NOTE_NAME = "CORE"
VMCOREINFO_NOTE_NAME = "VMCOREINFO"

#: ``sizeof(struct elf_prstatus)`` on x86_64, and where its fields live.
PRSTATUS_SIZE = 336
PRSTATUS_SIGNO_OFFSET = 0          # pr_info.si_signo
PRSTATUS_CURSIG_OFFSET = 12        # short pr_cursig
PRSTATUS_PID_OFFSET = 32           # pr_pid (then pr_ppid, pr_pgrp, pr_sid)
PRSTATUS_REGS_OFFSET = 112         # pr_reg: struct user_regs_struct
PRSTATUS_FPVALID_OFFSET = 328      # pr_fpvalid
#: ``struct user_regs_struct`` (arch/x86/include/asm/user_64.h), in order.
X86_64_REGISTER_NAMES: tuple[str, ...] = (
    "r15", "r14", "r13", "r12", "rbp", "rbx", "r11", "r10", "r9", "r8",
    "rax", "rcx", "rdx", "rsi", "rdi", "orig_rax", "rip", "cs", "eflags", "rsp", "ss",
    "fs_base", "gs_base", "ds", "es", "fs", "gs",
)

#: x86_64 virtual layout (Documentation/arch/x86/x86_64/mm.rst).  The kernel text mapping
#: ``__START_KERNEL_map`` starts here; the text PT_LOAD's vaddr lies above it.
KERNEL_TEXT_MAP_START = 0xFFFF_FFFF_8000_0000
#: Start of the direct map of all physical memory (``page_offset_base`` without KASLR;
#: with KASLR it moves up, still below the text map).
DIRECT_MAP_START = 0xFFFF_8880_0000_0000
#: x86_64 physical addresses have at most 52 bits (MAX_PHYSMEM_BITS with 5-level paging);
#: a range beyond that is corruption, not memory.
MAX_PHYSICAL_ADDRESS = 1 << 52
#: The first MiB of physical memory, which crash headers may or may not describe (see verify).
LOW_MEMORY_END = 0x10_0000
#: The kernel page size on x86_64 (VMCOREINFO ``PAGESIZE`` says so explicitly).
X86_64_PAGE_SIZE = 4096

#: In the first kernel's elfcorehdr a CPU's PT_NOTE covers ``sizeof(note_buf_t)`` (368 bytes on
#: x86_64) and the VMCOREINFO PT_NOTE covers ``VMCOREINFO_NOTE_SIZE`` (a page of text plus the
#: note headers).  Anything at least this big is the VMCOREINFO note.
VMCOREINFO_MIN_NOTE_SEGMENT = 1024

#: makedumpfile's kdump-compressed format (diskdump_mod.h).
KDUMP_SIGNATURE = b"KDUMP   "
#: ``status`` bit set when makedumpfile ran out of space (``DUMP_DH_COMPRESSED_INCOMPLETE``).
DUMP_DH_COMPRESSED_INCOMPLETE = 0x8

#: makedumpfile's flattened format (makedumpfile.h).
MAKEDUMPFILE_SIGNATURE = b"makedumpfile"
MAKEDUMPFILE_HEADER_SIZE = 4096          # MAX_SIZE_MDF_HEADER
FLAT_HEADER_TYPE = 1                     # TYPE_FLAT_HEADER
FLAT_END_MARKER = -1                     # END_FLAG_FLAT_HEADER, in both offset and buf_size


class Limits:
    """Caps that keep a reader's time and memory bounded on hostile input.

    Real dumps are far below every cap: an x86_64 elfcorehdr has at most
    ``2 + NR_CPUS + CRASH_MAX_MEMORY_RANGES`` (8192 + 8192 by default) program headers,
    one CPU note per CPU (NR_CPUS is at most 8192 on x86_64, ``CONFIG_MAXSMP``) and one
    VMCOREINFO note of at most a page.  Beyond a cap the readers raise ``VmcoreFormatError``
    naming the field.  The worst accepted files cost (tracemalloc peak) 12 MB at every note
    cap together and 91 MB at the program header cap; a file claiming 131071 CPU notes, which
    once cost 184 MB of Python objects, is refused before its notes are read.
    """

    #: More program headers than this is refused (7 MiB of headers; about 90 MB once
    #: parsed).  Eight times the kernel's 16386: ``makedumpfile -E`` starts a new PT_LOAD
    #: after every run of 256 excluded pages, so a 128 GiB guest split at every MiB fits.
    MAX_PROGRAM_HEADERS = 1 << 17
    #: x86_64's largest NR_CPUS (``CONFIG_MAXSMP``): more CPU notes (in a dump) or CPU note
    #: slots (in a raw elfcorehdr) than this is refused.
    MAX_CPUS = 8192
    #: All note segments together larger than this is refused: 8192 CPUs' 368-byte buffers
    #: and VMCOREINFO are about 3 MiB, so this leaves room for other notes (Xen's, say).
    MAX_NOTE_SEGMENT = 8 << 20
    #: More notes than this in one dump is refused (4 per possible CPU).
    MAX_NOTES = 4 * MAX_CPUS
    #: A note name longer than this is corruption (real names are 4-12 bytes).
    MAX_NOTE_NAME = 256
    #: A VMCOREINFO text longer than this is refused: the kernel's is at most a page
    #: (``VMCOREINFO_BYTES``), and its ``KEY=value`` lines become a dictionary.
    MAX_VMCOREINFO = 16 << 10
    #: More VMCOREINFO notes than this is refused (a kernel writes one).
    MAX_VMCOREINFO_NOTES = 8
    #: A raw elfcorehdr PT_NOTE larger than this is refused: it is a guest buffer (368 bytes
    #: per CPU, about 4 KiB for VMCOREINFO) that a live audit may have to read.
    MAX_RAW_NOTE_BUFFER = 64 << 10
    #: The kdump bitmap may describe at most this many separate memory runs.
    MAX_MEMORY_RUNS = 1 << 16
    #: kdump-compressed bitmap (one half) larger than this is refused (2 TiB of 4 KiB pages).
    MAX_BITMAP_BYTES = 64 << 20
    #: kdump sub-header region (sub header plus notes) larger than this is refused.
    MAX_SUB_HEADER_BYTES = 64 << 20
    #: Output offsets in a flattened stream beyond this are corruption (256 TiB).
    MAX_FLAT_OFFSET = 1 << 48
    #: More records than this in a flattened stream is refused when reading it in place
    #: (makedumpfile writes 64 KiB records, so this is 64 GiB of dump data); rebuilding it
    #: with ``rebuild_flattened`` has no such cap.
    MAX_FLAT_RECORDS = 1 << 20
