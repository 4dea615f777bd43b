"""Panic triggers: checked before anything starts, fired without waiting for a reply.

``sysrq`` writes ``c`` to /proc/sysrq-trigger (on one CPU with ``--cpu``), ``sysrq-multi``
does so on several CPUs at the same moment (they panic together: one wins panic_cpu),
``nmi`` is QMP ``inject-nmi``: QEMU raises LINT1 on every vCPU, but Linux leaves LINT1
masked on all CPUs but the boot CPU (setup_local_APIC), so CPU 0 alone takes it and, with
``unknown_nmi_panic=1``, panics from NMI context; the others save their notes through the
panic's NMI shootdown (seen in the dump's log: one "NMI received for unknown reason" line,
on CPU 0, with 6 CPUs online).
"""

from __future__ import annotations

from ..errors import SshError, UsageError
from ..guest import Guest
from ..model import Trigger, values
from ..signatures import CAPTURE_CMDLINE, PANIC
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
        # Each writer says it is spinning, then spins until the go file appears, so they
        # all hit sysrq within a loop iteration of each other.  Waiting for every writer
        # to be ready (not a fixed head start: starting a shell takes ~0.1 s under TCG,
        # more on a busy host) is what makes the panics simultaneous.
        parts = [f"taskset -c {c} sh -c 'touch /run/ready.{c}; while [ ! -e /run/go ]; "
                 f"do :; done; echo c > /proc/sysrq-trigger' &" for c in cpus]
        ready = (f"n=0; while [ $(ls /run/ready.* 2>/dev/null | wc -l) -lt {len(cpus)} ] "
                 "&& [ $n -lt 1000 ]; do sleep 0.01; n=$((n+1)); done;")
        return " ".join(parts) + f" {ready} touch /run/go; wait"
    raise UsageError(f"no shell command for trigger {trigger!r}")


def fire(guest: Guest, trigger: str, cpus: tuple[int, ...] = ()) -> str | None:
    """Fire the trigger without waiting for any reply.

    Returns a note when the trigger's request got no answer: a guest that panics at once
    dies before dropbear answers (the console shows it: ``gone``), or takes the connection
    with it; the console decides whether the trigger took (no panic then is a harness
    error, not ``no_panic``).
    """
    if trigger not in TRIGGERS:
        raise UsageError(f"trigger must be one of {', '.join(TRIGGERS)}, not {trigger!r}")
    if trigger == "nmi":
        # unknown_nmi_panic=1 is on the command line: the boot CPU panics in NMI context.
        guest.qmp.execute("inject-nmi")
        return None
    mark = guest.console.mark()

    def gone() -> bool:   # the panic, or (from NMI context: deferred output) the capture kernel
        text = guest.console.text(mark)
        return bool(PANIC.search(text) or CAPTURE_CMDLINE.search(text))

    try:
        guest.ssh.start(trigger_command(trigger, cpus), timeout=guest.timeouts.command,
                        gone=gone)
    except SshError as exc:
        if not exc.maybe_sent:
            raise
        return exc.message
    return None


def start_reload_in_flight(guest: Guest) -> None:
    """Start ``kdump-load`` and return once the load itself is under way.

    The script unloads first (``kexec_crash_loaded`` drops to 0), then spends ~1.5 s in
    ``kexec_file_load`` holding the kexec lock: a panic now cannot start a capture kernel.
    Where the kernel logs the load's start (``kexec_file: kernel:``, 6.8+ with ``kexec
    -d``: the boot's load printed it), the trigger waits for that line, so that the panic
    meets the lock held rather than the short gap after the unload with nothing loaded.
    """
    before = _load_starts(guest)
    guest.ssh.start(f"{guest.kdump_reload_command()} > /run/harness/reload-at-panic.log 2>&1",
                    timeout=guest.timeouts.command)
    wait_until(lambda: guest.run("cat /sys/kernel/kexec_crash_loaded").stdout.strip() == "0",
               timeout=guest.timeouts.kdump_load, interval=0.02,
               what="the kdump reload unloading the old image")
    if before:
        wait_until(lambda: _load_starts(guest) > before, timeout=guest.timeouts.kdump_load,
                   interval=0.02, what="the reload's kexec_file_load to start "
                                       "('kexec_file: kernel:' in dmesg)")


def _load_starts(guest: Guest) -> int:
    """How many ``kexec_file_load`` calls the kernel has logged the start of."""
    out = guest.run("dmesg | grep -c 'kexec_file: kernel: ' || true").stdout.strip()
    return int(out) if out.isdigit() else 0
