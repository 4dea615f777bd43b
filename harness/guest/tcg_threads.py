"""Multi-threaded or round-robin TCG: one host thread per vCPU, or one for them all.

Multi-threaded TCG (``thread=multi``) runs each vCPU on its own host thread, so a guest's
CPUs really run at once.  When the host's cores are fewer than the vCPUs that want them
(two guests on two cores: the CI load, a nightly matrix's parallel cells, ``bench
streams``), the host deschedules vCPU threads in the middle of the guest's work:

* a TCG guest here runs with ``hypervisor=off`` (``qemu_args``), so Linux takes its fair
  queued spinlocks, and a waiter whose vCPU thread is descheduled holds up every waiter
  behind it while they spin (27 % of the busy vCPUs' samples during a swarm beside two CPU
  hogs were in ``native_queued_spin_lock_slowpath``, 4.5 % with the guest alone);
* TCG executes ``PAUSE`` without giving the host core away.

Round-robin TCG (``thread=single``) runs all of a guest's vCPUs on one host thread and
moves to the next vCPU whenever one leaves the execution loop (``HLT``; ``PAUSE``, which
QEMU's ``helper_pause`` turns into such an exit) and on a kick every 100 ms
(``accel/tcg/tcg-accel-ops-rr.c``), so a spinning vCPU hands over to the lock's holder.
Measured here (2026-12, 2 cores, QEMU 10.0, trixie 6.12.117), two parallel streams of
``run --snapshot``, 12 cycles each, six pairs alternating over an hour: round-robin won
five, 832 against 724 cycles/hour (medians; 8.32 against 9.63 CPU-s per cycle).  A guest
alone on the host is faster multi-threaded (panic to capture 4.4-4.6 s against 5.1-5.3 s,
2 x 3 runs each), and its CPUs run in parallel, which races need: so ``auto`` picks
round-robin only when the other guests' boot vCPUs and this guest's do not fit the cores
this process may use.  The other guests are the QEMUs running now, or, when the
caller says how many guests it runs at once (``guests_at_once``: ``bench streams``,
campaign workers; pytest-xdist's worker count), as many as that even between their runs.
``tcg_threads`` (``KDUMP_HARNESS_TCG_THREADS``) overrides the choice.
"""

from __future__ import annotations

import itertools
import os
from dataclasses import dataclass
from pathlib import Path

from ..errors import UsageError
from ..settings import TcgThreads, current

#: What QEMU's ``-accel tcg,thread=`` takes.
MODES = ("multi", "single")


@dataclass(frozen=True)
class TcgThreadsChoice:
    """``thread=`` for ``-accel tcg`` and why; ``mode`` is None under KVM."""

    mode: str | None
    reason: str

    def __post_init__(self) -> None:
        if self.mode is not None and self.mode not in MODES:
            raise ValueError(f"TCG thread mode must be one of {', '.join(MODES)}, "
                             f"not {self.mode!r}")

    def note(self) -> str:
        """One line for the evidence (``qemu-cmdline.txt``), beside the command line that
        already says ``thread=``: why this one."""
        return f"# TCG threads {self.mode}: {self.reason}"


#: Why a guest that will unplug vCPUs stays multi-threaded: the guest's ACPI eject runs in
#: the vCPU thread, and QEMU 10.0 then joins that vCPU's thread, which under round-robin is
#: itself: "qemu_thread_join: Resource deadlock avoided", and QEMU aborts (seen here).
UNPLUG_ABORTS = ("QEMU 10.0's round-robin TCG aborts when a vCPU is unplugged "
                 "(qemu_thread_join: Resource deadlock avoided)")


def choose_tcg_threads(setting: TcgThreads, accel: str, vcpus: int, busy_vcpus: int,
                       cores: int, *, cpu_unplug: bool = False,
                       where: str = "tcg_threads") -> TcgThreadsChoice:
    """``auto``: multi-threaded while ``busy_vcpus`` (other guests') plus this guest's
    ``vcpus`` fit ``cores``, or when the guest will unplug vCPUs; round-robin otherwise.
    Round-robin asked for (``where`` says how) with ``cpu_unplug`` is refused."""
    if accel != "tcg":
        return TcgThreadsChoice(None, f"{accel}: no TCG threads")
    if setting is TcgThreads.SINGLE and cpu_unplug:
        raise UsageError(f"{where}=single: this guest's swarm unplugs vCPUs, and "
                         f"{UNPLUG_ABORTS}: use multi or auto")
    if setting is not TcgThreads.AUTO:
        return TcgThreadsChoice(setting.value, f"tcg_threads={setting.value}")
    if cpu_unplug:
        return TcgThreadsChoice("multi", f"vCPU unplugs ahead, and {UNPLUG_ABORTS} "
                                         "(tcg_threads=auto)")
    wanted = f"{busy_vcpus} vCPU(s) of other guests + this guest's {vcpus}"
    if busy_vcpus + vcpus <= cores:
        return TcgThreadsChoice("multi", f"{wanted} fit {cores} core(s) (tcg_threads=auto)")
    return TcgThreadsChoice("single", f"{wanted} exceed {cores} core(s) (tcg_threads=auto): "
                                      "round-robin wastes no core on a spinning vCPU")


def boot_vcpus(argv: list[str]) -> int:
    """The boot vCPUs a QEMU command line asks for (``-smp [cpus=]N,...``; 1 without)."""
    for option, value in itertools.pairwise(argv):
        if option.lstrip("-") != "smp":
            continue
        for part in value.split(","):
            key, _, number = part.rpartition("=")
            if key in ("", "cpus") and number.isdigit():
                return max(int(number), 1)
        return 1
    return 1


def running_qemu_vcpus(proc: Path = Path("/proc")) -> int:
    """The boot vCPUs of every QEMU system emulator running on this host now."""
    total = 0
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            raw = (entry / "cmdline").read_bytes()
        except OSError:     # gone meanwhile, or not ours to read
            continue
        argv = raw.decode(errors="replace").split("\0")
        if Path(argv[0]).name.startswith("qemu-system-"):
            total += boot_vcpus(argv)
    return total


def host_cores() -> int:
    """The cores this process (and the QEMU it starts) may run on."""
    return len(os.sched_getaffinity(0))


def expected_vcpus(running: int, guests_at_once: int, vcpus: int) -> int:
    """The other guests' vCPUs to expect: the QEMUs running now, or, when the caller runs
    ``guests_at_once`` guests (parallel streams, campaign workers, xdist workers), as many
    as the others have even in the moment between two of their runs."""
    return max(running, max(guests_at_once - 1, 0) * vcpus)


def qemu_tcg_threads(accel: str, vcpus: int, *, cpu_unplug: bool = False) -> TcgThreadsChoice:
    """The choice for a QEMU about to start ``accel`` with ``vcpus`` boot vCPUs, from the
    process's settings and what already runs on the host."""
    settings = current()
    setting = settings.source("tcg_threads")
    mode = TcgThreads(setting.value)
    busy = 0
    if accel == "tcg" and mode is TcgThreads.AUTO:
        busy = expected_vcpus(running_qemu_vcpus(), settings.guests_at_once, vcpus)
    return choose_tcg_threads(mode, accel, vcpus, busy, host_cores(), cpu_unplug=cpu_unplug,
                              where=setting.where)


__all__ = ["MODES", "UNPLUG_ABORTS", "TcgThreadsChoice", "boot_vcpus", "choose_tcg_threads",
           "expected_vcpus", "host_cores", "qemu_tcg_threads", "running_qemu_vcpus"]
