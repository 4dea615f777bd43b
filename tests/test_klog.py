"""The kernel-log scanner."""

from __future__ import annotations

import pytest

from harness.errors import HarnessError
from harness.hotplug.klog import KmsgRecord, between_markers, missing_records, parse_kmsg, scan

LOG = """\
[    8.335024] ACPI: CPU2 has been hot-added
[    8.400000] crash hp: hp_action 1, cpu 2
[    9.100000] crash hp: hp_action 3
[    9.100100] crash hp: updated elfcorehdr
[    9.200000] crash hp: kexec_trylock() failed, kdump image may be inaccurate
[    9.300000] crash hp: kexec_trylock() failed, elfcorehdr may be inaccurate
[    9.400000] crash hp: hp_action 4
[    9.500000] crash hp: update elfcorehdr elfsz 4096 > memsz 2048
[    9.600000] crash hp: hp_action 9
[    9.700000] kexec_file: Loaded ELF headers at 0x2e000000 bufsz=0x1000 memsz=0xe1000
"""


def test_scan_counts() -> None:
    c = scan(LOG)
    assert c.trylock_failures == 2
    assert c.trylock_new_wording == 1 and c.trylock_old_wording == 1
    assert c.hp_actions == {"ADD_CPU": 1, "ADD_MEMORY": 1, "REMOVE_MEMORY": 1, "ACTION_9": 1}
    assert c.hp_action_total == 4
    assert c.updated_elfcorehdr == 1
    assert c.other_errors == ["crash hp: update elfcorehdr elfsz 4096 > memsz 2048"]
    assert c.lines == 10
    assert "trylock failures 2" in c.summary()
    assert c.to_json_dict()["hp_action_total"] == 4
    assert c.last_update_failed is True


def test_the_last_handler_decides_whether_failures_left_the_header_stale() -> None:
    failed_then_repaired = ("crash hp: kexec_trylock() failed, kdump image may be inaccurate\n"
                            "crash hp: hp_action 3\ncrash hp: updated elfcorehdr\n")
    assert scan(failed_then_repaired).last_update_failed is False
    assert scan("crash hp: hp_action 3\n").last_update_failed is None


def test_scan_console_lines_without_timestamps() -> None:
    assert scan("crash hp: kexec_trylock() failed, kdump image may be inaccurate\n"
                ).trylock_failures == 1
    assert scan("").trylock_failures == 0


def test_between_markers() -> None:
    text = "a\nkdump-harness: s begin X\nb\nc\nkdump-harness: s end X\nd\n"
    assert between_markers(text, "begin X", "end X") == "b\nc"
    assert between_markers(text, "begin X") == "b\nc\nkdump-harness: s end X\nd"
    with pytest.raises(HarnessError, match="wrapped"):
        between_markers(text, "begin Y")


KMSG = """\
6,100,5000000,-;ACPI: CPU2 has been hot-added
 SUBSYSTEM=acpi
 DEVICE=+acpi:LNXCPU:02
7,101,5100000,-;crash hp: hp_action 3
6,100,5000000,-;ACPI: CPU2 has been hot-added
6,104,5200000,-;crash hp: kexec_trylock() failed, kdump image may be inaccurate
not a record
"""


def test_parse_kmsg_dedupes_replays_and_counts_gaps() -> None:
    records = parse_kmsg(KMSG)
    assert [r.seq for r in records] == [100, 101, 104]
    assert records[1] == KmsgRecord(101, 5.1, "crash hp: hp_action 3")
    assert records[0].line() == "[    5.000000] ACPI: CPU2 has been hot-added"
    assert missing_records(records) == 2
    assert scan("\n".join(r.line() for r in records)).trylock_failures == 1
