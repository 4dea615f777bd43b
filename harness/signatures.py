"""The kernel's own lines the harness acts on, in one place.

Each pattern matches within one complete line (the console and every stream are read as
complete lines, see ``guest.console``).  Used by the console waits, the guest's health
check, the capture's follower, the kernel-log scanner and the verifier's dmesg check.
"""

from __future__ import annotations

import re
from re import Pattern

#: panic(): ``Kernel panic - not syncing: <reason>`` (the reason is group 1).
PANIC = re.compile(r"Kernel panic - not syncing: ?([^\n]*)")
#: A kernel's first line.
KERNEL_BANNER = re.compile(r"Linux version \S+")
#: A printk record's timestamp at the start of its line (seconds are group 1).
PRINTK_TIME = re.compile(r"^\[\s*(\d+\.\d+)\]", re.M)
#: The capture kernel's command line: kexec puts ``elfcorehdr=`` on it.  This, not the
#: banner, says the capture kernel runs: a panic that does not kexec replays the first
#: kernel's whole log (``panic_print=0x20``), its "Linux version" line included.
CAPTURE_CMDLINE = re.compile(r"Kernel command line: (?:\S+ )*elfcorehdr=\S+")
#: The end of a panic that did not kexec into a capture kernel.
END_PANIC = re.compile(r"---\[ end Kernel panic")
#: What a kernel log holds after a deliberate panic: panic() itself and the sysrq-c path.
PANIC_MESSAGES: tuple[str, ...] = (
    "Kernel panic - not syncing",
    "sysrq triggered crash",
    "sysrq: Trigger a crash",
    "SysRq : Trigger a crash",
)

#: Console lines that end or endanger a run, by kind (checked on every wait).
CRASH_SIGNATURES: dict[str, Pattern[str]] = {
    "panic": PANIC,
    "oops": re.compile(r"Oops: |BUG: unable to handle|general protection fault"),
    "bug": re.compile(r"kernel BUG at|BUG: soft lockup|BUG: KASAN"),
    "end_panic": END_PANIC,
    "kvm_error": re.compile(r"KVM internal error"),
}

#: Known emulator faults, not kernel bugs: a boot that shows one may be tried again (TCG
#: only, see ``Guest.launch``).  ``stale-int3``: the kernel patches its own text (static
#: keys, alternatives) with int3 breakpoints and IPIs; QEMU 7.2's multi-threaded TCG lets
#: another vCPU run a translated block that still holds the breakpoint after the patch is
#: done, and the kernel, finding no patch in flight, oopses with "int3" (sid's Linux 7.2,
#: sched_clock_idle_wakeup_event+0x5 right after "sched_clock: Marking stable" flips a key).
EMULATOR_FAULTS: dict[str, Pattern[str]] = {
    "stale-int3": re.compile(r"(?:Oops: )?int3: 0000 \[#\d+\]"),
}

#: Console lines that show the guest refusing hot-added memory or running out of memory:
#: a guest result, named from the line itself as it happens (not from the SSH failure
#: that follows once the OOM killer has taken the guest's SSH server).  ``add_memory``:
#: drivers/acpi/acpi_memhotplug.c, when the kernel cannot add a DIMM's range (typically no
#: memory left for its memmap: 1/64 of the hot-added size, from boot memory).
GUEST_MEMORY_SIGNATURES: dict[str, Pattern[str]] = {
    "oom": re.compile(r"Out of memory: Killed process \d+ \([^)]*\)"),
    "add_memory": re.compile(r"add_memory failed"),
}

#: The kernel's crash hot-plug trylock failure, in both wordings (6.6-6.11 and 6.12+).
TRYLOCK_FAILURE = re.compile(
    r"crash hp: kexec_trylock\(\) failed, (?:elfcorehdr|kdump image) may be inaccurate"
)
