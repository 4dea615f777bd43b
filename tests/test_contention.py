"""The contention injector's pure parts: specs, the ACPI-IRQ CPU, scripts and logs."""

from __future__ import annotations

import pytest

from harness.contention import (
    ContentionSpec,
    install_command,
    irq_cpu,
    parse_contention,
    parse_reload_log,
    parse_udev_log,
    start_command,
)
from harness.errors import HarnessError, UsageError

INTERRUPTS = """\
           CPU0       CPU1       CPU2
  1:          9          0          0   IO-APIC   1-edge      i8042
  9:          0         37          2   IO-APIC   9-fasteoi   acpi
 24:        100          0          0   PCI-MSI-0000:00:02.0   0-edge      virtio0-config
NMI:          0          0          0   Non-maskable interrupts
"""


def test_parse_contention() -> None:
    assert parse_contention("reload") == ContentionSpec("reload")
    assert parse_contention("reload:cpu=1,offset=-0.5,count=2") == ContentionSpec(
        "reload", cpu=1, offset=-0.5, count=2)
    assert parse_contention("readers:count=8").count == 8
    assert parse_contention("reload:cpu=irq").cpu is None


@pytest.mark.parametrize("text,message", [
    ("storm", "must be one of"), ("reload:cpu", "key=value"), ("reload:speed=3", "unknown"),
    ("readers:count=x", "not a number"), ("readers:count=0", "at least 1"),
])
def test_parse_contention_rejects(text: str, message: str) -> None:
    with pytest.raises(UsageError, match=message):
        parse_contention(text)


def test_irq_cpu() -> None:
    assert irq_cpu(INTERRUPTS) == 1
    assert irq_cpu(INTERRUPTS, effective="2\n") == 2
    assert irq_cpu(INTERRUPTS, effective="0-1\n") == 0
    with pytest.raises(HarnessError, match="IRQ 5"):
        irq_cpu(INTERRUPTS, irq=5)
    with pytest.raises(HarnessError, match="header"):
        irq_cpu("nothing here")


def test_spec_round_trip_and_label() -> None:
    spec = ContentionSpec("reload", offset=-0.3)
    assert ContentionSpec.from_json_dict(spec.to_json_dict()) == spec
    assert spec.label() == "reload(cpu=acpi-irq, offset=-0.30 s, count=1)"


def test_scripts_and_start_commands() -> None:
    install = install_command()
    for name in ("reload.sh", "udev-handler.sh", "udev-start.sh", "udev-stop.sh", "reader.sh"):
        assert f"/run/harness/contention/{name} <<'HARNESS_EOF'" in install
    assert install.count("\nHARNESS_EOF\n") == 5
    assert start_command(ContentionSpec("reload", count=2), 1, "file", 0) == (
        "taskset -c 1 sh /run/harness/contention/reload.sh 2 file 0")
    readers = start_command(ContentionSpec("readers", count=2), None, "file", 3)
    assert readers.count("reader.sh 3-") == 2 and "taskset" not in readers
    assert "udev-start.sh classic" in start_command(ContentionSpec("udev"), None, "classic")


def test_parse_logs() -> None:
    reloads = parse_reload_log("reload 1 start=10.50 end=12.01 rc=0\n"
                               "reload 2 start=12.02 end=13.40 rc=1\n")
    assert reloads == [{"n": 1, "start": 10.5, "end": 12.01, "rc": 0},
                       {"n": 2, "start": 12.02, "end": 13.4, "rc": 1}]
    events, zero, coalesced, udev_reloads = parse_udev_log(
        "5.1 memory add memory32 crash_hotplug=1\n"
        "5.2 memory online memory33 crash_hotplug=0 reload rc=0\n"
        "5.3 cpu add cpu2 crash_hotplug=absent reload rc=0\n"
        "5.4 memory add memory34 crash_hotplug=0 coalesced\n"
        "garbage\n")
    assert (events, zero, coalesced) == (4, 3, 1)
    assert udev_reloads == [{"at": 5.2, "rc": 0}, {"at": 5.3, "rc": 0}]
