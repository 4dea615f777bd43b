"""Starting a guest from its snapshot (``GuestConfig.snapshot``) instead of booting it.

A new QEMU with the snapshot's command line (the same image, kernel command line, SSH key
and devices; its own sockets, SSH port forward and fresh dump disks) maps the snapshot's
RAM file privately and loads the rest of its state (``-incoming defer``, then QMP), then
SSH resumes the snapshot's pre-connected session (``presession.py``).  What the guest
keeps from the snapshot is handled, not assumed:

* its clock is the snapshot's (guest time stood still while it was saved): the host's wall
  clock minus the guest's is read once it runs (``Guest.clock_offset``) and every
  comparison with a guest time (CRASHTIME) takes it off;
* its random state is the snapshot's: QEMU's ``vmgenid`` gets a new generation ID at every
  start, and Linux (5.18+, ``CONFIG_VMGENID``) reseeds its CRNG the moment it sees it
  change; ``virtio-rng`` feeds it the host's entropy from then on (``qemu_args``);
* its readiness record is read again and must be the snapshot's (the capture kernel
  loaded, the same syscall, the same reservation), or the restore is refused.

``times.restore`` is QEMU's start to the guest running again, ``times.kdump_ready`` QEMU's
start to the readiness record checked: the same meaning as after a cold boot.
"""

from __future__ import annotations

import re
import secrets
import shutil
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ..errors import LostVMError, QemuLaunchError, SnapshotError
from ..topology import GUEST_CLOCK_COMMAND, parse_guest_clock
from . import presession
from .boot import write_readiness
from .config import Readiness
from .process import log_tail
from .qemu_args import SnapshotRam
from .snapshot import CAPABILITIES, Snapshot, ensure_snapshot, mark_used, wait_migration
from .ssh import SshKey

if TYPE_CHECKING:
    from .machine import Guest

#: Readiness keys that change while a guest runs; the rest must survive the restore.
_VOLATILE = ("uptime",)
#: One round trip: the guest's wall clock, then its readiness record; both in the shell that
#: reads the command (sourced, not run): a restored guest's TCG translates every program
#: start anew; without the two fork+execs the check takes 68 ms instead of 116 (QEMU 10.0).
_CHECK = f"{GUEST_CLOCK_COMMAND}; echo ==readiness==; . /harness/readiness"


def restore(guest: Guest, binary: str) -> None:
    """Start ``guest`` from its snapshot (made now if the cache has none) and check it."""
    snap = ensure_snapshot(guest.image, guest.config, accel=guest.accel.name, binary=binary,
                           cache_dir=guest.cache_dir, evidence=guest.workdir / "snapshot-build")
    guest.restored_from = snap.directory
    t = guest.timeouts
    what = f"restoring the snapshot {snap.directory.name}"
    guest.snapshot_ram = SnapshotRam(snap.ram_path, shared=False)
    try:
        guest.start_qemu(binary, SshKey.load(snap.ssh_key_path), incoming=["-incoming", "defer"])
        load_state(guest, snap, t.snapshot_restore, what)
    except (LostVMError, QemuLaunchError) as exc:
        # QEMU says why a load failed on its stderr when it exits.
        tail = log_tail(guest.workdir / "qemu.log").strip()
        raise SnapshotError(f"{what}: QEMU could not load it: "
                            f"{tail.splitlines()[-1] if tail else exc}",
                            details=f"{exc}\nQEMU log tail:\n{tail}") from exc
    # Saved stopped, so it stays paused after the load (QEMU does not autostart it).
    guest.qmp.execute("cont")
    guest.times.restore = time.monotonic() - guest.launched_at
    # The readiness check goes through the serial shell while SSH shakes hands: after a
    # restore TCG translates every code path anew, so the handshake costs ~0.1 s of
    # guest CPU, and the check done after it added 0.1 s more (measured, QEMU 10.0).
    asked = _ask_console(guest)
    # The guest's end waits for the client, so connecting after ``cont`` loses nothing;
    # connect_over owns the socket from here (closes it if the handshake fails).
    host_end = presession.connect(guest.presession_socket, t.ssh_connect)
    guest.ssh.connect_over(host_end, snap.preamble, timeout=t.ssh_connect)
    guest.times.ssh_ready = time.monotonic() - guest.launched_at
    check_restored(guest, snap, _console_answer(guest, asked, t.ssh_connect))
    guest.times.kdump_ready = time.monotonic() - guest.launched_at
    mark_used(snap.directory)
    guest.booted_mark = guest.console.mark()
    # The evidence of the boot this guest did not do here: the snapshot's.
    shutil.copyfile(snap.directory / "console-boot.log", guest.workdir / "console-boot.log")
    write_readiness(guest)


def load_state(guest: Guest, snap: Snapshot, timeout: float, what: str) -> None:
    """Load the snapshot's device state into a QEMU started with ``-incoming defer`` (the
    capability is not a ``-global`` of the migration object in QEMU 10.0); a state QEMU
    cannot load fails in QEMU's words (``exit-on-error`` off, QEMU 9.1+)."""
    guest.qmp.execute("migrate-set-capabilities", {"capabilities": CAPABILITIES})
    guest.qmp.execute("migrate-incoming", {"uri": f"file:{snap.state_path}",
                                           "exit-on-error": False})
    wait_migration(guest, timeout, what)


@dataclass(frozen=True)
class Asked:
    """A check typed on the serial shell: where its answer starts, when it was sent."""

    token: str
    mark: int
    sent_wall: float


@dataclass(frozen=True)
class Answer:
    out: str
    before: float       # host wall clock bracketing the guest's clock reading
    after: float


def _ask_console(guest: Guest) -> Asked:
    token = secrets.token_hex(6)
    mark = guest.console.mark()
    sent = time.time()
    # The shell echoes what is typed: the quotes keep the echo from matching the markers.
    guest.console.send(f"echo {token}-'begin'; {_CHECK}; echo {token}-'end'")
    return Asked(token, mark, sent)


def _console_answer(guest: Guest, asked: Asked, timeout: float) -> Answer:
    """The serial shell's answer to ``asked`` (complete lines between the markers)."""
    end = guest.console.wait_for(re.compile(rf"^{asked.token}-end$", re.M), timeout=timeout,
                                 start=asked.mark, what="the restored guest's readiness check "
                                 "on the serial console")
    begin = guest.console.find(re.compile(rf"^{asked.token}-begin\n", re.M), asked.mark)
    if begin is None or begin.end > end.start:
        raise SnapshotError("the restored guest's serial shell answered out of order: "
                            + guest.console.text(asked.mark)[-500:])
    out = guest.console.text()[begin.end:end.start]
    split = out.find("==readiness==")
    clock_seen = guest.console.arrival_time(begin.end + max(split, 0))
    return Answer(out, asked.sent_wall, time.time() - (time.monotonic() - clock_seen))


def check_restored(guest: Guest, snap: Snapshot, answer: Answer | None = None) -> None:
    """Read the guest's clock and readiness record (``answer``: already read on the
    console; else over SSH); refuse a guest that is not the one saved."""
    if answer is None:
        before = time.time()
        out = guest.run(_CHECK, check=True).stdout
        answer = Answer(out, before, time.time())
    out, before, after = answer.out, answer.before, answer.after
    clock, _, report = out.partition("==readiness==\n")
    guest_wall = parse_guest_clock(clock)
    if guest_wall is None:
        raise SnapshotError(f"the restored guest's clock is unreadable: {clock!r}")
    guest.clock_offset = (before + after) / 2 - guest_wall
    guest.readiness = Readiness.parse(report)
    now = {k: v for k, v in guest.readiness.values.items() if k not in _VOLATILE}
    then = {k: v for k, v in snap.readiness.items() if k not in _VOLATILE}
    if now != then:
        changed = sorted(k for k in now.keys() | then.keys() if now.get(k) != then.get(k))
        raise SnapshotError(
            f"the guest restored from {snap.directory.name} is not the one saved: "
            + ", ".join(f"{k} {then.get(k)!r} -> {now.get(k)!r}" for k in changed))
    if guest.config.kexec != "none" and not guest.readiness.kdump_loaded:
        raise SnapshotError(f"the guest restored from {snap.directory.name} has no capture "
                            "kernel loaded")


__all__ = ["check_restored", "restore"]
