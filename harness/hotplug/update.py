"""Who keeps the kdump image current while the swarm runs: one object per strategy.

``kernel``       the kernel rewrites the elfcorehdr on every hot-plug event itself (crash
                 hot-plug, 6.6+): nothing to do from userspace.
``reload``       reload kdump once each phase has settled, as a distro's udev rule ends up
                 doing (the only way on 6.1).
``reload-each``  reload kdump after every single event (settling that event first).
``none``         nobody: the negative control, whose header goes stale.

Every reload goes through ``reload_kdump`` (the guest's ``/harness/kdump-load``, the same
script the boot, the contention injector and a panic during a reload run).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..errors import KernelUnsuitable
from ..model import UpdateStrategy

if TYPE_CHECKING:
    from ..guest import Guest
    from .plan import SwarmEvent
    from .report import PhaseReport, SwarmResult
    from .transcript import SwarmTranscript


def resolve_update(requested: UpdateStrategy, guest: Guest) -> UpdateStrategy:
    """``auto`` -> ``kernel`` where crash hot-plug works (crash_hotplug reads 1), else
    ``reload``; anything -> ``none`` when no capture kernel is loaded at all.

    Asking for ``kernel`` where the kernel cannot update the loaded image is refused
    (``KernelUnsuitable``) before anything is plugged: the run would only prove that.
    """
    requested = UpdateStrategy(requested)
    if guest.config.kexec == "none":
        return UpdateStrategy.NONE
    updatable = guest.readiness.get("crash_hotplug_memory").strip()
    if requested is UpdateStrategy.KERNEL and updatable != "1":
        why = ("the kernel has no crash hot-plug (no /sys/devices/system/memory/crash_hotplug: "
               "CONFIG_CRASH_HOTPLUG is unset or the kernel predates 6.6)" if not updatable else
               f"crash_hotplug reads {updatable}: the loaded image is not kernel-updatable "
               "(kexec_load without --hotplug?)")
        raise KernelUnsuitable(f"--update kernel: {why}; use --update reload (what a distro "
                               "udev rule does) or --update none --expect stale (a negative "
                               "control)")
    if requested is not UpdateStrategy.AUTO:
        return requested
    return UpdateStrategy.KERNEL if updatable == "1" else UpdateStrategy.RELOAD


def reload_kdump(guest: Guest, why: str, timeout: float) -> dict[str, Any]:
    """Reload the capture kernel (unload, then load) and say how it went."""
    started = time.monotonic()
    res = guest.run(f"{guest.kdump_reload_command()}; echo rc=$?; "
                    "cat /sys/kernel/kexec_crash_loaded", timeout=timeout)
    out = res.stdout.strip().splitlines()
    rc_line = next((line for line in reversed(out) if line.startswith("rc=")), "rc=?")
    return {"why": why, "mode": guest.kdump_mode, "rc": rc_line[3:],
            "loaded": out[-1] if out else "", "duration": time.monotonic() - started}


@dataclass
class KdumpUpdate:
    """The ``kernel`` and ``none`` strategies: userspace does nothing."""

    strategy: UpdateStrategy
    guest: Guest
    result: SwarmResult
    transcript: SwarmTranscript
    timeout: float

    @property
    def settles_each_event(self) -> bool:
        """Whether every event must settle before the next (so it can be reloaded after)."""
        return False

    def after_event(self, event: SwarmEvent) -> None:
        """Called once ``event`` has settled, when ``settles_each_event``."""

    def after_phase(self, report: PhaseReport) -> None:
        """Called once a phase has settled."""

    def _reload(self, why: str) -> dict[str, Any]:
        record = reload_kdump(self.guest, why, self.timeout)
        self.result.reloads.append(record)
        self.transcript.add("reload", what=why, record=record)
        if record["rc"] != "0" or record["loaded"] != "1":
            self.result.failures.append(f"kdump reload {why} failed (rc={record['rc']}, "
                                        f"kexec_crash_loaded={record['loaded']})")
        return record


class ReloadAfterPhase(KdumpUpdate):
    """``reload``: one reload once each phase has settled."""

    def after_phase(self, report: PhaseReport) -> None:
        report.reload = self._reload(f"after phase {report.phase}")


class ReloadAfterEvent(KdumpUpdate):
    """``reload-each``: a reload after every event."""

    @property
    def settles_each_event(self) -> bool:
        return True

    def after_event(self, event: SwarmEvent) -> None:
        self._reload(f"after {event.label()}")


def kdump_update(strategy: UpdateStrategy, guest: Guest, result: SwarmResult,
                 transcript: SwarmTranscript, timeout: float) -> KdumpUpdate:
    """The update object for ``strategy`` (already resolved: not ``auto``)."""
    kind = {UpdateStrategy.RELOAD: ReloadAfterPhase,
            UpdateStrategy.RELOAD_EACH: ReloadAfterEvent}.get(strategy, KdumpUpdate)
    return kind(strategy, guest, result, transcript, timeout)
