from pathlib import Path

import pytest

from harness.errors import UsageError
from harness.guest.config import GuestConfig
from harness.guest.qemu_args import GuestKernelOptions, MachineSpec, kernel_options, qemu_args
from harness.units import GiB, MiB, format_size, parse_size


def spec(**kw: object) -> MachineSpec:
    base = dict(kernel=Path("/k"), initrd=Path("/i"), append="console=ttyS0",
                qmp_socket=Path("/s/qmp"), console_path=Path("/s/con"))
    base.update(kw)
    return MachineSpec(**base)  # type: ignore[arg-type]


def opt(argv: list[str], flag: str) -> list[str]:
    return [argv[i + 1] for i, a in enumerate(argv) if a == flag]


@pytest.mark.parametrize("text,value", [("256M", 256 * MiB), ("1G", GiB), ("2GiB", 2 * GiB),
                                        ("4096", 4096), ("1t", 1 << 40)])
def test_parse_size(text: str, value: int) -> None:
    assert parse_size(text) == value
    if value % MiB == 0:
        assert parse_size(format_size(value)) == value


@pytest.mark.parametrize("bad", ["", "12X", "-1G", "1.5G"])
def test_parse_size_rejects(bad: str) -> None:
    with pytest.raises(UsageError, match="not a size"):
        parse_size(bad)


def test_tcg_args_carry_the_vcpu_hotplug_quirk() -> None:
    argv = qemu_args(spec(cpus=2, max_cpus=8))
    assert opt(argv, "-accel") == ["tcg,thread=multi"]
    assert opt(argv, "-cpu") == ["max,hypervisor=off,cx16=off"]
    assert opt(argv, "-machine") == ["q35,vmport=on"]
    assert any(s.startswith("type=1,serial=VMware-") for s in opt(argv, "-smbios"))
    assert opt(argv, "-smp") == ["2,maxcpus=8,sockets=8,cores=1,threads=1"]
    assert "-no-reboot" in argv and "-nodefaults" in argv


def test_kvm_args_use_host_cpu_without_quirk() -> None:
    argv = qemu_args(spec(accel="kvm"))
    assert opt(argv, "-cpu") == ["host"]
    assert opt(argv, "-machine") == ["q35"]
    assert not opt(argv, "-smbios")


def test_memory_slots_and_maxmem() -> None:
    argv = qemu_args(spec(memory=GiB, memory_slots=16, max_memory=8 * GiB))
    assert opt(argv, "-m") == ["1024M,slots=16,maxmem=8192M"]


def test_ssh_forward_is_loopback_only_and_port_zero() -> None:
    argv = qemu_args(spec())
    (netdev,) = opt(argv, "-netdev")
    assert "hostfwd=tcp:127.0.0.1:0-:22" in netdev


def test_disks_get_serials() -> None:
    argv = qemu_args(spec(disks=(Path("/a.img"), Path("/b.img"))))
    devices = opt(argv, "-device")
    assert "virtio-blk-pci,drive=disk0,serial=harness0" in devices
    assert "virtio-blk-pci,drive=disk1,serial=harness1" in devices


@pytest.mark.parametrize("kw,message", [
    (dict(cpus=9, max_cpus=8), "cpus"),
    (dict(memory=1000 * MiB), "multiple of 128M"),
    (dict(accel="hvf"), "accel"),
    (dict(memory=2 * GiB, max_memory=GiB), "maxmem"),
])
def test_spec_validation(kw: dict[str, object], message: str) -> None:
    with pytest.raises(UsageError, match=message):
        qemu_args(spec(**kw))


def test_kernel_options_render() -> None:
    text = GuestKernelOptions(crashkernel="192M", harness=(("kexec", "file"),)).render()
    words = text.split()
    assert "crashkernel=192M" in words
    assert "harness.kexec=file" in words
    assert "memhp_default_state=online_movable" in words
    assert "unknown_nmi_panic=1" in words and "nmi_watchdog=0" in words
    assert 'dyndbg="file' in text
    # A panic that does not kexec names the kexec lock holder (crash/lock_evidence.py).
    assert "panic_print=0x60" in words


def test_tcg_guests_boot_without_ipi_shorthand_broadcasts() -> None:
    # Broadcast IPIs start TCG's hot-added, never-booted vCPUs at the reset vector.
    config = GuestConfig()
    tcg = kernel_options(config, "k", accel="tcg").render().split()
    kvm = kernel_options(config, "k", accel="kvm").render().split()
    assert "no_ipi_broadcast=1" in tcg
    assert "no_ipi_broadcast=1" not in kvm
    assert "no_ipi_broadcast=1" not in GuestKernelOptions().render().split()


def test_post_notifiers_keep_the_backtraces_out_of_the_kdump_path() -> None:
    words = GuestKernelOptions(extra=("crash_kexec_post_notifiers",)).render().split()
    assert "panic_print=0x20" in words and "panic_print=0x60" not in words


def test_kernel_options_reject_spaces_and_overlong() -> None:
    with pytest.raises(UsageError, match="spaces"):
        GuestKernelOptions(harness=(("authkey", "a b"),)).render()
    with pytest.raises(UsageError, match="2047"):
        GuestKernelOptions(extra=("x" * 2100,)).render()


def test_commas_in_disk_paths_are_escaped() -> None:
    argv = qemu_args(spec(disks=(Path("/runs/a,b/meta.img"),)))
    assert opt(argv, "-drive")[0].startswith("file=/runs/a,,b/meta.img,format=raw")
