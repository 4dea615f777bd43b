"""What a QEMU process gets from this host beyond its command line: transparent huge pages
(``host_memory``) and, under TCG, one host thread per vCPU or one for all (``tcg_threads``).

Both are chosen when the QEMU starts, from the settings and the host as it is then, and
both are written into ``qemu-cmdline.txt`` as ``#`` lines: the command line says
``thread=``, but not why; a ``prctl`` is not in it at all.
"""

from __future__ import annotations

from dataclasses import dataclass

from .config import GuestConfig
from .host_memory import HugePagesChoice, qemu_huge_pages
from .tcg_threads import TcgThreadsChoice, qemu_tcg_threads


@dataclass(frozen=True)
class HostFit:
    huge_pages: HugePagesChoice
    tcg_threads: TcgThreadsChoice

    @classmethod
    def unchosen(cls) -> HostFit:
        return cls(HugePagesChoice(True, "not chosen yet"),
                   TcgThreadsChoice("multi", "not chosen yet"))

    @property
    def thread_mode(self) -> str:
        """What ``-accel tcg,thread=`` gets (``multi`` where TCG is not used)."""
        return self.tcg_threads.mode or "multi"

    def notes(self) -> str:
        """The ``#`` lines for ``qemu-cmdline.txt`` (the TCG one only under TCG)."""
        lines = [self.tcg_threads.note()] if self.tcg_threads.mode else []
        return "".join(f"{line}\n" for line in [*lines, self.huge_pages.note()])


def choose_host_fit(accel: str, config: GuestConfig) -> HostFit:
    """The choices for a QEMU about to start ``accel`` for a guest shaped by ``config``."""
    return HostFit(qemu_huge_pages(accel),
                   qemu_tcg_threads(accel, config.cpus, cpu_unplug=config.cpu_unplug))


__all__ = ["HostFit", "choose_host_fit"]
