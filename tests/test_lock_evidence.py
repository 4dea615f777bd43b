"""The kexec lock holder at a panic, read from the kernel's own lines (crash/lock_evidence)."""

from __future__ import annotations

from harness.crash.lock_evidence import LockHolder, kexec_lock_at_panic
from harness.signatures import CAPTURE_CMDLINE

BOOT_LOAD = """\
[    6.952234] kexec_file: kernel: 0000000037640f7f kernel_size: 0xb317c0
[    6.998922] kexec_file: kernel signature verification failed (-126).
[    7.100000] kexec: Loaded ELF headers at 0x2e000000 bufsz=0x1000 memsz=0xe1000
[    8.667102] kexec_file: kexec_file_load: type:1, start:0x3dffb160 head:0x4 flags:0xa
"""
UPDATE = """\
[    9.491784] crash hp: hp_action 3
[    9.492728] crash hp: updated elfcorehdr
"""
PANIC = """\
[   10.035257] sysrq: Trigger a crash
[   10.035993] Kernel panic - not syncing: sysrq triggered crash
[   10.036000] CPU: 1 UID: 0 PID: 230 Comm: sh Not tainted 6.12.117+deb13-cloud-amd64
"""


def test_every_section_closed_is_no_holder() -> None:
    lock = kexec_lock_at_panic(BOOT_LOAD + UPDATE * 3 + PANIC, source="vmcore-dmesg")
    assert lock.holder is LockHolder.NONE and not lock.held
    assert (lock.sections, lock.header_updates) == (4, 3)
    assert "no section of the kexec lock was open" in lock.describe()


def test_a_handler_without_its_update_line_holds_the_lock() -> None:
    log = BOOT_LOAD + UPDATE + "[    9.6] crash hp: hp_action 3\n" + PANIC
    lock = kexec_lock_at_panic(log, source="console replay")
    assert lock.holder is LockHolder.HOTPLUG_HANDLER and lock.held
    assert lock.opened_by == "crash hp: hp_action 3" and not lock.closed_after_panic
    assert "crash_hotplug_handler" in lock.describe() and "console replay" in lock.describe()


def test_a_load_in_flight_holds_the_lock_and_a_late_end_is_noted() -> None:
    log = (BOOT_LOAD + "[   9.9] kexec_file: kernel: 00000000deadbeef kernel_size: 0xb317c0\n"
           + PANIC + "[  10.1] kexec_file: kexec_file_load: type:1, start:0x1 head:0x4 flags:0xa\n")
    lock = kexec_lock_at_panic(log, source="console replay")
    assert lock.holder is LockHolder.KEXEC_FILE_LOAD and lock.closed_after_panic
    assert lock.opened_by is not None and lock.opened_by.startswith("kexec_file: kernel:")


def test_trylock_failures_neither_open_nor_close_a_section() -> None:
    fail = "[    9.5] crash hp: kexec_trylock() failed, kdump image may be inaccurate\n"
    log = BOOT_LOAD + "[    9.4] kexec_file: kernel: 0000 kernel_size: 0x1\n" + fail * 2 + PANIC
    lock = kexec_lock_at_panic(log, source="console replay")
    assert lock.holder is LockHolder.KEXEC_FILE_LOAD and lock.trylock_failures == 2


def test_a_new_section_closes_one_that_ended_silently() -> None:
    # A load that failed logs no closing line; the handler that ran next had the lock.
    log = "[ 1.0] kexec_file: kernel: 0000 kernel_size: 0x1\n" + UPDATE + PANIC
    lock = kexec_lock_at_panic(log, source="vmcore-dmesg")
    assert lock.holder is LockHolder.NONE and lock.sections == 1


def test_an_error_line_ends_the_handlers_section() -> None:
    log = "[ 1.0] crash hp: hp_action 3\n[ 1.1] crash hp: unable to locate elfcorehdr segment\n"
    lock = kexec_lock_at_panic(log + PANIC, source="vmcore-dmesg")
    assert lock.holder is LockHolder.NONE and lock.header_updates == 0


def test_no_section_lines_says_unknown() -> None:
    lock = kexec_lock_at_panic("[ 1.0] random: crng init done\n" + PANIC, source="vmcore-dmesg")
    assert lock.holder is LockHolder.UNKNOWN and "no kexec lock lines" in lock.describe()


def test_caller_ids_are_accepted() -> None:
    log = "[    9.491784] [     T73] crash hp: hp_action 3\n" + PANIC
    assert kexec_lock_at_panic(log, source="vmcore-dmesg").opened_by == "crash hp: hp_action 3"


def test_only_the_capture_kernels_command_line_names_it() -> None:
    first = "[    0.037365] Kernel command line: console=ttyS0,115200 panic=-1 quiet"
    capture = ("[    0.072102] Kernel command line: elfcorehdr=0x2e000000 console=ttyS0,115200 "
               "nr_cpus=1")
    assert CAPTURE_CMDLINE.search(first) is None
    assert CAPTURE_CMDLINE.search(capture) is not None
    assert CAPTURE_CMDLINE.search("[ 0.07] Kernel command line: a=b elfcorehdr=0x1 c") is not None


BACKTRACE = """\
[   13.47] NMI backtrace for cpu 1
[   13.47] CPU: 1 UID: 0 PID: 73 Comm: kworker/u8:3 Not tainted 6.12.117+deb13-cloud-amd64
[   13.47] Call Trace:
[   13.47]  <NMI>
[   13.47]  ? nmi_cpu_backtrace+0x9d/0x110
[   13.47]  </NMI>
[   13.47]  <TASK>
[   13.47]  ? crash_check_hotplug_support+0x10/0x50
[   13.47]  __change_page_attr_set_clr+0x4c5/0xd40
[   13.47]  kexec_mark_crashkres+0x6a/0x90
[   13.47]  crash_handle_hotplug_event+0x95/0x110
[   13.47]  crash_memhp_notifier+0x27/0x40
"""


def test_a_backtrace_inside_a_lock_holding_function_names_the_holder() -> None:
    """The handler logged "updated elfcorehdr" but was still re-protecting the crashkernel
    pages under the lock; the guessed (?) frame of a sysfs reader is not read."""
    log = BOOT_LOAD + UPDATE + PANIC + BACKTRACE
    lock = kexec_lock_at_panic(log, source="console replay")
    assert lock.holder is LockHolder.NONE and lock.held
    assert lock.caught_holder is LockHolder.HOTPLUG_HANDLER
    assert lock.caught_in == "cpu 1: crash_handle_hotplug_event+0x95/0x110"
    assert "a backtrace caught the crash_hotplug_handler" in lock.describe()


def test_an_idle_cpus_backtrace_names_nobody() -> None:
    idle = ("[ 13.47] NMI backtrace for cpu 1\n[ 13.47]  default_idle+0x9/0x20\n"
            "[ 13.47]  do_idle+0x1d0/0x210\n")
    lock = kexec_lock_at_panic(BOOT_LOAD + PANIC + idle, source="console replay")
    assert not lock.held and lock.caught_in is None


def test_cpu_actions_end_without_a_line_and_open_nothing() -> None:
    # kexec_file_load images describe every possible CPU: x86 returns at once.
    log = BOOT_LOAD + UPDATE + "[    9.7] crash hp: hp_action 1, cpu 2\n" + PANIC
    lock = kexec_lock_at_panic(log, source="vmcore-dmesg")
    assert lock.holder is LockHolder.NONE and not lock.held and lock.header_updates == 1
