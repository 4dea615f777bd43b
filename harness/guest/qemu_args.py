"""Pure builders for QEMU command lines and guest kernel command lines.

Nothing here starts a process: every function maps a frozen spec to a list of strings,
so the whole command line is unit-tested without QEMU.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import UsageError
from ..units import GiB, MiB, size_option
from .presession import presession_args

if TYPE_CHECKING:
    from .config import GuestConfig


@dataclass(frozen=True)
class SnapshotRam:
    """A snapshot machine's RAM: a file, not anonymous memory.  Shared while the snapshot is
    made (the guest writes the file itself, migration skips it: ``x-ignore-shared``);
    private when restored (copy-on-write: every restore maps the same file, none writes it,
    and nothing is read or copied before the guest runs)."""

    path: Path
    shared: bool


@dataclass(frozen=True)
class MachineSpec:
    """Everything that shapes one QEMU process."""

    kernel: Path
    initrd: Path
    append: str
    qmp_socket: Path
    console_path: Path            # FIFOs PATH.in and PATH.out (console.py)
    accel: str = "tcg"                       # "tcg" or "kvm"
    memory: int = 1 * GiB
    memory_slots: int = 64
    max_memory: int = 20 * GiB
    cpus: int = 2
    max_cpus: int = 8
    ssh: bool = True                          # user-mode net with a loopback-only SSH forward
    disks: tuple[Path, ...] = ()              # raw virtio-blk disks (dump targets)
    firmware: Path | None = None              # e.g. qboot.rom; None = QEMU's default SeaBIOS
    tcg_cpu_hotplug_quirk: bool = True        # see _cpu_args
    tcg_threads: str = "multi"                # TCG: "multi" or "single" (tcg_threads.py)
    rng: bool = True                          # virtio-rng: the host's entropy
    vmgenid: bool = False                     # a snapshot's guests (see qemu_args)
    snapshot_ram: SnapshotRam | None = None   # a snapshot's machine: RAM in a file
    presession_socket: Path | None = None     # ... and its pre-connected SSH (presession.py)
    debug_log: Path | None = None             # QEMU's own log of CPU resets and guest errors
    extra_args: tuple[str, ...] = field(default=())

    def validate(self) -> None:
        if self.accel not in ("tcg", "kvm"):
            raise UsageError(f"accel must be 'tcg' or 'kvm', not {self.accel!r}")
        if self.tcg_threads not in ("multi", "single"):
            raise UsageError(f"TCG threads must be 'multi' or 'single', not {self.tcg_threads!r}")
        if self.memory % (128 * MiB):
            raise UsageError(f"guest memory {size_option(self.memory)} is not a multiple of 128M")
        if self.max_memory < self.memory:
            raise UsageError("maxmem must be at least the boot memory")
        if not 1 <= self.cpus <= self.max_cpus:
            raise UsageError(f"need 1 <= cpus ({self.cpus}) <= maxcpus ({self.max_cpus})")
        if self.max_cpus > 255:
            raise UsageError("more than 255 vCPUs needs x2APIC/IOMMU setup the harness does not do")
        if self.presession_socket is not None and not self.ssh:
            raise UsageError("a pre-connected SSH session needs the guest's network (ssh)")


#: QEMU 7.2's TCG (Debian bookworm) intermittently corrupts state around CMPXCHG16B: SLUB's
#: per-cpu fast path (this_cpu_cmpxchg16b) then double-faults or GPFs in __kmalloc during
#: early boot of Linux 6.12 -- measured here in 8 of 41 boots, single- and multi-threaded
#: TCG alike.  Without CX16 the kernel takes SLUB's locked slow path: 0 of 14 crashed.
TCG_CPU_FIXES = ",cx16=off"


def _cpu_args(spec: MachineSpec) -> list[str]:
    if spec.accel == "kvm":
        return ["-accel", "kvm", "-cpu", "host",
                "-smp", f"{spec.cpus},maxcpus={spec.max_cpus},sockets={spec.max_cpus},"
                        "cores=1,threads=1"]
    args = ["-accel", f"tcg,thread={spec.tcg_threads}"]
    if spec.tcg_cpu_hotplug_quirk:
        # Debian 6.12.107 carries the stable backport of "x86/acpi/boot: Correct
        # acpi_is_processor_usable() check again": disabled MADT entries (QEMU's hot-plug
        # slots) are ignored unless Linux recognises a hypervisor, and it does not recognise
        # TCG, so hot-added CPUs could never come online.  Hiding the hypervisor bit and
        # presenting a VMware DMI serial with the vmport backdoor makes Linux detect VMware.
        # One core per socket keeps every slot a whole socket, which the ACPI path expects.
        args += ["-cpu", f"max,hypervisor=off{TCG_CPU_FIXES}"]
        smbios = ["-smbios", "type=1,serial=VMware-56 4d 00 00 00 00 00 00-00 00 00 00 00 00 00 00"]
        args += smbios
    else:
        args += ["-cpu", f"max{TCG_CPU_FIXES}"]
    args += ["-smp", f"{spec.cpus},maxcpus={spec.max_cpus},sockets={spec.max_cpus},"
                     "cores=1,threads=1"]
    return args


def qemu_args(spec: MachineSpec, binary: str = "qemu-system-x86_64") -> list[str]:
    """The full QEMU argv for ``spec``."""
    spec.validate()
    machine = "q35,vmport=on" if spec.accel == "tcg" and spec.tcg_cpu_hotplug_quirk else "q35"
    if spec.snapshot_ram is not None:
        machine += ",memory-backend=pc.ram"
    args = [
        binary,
        "-nodefaults", "-no-user-config", "-display", "none", "-no-reboot",
        "-machine", machine,
        *_cpu_args(spec),
        "-m", f"{spec.memory // MiB}M,slots={spec.memory_slots},maxmem={spec.max_memory // MiB}M",
        "-kernel", str(spec.kernel),
        "-initrd", str(spec.initrd),
        "-append", spec.append,
        "-chardev", f"pipe,id=console,path={spec.console_path}",
        "-serial", "chardev:console",
        "-chardev", f"socket,id=qmp,path={spec.qmp_socket}",
        "-mon", "chardev=qmp,mode=control",
    ]
    if spec.snapshot_ram is not None:
        ram = spec.snapshot_ram
        args += ["-object", f"memory-backend-file,id=pc.ram,size={spec.memory // MiB}M,"
                            f"mem-path={qemu_escape(str(ram.path))},"
                            f"share={'on' if ram.shared else 'off'}"]
    if spec.firmware is not None:
        args += ["-bios", str(spec.firmware)]
    if spec.ssh:
        # Host port 0: QEMU picks a free port itself, so parallel guests never race for one;
        # the harness reads the chosen port back with "info usernet".
        netdev = "user,id=net0,hostfwd=tcp:127.0.0.1:0-:22"
        if spec.presession_socket is not None:
            chardev, guestfwd = presession_args(spec.presession_socket)
            args += chardev
            netdev += guestfwd
        args += ["-netdev", netdev, "-device", "virtio-net-pci,netdev=net0,romfile="]
    if spec.rng:
        args += ["-object", "rng-random,id=rng0,filename=/dev/urandom",
                 "-device", "virtio-rng-pci,rng=rng0"]
    if spec.vmgenid:
        # A snapshot's guests must not share its random state: vmgenid's generation ID is
        # new at every QEMU start, and Linux 5.18+ (CONFIG_VMGENID) reseeds its CRNG the
        # moment it changes (virtio-rng alone would wait for the next scheduled reseed).
        args += ["-device", "vmgenid,guid=auto"]
    for i, disk in enumerate(spec.disks):
        args += ["-drive", f"file={qemu_escape(str(disk))},format=raw,if=none,id=disk{i},"
                           "cache=unsafe",
                 "-device", f"virtio-blk-pci,drive=disk{i},serial=harness{i}"]
    if spec.debug_log is not None:
        # Evidence for a guest that resets itself with nothing on its console: QEMU logs
        # "Triple fault" (and every CPU reset, with the CPU's registers) only when asked.
        args += ["-d", "cpu_reset,guest_errors", "-D", str(spec.debug_log)]
    args += list(spec.extra_args)
    return args


def qemu_escape(value: str) -> str:
    """Escape a value inside a QEMU ``key=value,...`` option: commas are doubled."""
    return value.replace(",", ",,")


def render_command(argv: list[str]) -> str:
    """A copy-pasteable shell form of ``argv``, for artifacts and error messages."""
    return " ".join(shlex.quote(a) for a in argv)


@dataclass(frozen=True)
class GuestKernelOptions:
    """The first kernel's command line, built from intent rather than strings."""

    crashkernel: str = "256M"
    console: str = "ttyS0,115200"
    memhp_default_state: str | None = "online_movable"
    nokaslr: bool = True
    crash_debug: bool = True           # dynamic debug for crash_core.c / crash.c / kexec_file.c
    nmi_panic: bool = True             # panic on unknown NMIs, for QMP inject-nmi
    ipi_broadcast: bool = True         # False under TCG: see render()
    extra: tuple[str, ...] = ()
    harness: tuple[tuple[str, str], ...] = ()   # harness.KEY=VALUE pairs read by /init

    def render(self) -> str:
        # cryptomgr.notests: Debian's kernels self-test every crypto algorithm they
        # register at boot, which under TCG costs ~0.25 s (trixie, boot to userspace, median
        # of 5: 2.21 s -> 1.98 s) and tests nothing this harness is about.
        parts = [f"console={self.console}", "panic=-1", "oops=panic", "quiet", "loglevel=4",
                 "printk.time=1", "rdinit=/init", "cryptomgr.notests"]
        if self.crashkernel:
            parts.append(f"crashkernel={self.crashkernel}")
        if self.memhp_default_state:
            parts.append(f"memhp_default_state={self.memhp_default_state}")
        if self.nokaslr:
            parts.append("nokaslr")
        if self.nmi_panic:
            # nmi_watchdog=0 keeps the perf NMI from claiming the injected one; with
            # unknown_nmi_panic the CPU that takes QMP's inject-nmi panics from NMI context.
            parts += ["nmi_watchdog=0", "unknown_nmi_panic=1"]
        if not self.ipi_broadcast:
            # After an ACPI CPU hot-add, x86 Linux (6.1, 6.12, 7.2: topology_hotplug_apic()
            # does not call apic_smt_update()) keeps sending "all but self" shorthand IPIs
            # until the new CPU is first brought up.  QEMU 10.0's TCG models a CPU waiting
            # for its SIPI as merely halted, and those IPIs (NMIs too: the crash shootdown)
            # can start it at the reset vector: the firmware then resets the machine.
            # Measured with 4 or 12 hot-added vCPUs left offline and 10-20 s of IPIs from 4
            # online CPUs: 4 of 34 runs reset, none of 44 with this option.  And every
            # `run --leave-offline` ended kdump_did_not_occur (testcases/test_run.py).
            parts.append("no_ipi_broadcast=1")
        if self.crash_debug:
            # crash hp: hp_action / updated elfcorehdr and kexec_file's "Loaded ELF headers
            # at" are pr_debug/kexec_dprintk lines: dynamic debug makes them visible.
            parts.append('dyndbg="file crash_core.c +p; file crash.c +p; file kexec_file.c +p;'
                         ' file crash_reserve.c +p"')
            # A panic that does not kexec prints every other CPU's backtrace (0x40) and
            # then replays the whole log buffer on the console, debug lines too (0x20):
            # who held the kexec lock survives the guest (crash/lock_evidence.py).
            # Deprecated in favour of panic_sys_info= on 6.17+, still read on 7.x.  With
            # crash_kexec_post_notifiers the backtraces come *before* kdump, and 7.2 takes
            # them a second time after stopping the CPUs, waiting 10 s for CPUs that cannot
            # answer ("these CPUS still haven't responded"): only the replay then.
            post = any(a.startswith("crash_kexec_post_notifiers") for a in self.extra)
            parts.append("panic_print=0x20" if post else "panic_print=0x60")
        parts += list(self.extra)
        for key, value in self.harness:
            if any(c.isspace() for c in value):
                raise UsageError(f"harness.{key} value must not contain spaces: {value!r}")
            parts.append(f"harness.{key}={value}")
        text = " ".join(parts)
        if len(text) > 2047:
            raise UsageError(f"kernel command line is {len(text)} bytes; x86 allows 2047")
        return text


def kernel_options(config: GuestConfig, authkey: str, *, accel: str) -> GuestKernelOptions:
    """The first kernel's options for ``config`` on ``accel`` (tcg/kvm); ``authkey``:
    ``SshKey.kernel_arg``."""
    c = config
    harness_params: list[tuple[str, str]] = [
        ("authkey", authkey), ("kexec", c.kexec), ("capture", c.capture_mode),
    ]
    if not c.kexec_hotplug:
        harness_params.append(("kexec_hotplug", "0"))
    if c.capture_args:
        harness_params.append(("capture_append", ",".join(c.capture_args)))
    return GuestKernelOptions(
        crashkernel=c.crashkernel, memhp_default_state=c.memhp_default_state,
        crash_debug=c.crash_debug, ipi_broadcast=accel != "tcg", extra=c.kernel_args,
        harness=tuple(harness_params))

