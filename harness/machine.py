"""The guest: one QEMU process with its console, QMP and SSH, as a context manager.

Run states (``GuestState``) make misuse loud: commands need ``RUNNING``; after a panic the
guest is ``PANICKED`` and only the console and QMP remain meaningful.  Teardown is soft
first (QMP ``quit``), hard second (SIGKILL to QEMU's own process group), says which, and
always runs: QEMU also carries a parent-death signal, so not even ``kill -9`` of the test
runner leaves it behind.
"""

from __future__ import annotations

import atexit
import enum
import json
import logging
import re
import shutil
import subprocess
import tempfile
import time
import weakref
from dataclasses import asdict, dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Protocol

from . import accel as accel_mod
from .cmdline import (
    GiB,
    GuestKernelOptions,
    MachineSpec,
    MiB,
    format_size,
    qemu_args,
    render_command,
)
from .console import CRASH_SIGNATURES, EMULATOR_FAULTS, GUEST_MEMORY_SIGNATURES, Console
from .errors import (
    BootFailure,
    GuestOutOfMemory,
    HarnessError,
    HotplugNotHonoured,
    KdumpLoadError,
    LostVMError,
    QemuLaunchError,
    SshError,
    UnexpectedPanic,
    UsageError,
)
from .kdump_sizing import explain_load_failure, reserved_size
from .model import CaptureMode, KexecMode, values
from .process import die_with_parent, kill_process_group
from .qmp import Qmp
from .ssh import CommandResult, GuestSsh, SshKey
from .timeouts import Timeouts

log = logging.getLogger(__name__)


class ImageLike(Protocol):
    """What the guest needs from a built image (``harness.images.GuestImage``).

    Read-only members, so that frozen dataclasses such as ``GuestImage`` satisfy it.
    """

    @property
    def profile(self) -> str: ...
    @property
    def kernel_path(self) -> Path: ...
    @property
    def initrd_path(self) -> Path: ...
    @property
    def kernel_release(self) -> str: ...


class GuestState(enum.Enum):
    NEW = "new"
    LAUNCHING = "launching"
    RUNNING = "running"
    PANICKED = "panicked"
    STOPPED = "stopped"


KEXEC_MODES = values(KexecMode)
CAPTURE_MODES = values(CaptureMode)
KERNEL_ENTRIES = ("auto", "bzimage")


@dataclass(frozen=True)
class GuestConfig:
    """How to shape and boot one guest (independent of which image)."""

    memory: int = 1 * GiB
    cpus: int = 2
    max_cpus: int = 8
    memory_slots: int = 64
    max_memory: int = 20 * GiB
    crashkernel: str = "256M"
    kexec: str = "file"                  # file | classic | none
    kexec_hotplug: bool = True           # classic only: pass --hotplug when supported
    capture_mode: str = "headers"
    memhp_default_state: str | None = "online_movable"
    accel: str = "auto"
    firmware: str = "qboot"              # qboot | seabios
    #: auto: the image's uncompressed vmlinux through its PVH entry when it has one (no
    #: emulated decompressor: ~0.6 s less per TCG boot), else the bzImage; bzimage: always
    #: the bzImage and its own decompressor, as a bootloader would start it.
    kernel_entry: str = "auto"
    crash_debug: bool = True
    kernel_args: tuple[str, ...] = ()
    capture_args: tuple[str, ...] = ()   # extra capture-kernel command line words
    qemu_args: tuple[str, ...] = ()      # extra QEMU arguments (e.g. a cold-plugged virtio-mem)
    dump_disks: bool = True
    wait_kdump: bool = True
    #: Boots tried again when one fails with a known emulator fault (TCG only; each failed
    #: attempt's evidence is kept in ``boot-attempt-N/``; see console.EMULATOR_FAULTS).
    boot_retries: int = 1

    def validate(self) -> None:
        if self.kexec not in KEXEC_MODES:
            raise UsageError(f"kexec must be one of {', '.join(KEXEC_MODES)}, not {self.kexec!r}")
        if self.capture_mode not in CAPTURE_MODES:
            raise UsageError(f"capture mode must be one of {', '.join(CAPTURE_MODES)}, "
                             f"not {self.capture_mode!r}")
        if self.firmware not in ("qboot", "seabios"):
            raise UsageError(f"firmware must be qboot or seabios, not {self.firmware!r}")
        if self.kernel_entry not in KERNEL_ENTRIES:
            raise UsageError(f"kernel entry must be one of {', '.join(KERNEL_ENTRIES)}, "
                             f"not {self.kernel_entry!r}")
        if self.memory < 512 * MiB:
            raise UsageError(f"--memory {format_size(self.memory)}: below 512M leaves no room "
                             "for a crashkernel")
        if self.memory % (128 * MiB):
            raise UsageError(f"--memory {format_size(self.memory)} is not a multiple of 128M "
                             "(the guest's memory block)")
        if self.max_memory < self.memory:
            raise UsageError(f"--memory {format_size(self.memory)} is more than --maxmem "
                             f"{format_size(self.max_memory)} (the ceiling for boot plus "
                             "hot-added memory): raise --maxmem or lower --memory")
        if not 1 <= self.cpus <= self.max_cpus:
            raise UsageError(f"--cpus {self.cpus} (vCPUs at boot) must be between 1 and "
                             f"--maxcpus {self.max_cpus}")
        if self.max_cpus > 255:
            raise UsageError(f"--maxcpus {self.max_cpus}: more than 255 vCPUs needs "
                             "x2APIC/IOMMU setup the harness does not do")
        if self.boot_retries < 0:
            raise UsageError(f"boot retries must be >= 0, not {self.boot_retries}")


@dataclass
class PhaseTimes:
    """Host-side wall times of the boot phases, in seconds from QEMU's launch."""

    qemu_started: float = 0.0
    userspace: float | None = None
    ssh_ready: float | None = None
    kdump_loaded: float | None = None
    kdump_ready: float | None = None
    guest_uptime_userspace: float | None = None
    guest_kdump_load: float | None = None       # the load itself, measured in the guest

    def as_dict(self) -> dict[str, float | None]:
        return asdict(self)


@dataclass(frozen=True)
class Readiness:
    """What the guest reports once it is up (``/harness/readiness``)."""

    values: dict[str, str] = field(default_factory=dict)

    def get(self, key: str, default: str = "") -> str:
        return self.values.get(key, default)

    @property
    def kdump_loaded(self) -> bool:
        return self.get("kexec_crash_loaded") == "1"

    def summary(self) -> str:
        keys = ["release", "kdump_syscall", "kexec_crash_loaded", "crashkernel",
                "crash_hotplug_cpu", "crash_hotplug_memory", "cpus_online", "cpus_possible",
                "mem_total_kb"]
        return "\n".join(f"  {k:22} {self.get(k) or '-'}" for k in keys)


_live_guests: weakref.WeakSet[Guest] = weakref.WeakSet()


@atexit.register
def _kill_leftovers() -> None:
    for guest in list(_live_guests):
        guest.kill()


_USERNET_PORT = re.compile(r"TCP\[HOST_FORWARD\]\s+\d+\s+127\.0\.0\.1\s+(\d+)\s+10\.0\.2\.15\s+22")
_KDUMP_LOADED = re.compile(r"HARNESS: kdump-loaded rc=(\d+) syscall=([^\n]*?) uptime=([\d.]+)")
_READY = re.compile(r"HARNESS: ready uptime=([\d.]+)")
_USERSPACE = re.compile(r"HARNESS: userspace uptime=([\d.]+)")


class Guest:
    """A running guest.  Use as ``with Guest(image, config, workdir) as g: g.run("...")``.

    ``workdir`` receives the evidence: ``qemu-cmdline.txt``, ``qemu.log``, ``console.log``,
    ``qmp.jsonl``, ``readiness.json``, ``ssh-key`` and the dump disks.
    """

    def __init__(self, image: ImageLike, config: GuestConfig, workdir: Path,
                 *, cache_dir: Path | None = None) -> None:
        config.validate()
        self.image = image
        self.config = config
        self.workdir = workdir
        self.cache_dir = cache_dir or default_cache_dir()
        self.state = GuestState.NEW
        self.times = PhaseTimes()
        self.readiness = Readiness()
        self.accel = accel_mod.AccelChoice("tcg", "not chosen yet")
        self.timeouts = Timeouts.for_accel("tcg")
        self.shutdown_kind: str | None = None
        self.kdump_output = ""
        #: One line per boot attempt that an emulator fault ended (see ``launch``).
        self.boot_faults: list[str] = []
        self._proc: subprocess.Popen[bytes] | None = None
        self._sockdir: Path | None = None
        self._launched_at = 0.0
        #: Where the console stood when the guest became RUNNING (``check_health`` scans on).
        self._booted_mark = 0
        self.console: Console
        self.qmp: Qmp
        self.ssh: GuestSsh
        self.ssh_port: int | None = None
        self.argv: list[str] = []
        self.meta_disk = workdir / "capture-meta.img"
        self.dump_disk = workdir / "capture-dump.img"

    # -- context manager ------------------------------------------------------------------
    def __enter__(self) -> Guest:
        try:
            self.launch()
        except BaseException:
            self.shutdown()
            raise
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.shutdown()

    # -- launch ---------------------------------------------------------------------------
    def _kernel_options(self, key: SshKey) -> GuestKernelOptions:
        c = self.config
        harness_params: list[tuple[str, str]] = [
            ("authkey", key.kernel_arg), ("kexec", c.kexec), ("capture", c.capture_mode),
        ]
        if not c.kexec_hotplug:
            harness_params.append(("kexec_hotplug", "0"))
        if c.capture_args:
            harness_params.append(("capture_append", ",".join(c.capture_args)))
        return GuestKernelOptions(
            crashkernel=c.crashkernel, memhp_default_state=c.memhp_default_state,
            crash_debug=c.crash_debug, extra=c.kernel_args, harness=tuple(harness_params))

    def _spec(self, key: SshKey) -> MachineSpec:
        assert self._sockdir is not None
        c = self.config
        firmware = Path("/usr/share/qemu/qboot.rom") if c.firmware == "qboot" else None
        if firmware is not None and not firmware.exists():
            firmware = None  # older QEMU packages lack qboot; SeaBIOS works, a little slower
        disks: tuple[Path, ...] = ()
        if c.dump_disks:
            disks = (self.meta_disk, self.dump_disk)
        return MachineSpec(
            kernel=self.boot_kernel, initrd=self.image.initrd_path,
            append=self._kernel_options(key).render(),
            qmp_socket=self._sockdir / "qmp.sock", console_socket=self._sockdir / "console.sock",
            accel=self.accel.name, memory=c.memory, memory_slots=c.memory_slots,
            max_memory=c.max_memory, cpus=c.cpus, max_cpus=c.max_cpus, disks=disks,
            firmware=firmware, extra_args=c.qemu_args)

    @property
    def boot_kernel(self) -> Path:
        """What QEMU's ``-kernel`` gets (see ``GuestConfig.kernel_entry``)."""
        pvh: Path | None = getattr(self.image, "pvh_kernel_path", None)
        if self.config.kernel_entry == "auto" and pvh is not None:
            return pvh
        return self.image.kernel_path

    def _make_disks(self) -> None:
        if not self.config.dump_disks:
            return
        # Sparse files: the dump disk is as large as all the memory the guest could have.
        with open(self.meta_disk, "wb") as f:
            f.truncate(64 * MiB)
        with open(self.dump_disk, "wb") as f:
            f.truncate(self.config.max_memory + self.config.memory + 64 * MiB)

    def launch(self) -> None:
        """Start QEMU and wait until the guest is kdump-ready (``RUNNING``).

        Under TCG a boot that dies of a known emulator fault (``EMULATOR_FAULTS``, never a
        plain kernel panic) is tried again up to ``config.boot_retries`` times; the failed
        attempt's evidence moves to ``boot-attempt-N/`` and ``boot_faults`` says why.
        """
        if self.state is not GuestState.NEW:
            raise HarnessError(f"guest already {self.state.value}; a Guest launches once")
        self.state = GuestState.LAUNCHING
        self.workdir.mkdir(parents=True, exist_ok=True)
        binary = accel_mod.qemu_binary()
        accel_mod.qemu_version(binary)   # refuses a QEMU older than the harness knows
        self.accel = accel_mod.choose_accel(self.config.accel, self.image.kernel_path,
                                            self.cache_dir)
        self.timeouts = Timeouts.for_accel(self.accel.name)
        while True:
            try:
                self._launch_once(binary)
            except BootFailure:
                fault = self._emulator_fault()
                if fault is None or len(self.boot_faults) >= self.config.boot_retries:
                    raise
                self._set_attempt_aside(fault)
                continue
            self.state = GuestState.RUNNING
            return

    def _emulator_fault(self) -> str | None:
        """The known emulator fault that ended this boot, if any (TCG only)."""
        if self.accel.name != "tcg" or not hasattr(self, "console"):
            return None
        text = self.console.text()
        for name, pattern in EMULATOR_FAULTS.items():
            hit = pattern.search(text)
            if hit:
                rip = re.search(r"RIP: \S+:(\S+)", text[hit.start():])
                return f"{name}" + (f" at {rip.group(1)}" if rip else "")
        return None

    def _set_attempt_aside(self, fault: str) -> None:
        """Stop this attempt's QEMU and move its evidence to ``boot-attempt-N/``."""
        self.kill()
        self._close_channels()
        attempt = len(self.boot_faults) + 1
        aside = self.workdir / f"boot-attempt-{attempt}"
        aside.mkdir(exist_ok=True)
        for name in ("console.log", "qemu.log", "qmp.jsonl", "qemu-cmdline.txt"):
            if (self.workdir / name).exists():
                (self.workdir / name).rename(aside / name)
        note = (f"boot attempt {attempt} ended by a known emulator fault ({fault}); "
                f"evidence in {aside.name}/")
        (aside / "reason.txt").write_text(note + "\n")
        log.warning("%s: booting again", note)
        self.boot_faults.append(note)
        self.times = PhaseTimes()
        self._proc = None

    def _launch_once(self, binary: str) -> None:
        # Unix socket paths are limited to 108 bytes: keep them out of deep artifact dirs.
        self._sockdir = Path(tempfile.mkdtemp(prefix="kh-"))
        key = SshKey()
        key.save(self.workdir / "ssh-key")
        self._make_disks()
        self.argv = qemu_args(self._spec(key), binary)
        (self.workdir / "qemu-cmdline.txt").write_text(render_command(self.argv) + "\n")

        self.qmp = Qmp(self._sockdir / "qmp.sock", transcript=self.workdir / "qmp.jsonl",
                       timeout=self.timeouts.qmp_command, explain_lost=self._why_lost)
        self.qmp.start()
        self.console = Console(self._sockdir / "console.sock", self.workdir / "console.log")
        self.console.listen()

        with open(self.workdir / "qemu.log", "wb") as qemu_log:
            self._launched_at = time.monotonic()
            self._proc = subprocess.Popen(self.argv, stdin=subprocess.DEVNULL, stdout=qemu_log,
                                          stderr=subprocess.STDOUT, start_new_session=True,
                                          preexec_fn=die_with_parent)
        _live_guests.add(self)
        self._accept_channels()
        self.ssh_port = self._forwarded_ssh_port()
        self.ssh = GuestSsh("127.0.0.1", self.ssh_port, key)
        self._wait_booted()

    def _accept_channels(self) -> None:
        deadline = time.monotonic() + self.timeouts.qmp_command
        # QEMU connects its chardevs while parsing the command line; a bad option makes it
        # exit instead, which we want to report with its own message, not as a timeout.
        try:
            self.console.accept(timeout=self.timeouts.qmp_command, still_running=self.alive)
        except LostVMError:
            self._check_alive("QEMU exited before connecting its console")
            raise
        self.qmp.accept(timeout=max(1.0, deadline - time.monotonic()))

    def _check_alive(self, what: str) -> None:
        assert self._proc is not None
        rc = self._proc.poll()
        if rc is not None:
            log_tail = _tail(self.workdir / "qemu.log")
            raise QemuLaunchError(f"{what} (exit code {rc})",
                                  details=f"command line: {render_command(self.argv)}\n"
                                          f"QEMU log tail:\n{log_tail}")

    def _forwarded_ssh_port(self) -> int:
        text = self.qmp.hmp("info usernet")
        m = _USERNET_PORT.search(text)
        if not m:
            raise QemuLaunchError("QEMU set up no SSH port forward", details=text)
        return int(m.group(1))

    def _wait_booted(self) -> None:
        t = self.timeouts

        def since() -> float:
            return time.monotonic() - self._launched_at

        user = self.console.wait_for(_USERSPACE, timeout=t.boot, what="guest userspace",
                                     during_boot=True)
        self.times.userspace = user.at - self._launched_at
        self.times.guest_uptime_userspace = float(user.groups[0] or 0)
        self.console.wait_for(_READY, timeout=t.boot, what="the guest's SSH server",
                              during_boot=True)
        self.ssh.connect(timeout=t.ssh_connect)
        self.times.ssh_ready = since()
        if self.config.kexec != "none" and self.config.wait_kdump:
            loaded = self.console.wait_for(_KDUMP_LOADED, timeout=t.kdump_load,
                                           what="loading the capture kernel", during_boot=True)
            self.times.kdump_loaded = loaded.at - self._launched_at
            rc = int(loaded.groups[0] or 1)
            # One round trip for both: each SSH command costs ~0.1 s under TCG.
            out = self.run("cat /run/harness/kdump-load.log; echo ==readiness==; "
                           "/harness/readiness").stdout
            self.kdump_output, _, report = out.partition("==readiness==\n")
            self.readiness = _parse_readiness(report)
            if self.times.guest_uptime_userspace is not None:
                self.times.guest_kdump_load = (float(loaded.groups[2] or 0)
                                               - self.times.guest_uptime_userspace)
            if rc != 0 or not self.readiness.kdump_loaded:
                raise KdumpLoadError(self._kdump_failure_reason(rc), details=self.kdump_output)
        else:
            self.readiness = self.read_readiness()
        self.times.kdump_ready = since()
        self._booted_mark = self.console.mark()
        (self.workdir / "readiness.json").write_text(
            json.dumps({"readiness": self.readiness.values, "times": self.times.as_dict(),
                        "accel": asdict(self.accel), "boot_faults": self.boot_faults,
                        "boot_kernel": str(self.boot_kernel)},
                       indent=2) + "\n")

    def _kdump_failure_reason(self, rc: int) -> str:
        """kexec's own words, the reservation and what loading would need."""
        return explain_load_failure(
            rc, self.kdump_output, crashkernel=self.config.crashkernel,
            reserved=reserved_size(self.readiness.get("crashkernel")),
            kernel=self.image.kernel_path,
            initrd=getattr(self.image, "capture_initrd_path", None))

    # -- using the guest ------------------------------------------------------------------
    def run(self, command: str, *, timeout: float | None = None, check: bool = False,
            stdin: bytes | None = None) -> CommandResult:
        """Run a shell command in the guest over SSH."""
        if self.state not in (GuestState.RUNNING, GuestState.LAUNCHING):
            raise HarnessError(f"cannot run commands: the guest is {self.state.value}")
        try:
            return self.ssh.run(command, timeout=timeout or self.timeouts.command,
                                check=check, stdin=stdin)
        except SshError:
            # A dead QEMU or a guest that panicked or ran out of memory explains a broken
            # channel better than the channel's own error does.
            self.check_health(f"running {command[:60]!r}")
            raise

    def check_health(self, doing: str) -> None:
        """Fail at once, naming the cause, when the guest can no longer do ``doing``.

        QEMU's own death is a harness error (``LostVMError``); a panic, the OOM killer or
        memory the kernel refused to add, read from the console, are guest results.  Only
        meaningful while the guest runs: after a deliberate panic the console is the
        capture's business.
        """
        died = self._why_lost()
        if died:
            raise LostVMError(f"{died} (while {doing})")
        if self.state is not GuestState.RUNNING or not hasattr(self, "console"):
            return
        text = self.console.text(self._booted_mark)
        panic = CRASH_SIGNATURES["panic"].search(text)
        if panic:
            raise UnexpectedPanic(f"the guest panicked while {doing}: {_line_at(text, panic)}",
                                  details="console tail:\n" + self.console.tail())
        oom = GUEST_MEMORY_SIGNATURES["oom"].search(text)
        if oom:
            raise GuestOutOfMemory(f"the guest ran out of memory while {doing}: "
                                   f"{_line_at(text, oom)}",
                                   details="console tail:\n" + self.console.tail())
        refused = GUEST_MEMORY_SIGNATURES["add_memory"].findall(text)
        if refused:
            first = GUEST_MEMORY_SIGNATURES["add_memory"].search(text)
            assert first is not None
            raise HotplugNotHonoured(
                f"the guest refused hot-added memory while {doing} ({len(refused)} time(s)): "
                f"{_line_at(text, first)}", details="console tail:\n" + self.console.tail())

    def _why_lost(self) -> str | None:
        """If QEMU died, how (a moment's grace: QMP and SSH notice before the process ends)."""
        if self._proc is None:
            return None
        if self._proc.poll() is None:
            self.wait_exit(0.5)
        return self.crashed()

    def read_readiness(self) -> Readiness:
        return _parse_readiness(self.run("/harness/readiness", check=True).stdout)

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc else None

    def crashed(self) -> str | None:
        """If QEMU itself died (killed by a signal, or exited with an error), say how.

        A guest that powers off or reboots under ``-no-reboot`` exits QEMU with status 0;
        anything else is QEMU's failure, not the guest's.
        """
        rc = self._proc.poll() if self._proc is not None else None
        if rc is None or rc == 0:
            return None
        how = f"killed by signal {-rc}" if rc < 0 else f"exit status {rc}"
        return f"QEMU died ({how}): {_tail(self.workdir / 'qemu.log', 5)}"

    def alive(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def wait_exit(self, timeout: float) -> int | None:
        if self._proc is None:
            return None
        try:
            return self._proc.wait(timeout)
        except subprocess.TimeoutExpired:
            return None

    # -- teardown -------------------------------------------------------------------------
    def kill(self) -> None:
        if self._proc is not None:
            kill_process_group(self._proc)
            try:
                self._proc.wait(5)
            except subprocess.TimeoutExpired:
                pass

    def _close_channels(self) -> None:
        """Close SSH, QMP and the console, and remove their socket directory."""
        for closer in ("ssh", "qmp", "console"):
            obj = getattr(self, closer, None)
            if obj is not None:
                try:
                    obj.close()
                except Exception:
                    # The process is gone or going; closing the rest must still happen.
                    log.debug("closing the guest's %s failed", closer, exc_info=True)
        if self._sockdir is not None:
            shutil.rmtree(self._sockdir, ignore_errors=True)
            self._sockdir = None

    def shutdown(self) -> str:
        """Stop QEMU: QMP ``quit`` first, SIGKILL second.  Returns which one worked."""
        if self.state is GuestState.STOPPED:
            return self.shutdown_kind or "already stopped"
        kind = "not started"
        if self._proc is not None:
            if self._proc.poll() is not None:
                kind = "already exited"
            else:
                kind = "hard (SIGKILL)"
                try:
                    if hasattr(self, "ssh"):
                        self.ssh.close()
                    self.qmp.execute("quit", timeout=5)
                    self._proc.wait(self.timeouts.shutdown)
                    kind = "soft (QMP quit)"
                except (HarnessError, subprocess.TimeoutExpired):
                    self.kill()
        self._close_channels()
        _live_guests.discard(self)
        self.state = GuestState.STOPPED
        self.shutdown_kind = kind
        return kind


def _parse_readiness(text: str) -> Readiness:
    return Readiness(dict(line.split("=", 1) for line in text.splitlines() if "=" in line))


def _line_at(text: str, match: re.Match[str]) -> str:
    """The whole console line ``match`` is on, stripped."""
    start = text.rfind("\n", 0, match.start()) + 1
    end = text.find("\n", match.end())
    return text[start:end if end >= 0 else len(text)].strip()


def default_cache_dir() -> Path:
    import os

    base = os.environ.get("KDUMP_HARNESS_CACHE")
    if base:
        return Path(base)
    xdg = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(xdg) / "kdump-harness"


def _tail(path: Path, lines: int = 20) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


__all__ = ["BootFailure", "Guest", "GuestConfig", "GuestState", "PhaseTimes", "Readiness"]
