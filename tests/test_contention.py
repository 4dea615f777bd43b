"""The contention injector's pure parts: specs, the ACPI-IRQ CPU, scripts and logs."""

from __future__ import annotations

import time
from types import SimpleNamespace

import pytest

from harness.errors import HarnessError, UsageError
from harness.hotplug.contention import (
    LOCKED_MARK,
    ContentionInjector,
    ContentionSpec,
    boot_args_for,
    install_command,
    irq_cpu,
    parse_contention,
    parse_reload_log,
    parse_udev_log,
    start_command,
)

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
    assert parse_contention("reload").sync == "lock", "reloads sync on the kexec lock"
    assert parse_contention("reload:sync=none").sync == "none"
    assert parse_contention("udev").sync == "none"


@pytest.mark.parametrize("text,message", [
    ("storm", "must be one of"), ("reload:cpu", "key=value"), ("reload:speed=3", "unknown"),
    ("readers:count=x", "not a number"), ("readers:count=0", "at least 1"),
    ("reload:sync=later", "sync must be one of lock, none"),
    ("readers:sync=lock", "only reload can sync"),
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
    assert spec.label() == ("reload(cpu=acpi-irq, swarm +0.00 s after the lock is held, "
                            "count=1, pad=32M)")
    timed = ContentionSpec("reload", offset=-0.3, sync="none", pad=0)  # type: ignore[arg-type]
    assert ContentionSpec.from_json_dict(timed.to_json_dict()) == timed
    assert timed.label() == "reload(cpu=acpi-irq, offset=-0.30 s, count=1)"
    with pytest.raises(UsageError, match="pad"):
        ContentionSpec("udev", pad=8)  # type: ignore[arg-type]
    assert parse_contention("reload:pad=64M").pad == 64


def test_scripts_and_start_commands() -> None:
    install = install_command()
    for name in ("reload.sh", "udev-handler.sh", "udev-start.sh", "udev-stop.sh", "reader.sh"):
        assert f"/run/harness/contention/{name} <<'HARNESS_EOF'" in install
    assert install.count("\nHARNESS_EOF\n") == 5
    assert start_command(ContentionSpec("reload", count=2), 1, "file", 0) == (
        "taskset -c 1 sh /run/harness/contention/reload.sh 2 file 0 lock 32")
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


class FakeChannel:
    """A paramiko channel that yields ``chunks`` and then exits."""

    def __init__(self, chunks: list[bytes]) -> None:
        self.chunks = chunks

    def recv_ready(self) -> bool:
        return bool(self.chunks)

    def recv(self, size: int) -> bytes:
        return self.chunks.pop(0)

    def exit_status_ready(self) -> bool:
        return not self.chunks

    def close(self) -> None:
        pass


def injector_with(chunks: list[bytes], spec: ContentionSpec) -> ContentionInjector:
    guest = SimpleNamespace(config=SimpleNamespace(kexec="file"), kdump_mode="file",
                            timeouts=SimpleNamespace(command=5.0),
                            ssh=SimpleNamespace(start=lambda command, timeout: FakeChannel(chunks)))
    injector = ContentionInjector(guest, [spec])  # type: ignore[arg-type]
    injector.prepared = True
    return injector


def test_a_synced_reload_starts_at_once_and_the_swarm_waits_for_the_lock() -> None:
    injector = injector_with([b"noise\n", f"{LOCKED_MARK}\n".encode()],
                             ContentionSpec("reload", cpu=1, offset=0.25))
    assert injector.synced and injector.lead == 0.0 and injector.sync_delay == 0.25
    injector.schedule(time.monotonic() + 60)   # a timed source would wait a minute
    injector.wait_synced(timeout=5)
    (run,) = injector.runs
    assert run.lock_seen_after is not None and run.error is None
    t0 = time.monotonic()
    injector.rebase(t0)
    assert run.started_at is not None and run.started_at <= 0
    assert "lock held" in run.summary()


def test_a_reload_that_never_holds_the_lock_is_reported_not_waited_for() -> None:
    injector = injector_with([b"kexec: no -d on this kernel\n"], ContentionSpec("reload"))
    injector.schedule(time.monotonic())
    started = time.monotonic()
    injector.wait_synced(timeout=5)
    (run,) = injector.runs
    assert time.monotonic() - started < 2, "the reload's exit ends the wait"
    assert run.lock_seen_after is None
    assert run.error is not None and "sync=none" in run.error
    assert "lock never seen held" in run.summary()


def test_reloading_sources_ask_for_a_preemptible_kernel_unless_one_was_chosen() -> None:
    assert boot_args_for([ContentionSpec("reload")]) == ("preempt=full",)
    assert boot_args_for([ContentionSpec("udev")]) == ("preempt=full",)
    assert boot_args_for([ContentionSpec("readers")]) == ()
    assert boot_args_for([ContentionSpec("reload")], ("preempt=voluntary",)) == ()


def test_a_reload_on_a_guest_without_full_preemption_is_noted() -> None:
    injector = injector_with([], ContentionSpec("reload", cpu=1))
    commands: list[str] = []

    def run(command: str, check: bool = False) -> SimpleNamespace:
        commands.append(command)
        return SimpleNamespace(stdout="console=ttyS0 quiet crashkernel=256M\n")

    injector.guest.run = run  # type: ignore[attr-defined]
    injector.prepare()
    (run_,) = injector.runs
    assert run_.note is not None and "preempt=full" in run_.note
    assert "note: the guest was not booted with preempt=full" in run_.summary()
