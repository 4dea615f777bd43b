"""The guest: one QEMU process with its console, QMP and SSH, as a context manager.

Run states (``GuestState``) make misuse loud: commands need ``RUNNING``; after a panic the
guest is ``PANICKED`` and only the console and QMP remain meaningful.  Teardown is soft
first (QMP ``quit``), hard second (SIGKILL to QEMU's own process group), says which, and
always runs: QEMU also carries a parent-death signal, so not even ``kill -9`` of the test
runner leaves it behind.
"""

from __future__ import annotations

import logging
import re
import shutil
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType

from ..errors import (
    BootFailure,
    EmulatorFault,
    HarnessError,
    LostVMError,
    QemuLaunchError,
    SshError,
)
from ..images.cache import default_cache_root
from ..timeouts import Timeouts
from ..units import MiB
from . import accel as accel_mod
from .boot import emulator_fault, wait_booted
from .config import GuestConfig, GuestState, ImageLike, PhaseTimes, Readiness
from .console import Console
from .health import console_health, guest_ended
from .host_fit import HostFit, choose_host_fit
from .host_memory import qemu_preexec
from .process import LIVE, kill_process_group, log_tail
from .qemu_args import MachineSpec, SnapshotRam, kernel_options, qemu_args, render_command
from .qmp import Qmp
from .restore import restore
from .sockdir import make_sockdir
from .ssh import CommandResult, GuestSsh, SshKey

log = logging.getLogger(__name__)

_USERNET_PORT = re.compile(r"TCP\[HOST_FORWARD\]\s+\d+\s+127\.0\.0\.1\s+(\d+)\s+10\.0\.2\.15\s+22")


class Guest:
    """A running guest.  Use as ``with Guest(image, config, workdir) as g: g.run("...")``.

    ``workdir`` receives the evidence: ``qemu-cmdline.txt``, ``qemu.log``, ``console.log``,
    ``qmp.jsonl``, ``readiness.json``, ``ssh-key`` and the dump disks.
    """

    def __init__(self, image: ImageLike, config: GuestConfig, workdir: Path,
                 *, cache_dir: Path | None = None, restorable: bool = False) -> None:
        config.validate()
        #: Booted to be saved as a snapshot: the machine restored guests get (``_spec``).
        self.restorable = restorable
        self.image = image
        self.config = config
        self.workdir = workdir
        self.cache_dir = cache_dir or default_cache_root()
        self.state = GuestState.NEW
        self.times = PhaseTimes()
        self.readiness = Readiness()
        self.accel = accel_mod.AccelChoice("tcg", "not chosen yet")
        self.timeouts = Timeouts.for_accel("tcg")
        self.host_fit = HostFit.unchosen()
        self.shutdown_kind: str | None = None
        self.kdump_output = ""
        #: One line per boot attempt that an emulator fault ended (see ``launch``).
        self.boot_faults: list[str] = []
        self._proc: subprocess.Popen[bytes] | None = None
        #: The snapshot this guest was restored from (``config.snapshot``), and the host's
        #: wall clock minus the guest's: read after a restore (the guest's clock is the
        #: snapshot's) and in every observation before a panic (``topology.live``).
        self.restored_from: Path | None = None
        self.clock_offset = 0.0
        self.snapshot_ram: SnapshotRam | None = None   # a snapshot machine's RAM file
        self._sockdir: Path | None = None
        self.launched_at = 0.0
        #: Where the console stood when the guest became RUNNING (``check_health`` scans on).
        self.booted_mark = 0
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
    def _spec(self, key: SshKey) -> MachineSpec:
        assert self._sockdir is not None
        c = self.config
        # A snapshot's machine has vmgenid, which QEMU 10.0's qboot.rom cannot set up (the
        # guest never starts): SeaBIOS boots it, once, when the snapshot is made.
        restorable = c.snapshot or self.restorable
        firmware = (Path("/usr/share/qemu/qboot.rom")
                    if c.firmware == "qboot" and not restorable else None)
        if firmware is not None and not firmware.exists():
            firmware = None  # older QEMU packages lack qboot; SeaBIOS works, a little slower
        disks = (self.meta_disk, self.dump_disk) if c.dump_disks else ()
        return MachineSpec(
            kernel=self.boot_kernel, initrd=self.image.initrd_path,
            append=kernel_options(c, key.kernel_arg, accel=self.accel.name).render(),
            qmp_socket=self._sockdir / "qmp.sock", console_path=self._sockdir / "console",
            accel=self.accel.name, memory=c.memory, memory_slots=c.memory_slots,
            max_memory=c.max_memory, cpus=c.cpus, max_cpus=c.max_cpus, disks=disks,
            firmware=firmware, vmgenid=restorable, extra_args=c.qemu_args,
            snapshot_ram=self.snapshot_ram, tcg_threads=self.host_fit.thread_mode,
            presession_socket=self.presession_socket if restorable else None,
            debug_log=self.workdir / "qemu-debug.log")

    @property
    def presession_socket(self) -> Path:
        """The host end of a snapshot machine's pre-connected SSH session (presession.py)."""
        assert self._sockdir is not None
        return self._sockdir / "ssh-pre.sock"

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
        self.host_fit = choose_host_fit(self.accel.name, self.config)
        if self.config.snapshot:
            restore(self, binary)
            self.state = GuestState.RUNNING
            return
        while True:
            try:
                self._launch_once(binary)
            except BootFailure as exc:
                fault = emulator_fault(self)
                if fault is None:
                    raise
                if len(self.boot_faults) >= self.config.boot_retries:
                    # The emulator's fault, not the kernel's: a harness error.
                    raise EmulatorFault(f"{exc.message} ({fault}, a known emulator fault, "
                                        f"on every one of {len(self.boot_faults) + 1} "
                                        "boots)", details=exc.details) from exc
                self._set_attempt_aside(fault)
                continue
            self.state = GuestState.RUNNING
            return

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
        self.start_qemu(binary, SshKey())
        wait_booted(self)

    def start_qemu(self, binary: str, key: SshKey, *,
                   incoming: Sequence[str] = ()) -> None:
        """Start QEMU, connect its console and QMP, find its SSH port; ``incoming``: the
        options that make it load a snapshot's state instead of booting."""
        self._sockdir = make_sockdir()    # in /tmp: a socket path has at most 108 bytes
        key.save(self.workdir / "ssh-key")
        self._make_disks()
        self.argv = qemu_args(self._spec(key), binary) + list(incoming)
        (self.workdir / "qemu-cmdline.txt").write_text(
            f"{render_command(self.argv)}\n{self.host_fit.notes()}")

        self.qmp = Qmp(self._sockdir / "qmp.sock", transcript=self.workdir / "qmp.jsonl",
                       timeout=self.timeouts.qmp_command, explain_lost=self._why_lost)
        self.qmp.start()
        self.console = Console(self._sockdir / "console", self.workdir / "console.log")
        self.console.listen()

        with open(self.workdir / "qemu.log", "wb") as qemu_log:
            self.launched_at = time.monotonic()
            self._proc = subprocess.Popen(self.argv, stdin=subprocess.DEVNULL, stdout=qemu_log,
                                          stderr=subprocess.STDOUT, start_new_session=True,
                                          preexec_fn=qemu_preexec(self.host_fit.huge_pages))
        LIVE.add(self)
        self._accept_channels()
        self.ssh_port = self._forwarded_ssh_port()
        self.ssh = GuestSsh("127.0.0.1", self.ssh_port, key)

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
            tail = log_tail(self.workdir / "qemu.log")
            raise QemuLaunchError(f"{what} (exit code {rc})",
                                  details=f"command line: {render_command(self.argv)}\n"
                                          f"QEMU log tail:\n{tail}")

    def _forwarded_ssh_port(self) -> int:
        text = self.qmp.hmp("info usernet")
        m = _USERNET_PORT.search(text)
        if not m:
            raise QemuLaunchError("QEMU set up no SSH port forward", details=text)
        return int(m.group(1))

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
            # A dead QEMU or the guest's own failure explains a broken channel better.
            self.check_health(f"running {command[:60]!r}")
            raise

    @property
    def kdump_mode(self) -> str:
        """How this guest loads its capture kernel (``file`` or ``classic``): the syscall its
        boot really used (kexec-tools may fall back), else the configured one."""
        used = self.readiness.get("kdump_syscall").split()
        return used[0] if used else str(self.config.kexec)

    def kdump_reload_command(self) -> str:
        """The guest command that reloads kdump (unload, then load) the way the boot did;
        the swarm's update strategies, the contention injector and a panic during a
        reload all run this one script."""
        return f"/harness/kdump-load {self.kdump_mode}"

    def check_health(self, doing: str, *, grace: float = 0.5) -> None:
        """Fail at once, naming the cause, when the guest can no longer do ``doing``.

        QEMU's own death is a harness error (``LostVMError``); a panic, the OOM killer or
        refused memory on the console, or a reset of its own (QEMU exits 0), are the
        guest's results (``health``).  Only while the guest runs: after a deliberate panic
        it is the capture's business.  ``grace``: a live QEMU's time to finish dying."""
        died = self._why_lost(grace)
        if died:
            raise LostVMError(f"{died} (while {doing})")
        if self.state is GuestState.RUNNING and hasattr(self, "console"):
            console_health(self.console.text(self.booted_mark), doing, self.console.tail)
            if self._proc is not None and self._proc.poll() == 0:
                raise guest_ended(self.qmp.shutdown, doing, self.console.tail(),
                                  self.workdir / "qemu-debug.log")

    def _why_lost(self, grace: float = 0.5) -> str | None:
        """If QEMU died, how (a moment's grace: QMP and SSH notice before the process ends)."""
        if self._proc is None:
            return None
        if self._proc.poll() is None and grace > 0:
            self.wait_exit(grace)
        return self.crashed()

    def read_readiness(self) -> Readiness:
        return Readiness.parse(self.run("/harness/readiness", check=True).stdout)

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
        return f"QEMU died ({how}): {log_tail(self.workdir / 'qemu.log', 5)}"

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
        LIVE.discard(self)
        self.state = GuestState.STOPPED
        self.shutdown_kind = kind
        return kind


__all__ = ["Guest"]
