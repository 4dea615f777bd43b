"""Panic triggers: checked before anything starts, fired without waiting for a reply.

``sysrq`` writes ``c`` to /proc/sysrq-trigger (on one CPU with ``--cpu``), ``sysrq-multi``
does so on several CPUs at the same moment, ``nmi`` is QMP ``inject-nmi``: every vCPU
takes it at once and, with ``unknown_nmi_panic=1``, panics from NMI context.
"""

from __future__ import annotations

from ..errors import SshError, UsageError
from ..guest import Guest
from ..model import Trigger, values
from ..timeouts import wait_until

TRIGGERS = values(Trigger)


def check_trigger(trigger: str, cpus: tuple[int, ...], *, max_cpus: int | None = None) -> None:
    """Refuse a trigger and ``--cpu`` list that cannot work (before anything starts)."""
    if trigger not in TRIGGERS:
        raise UsageError(f"--trigger must be one of {', '.join(TRIGGERS)}, not {trigger!r}")
    if trigger == "nmi" and cpus:
        raise UsageError("--trigger nmi reaches every CPU at once: it takes no --cpu")
    if trigger == "sysrq" and len(cpus) > 1:
        raise UsageError("--trigger sysrq panics on one CPU: give one --cpu (several: "
                         "--trigger sysrq-multi)")
    if trigger == "sysrq-multi" and len(set(cpus)) < 2:
        raise UsageError("--trigger sysrq-multi needs at least two different --cpu N")
    for cpu in cpus:
        if cpu < 0 or (max_cpus is not None and cpu >= max_cpus):
            raise UsageError(f"--cpu {cpu}: the guest has CPUs 0-{(max_cpus or 1) - 1}")


def trigger_command(trigger: str, cpus: tuple[int, ...] = ()) -> str:
    """The guest shell command that panics it (``sysrq`` / ``sysrq-multi``)."""
    if trigger == "sysrq":
        if cpus:
            return f"taskset -c {cpus[0]} sh -c 'echo c > /proc/sysrq-trigger'"
        return "echo c > /proc/sysrq-trigger"
    if trigger == "sysrq-multi":
        if len(cpus) < 2:
            raise UsageError("sysrq-multi needs at least two CPUs")
        # Each writer spins until a shared start time so they hit sysrq together.
        parts = [f"taskset -c {c} sh -c 'while [ ! -e /run/go ]; do :; done; "
                 f"echo c > /proc/sysrq-trigger' &" for c in cpus]
        return " ".join(parts) + " sleep 0.2; touch /run/go; wait"
    raise UsageError(f"no shell command for trigger {trigger!r}")


def fire(guest: Guest, trigger: str, cpus: tuple[int, ...] = ()) -> str | None:
    """Fire the trigger without waiting for any reply.

    Returns a note when the trigger's SSH channel broke as the command was sent: a guest
    that panics at once takes the connection with it, so the console decides whether the
    trigger took (no panic then is a harness error, not ``no_panic``).
    """
    if trigger not in TRIGGERS:
        raise UsageError(f"trigger must be one of {', '.join(TRIGGERS)}, not {trigger!r}")
    if trigger == "nmi":
        # unknown_nmi_panic=1 is on the command line: every vCPU takes this NMI at once.
        guest.qmp.execute("inject-nmi")
        return None
    try:
        guest.ssh.start(trigger_command(trigger, cpus), timeout=guest.timeouts.command)
    except SshError as exc:
        if not exc.maybe_sent:
            raise
        return exc.message
    return None


def start_reload_in_flight(guest: Guest) -> None:
    """Start ``kdump-load`` and return once the load itself is under way.

    The script unloads first (``kexec_crash_loaded`` drops to 0), then spends ~1.5 s in
    ``kexec_file_load`` holding the kexec lock: a panic now cannot start a capture kernel.
    """
    guest.ssh.start(f"{guest.kdump_reload_command()} > /run/harness/reload-at-panic.log 2>&1",
                    timeout=guest.timeouts.command)
    wait_until(lambda: guest.run("cat /sys/kernel/kexec_crash_loaded").stdout.strip() == "0",
               timeout=guest.timeouts.kdump_load, interval=0.02,
               what="the kdump reload unloading the old image")
