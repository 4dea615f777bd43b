"""Transparent huge pages for the QEMU process: off under TCG unless asked for.

QEMU advises huge pages (``MADV_HUGEPAGE``) for guest RAM and for TCG's translated-code
buffer, so the first touch of any 2 MiB region makes the host allocate and zero a whole
huge page.  On a host that is itself a VM handing its free memory back to the hypervisor
(free page reporting: virtio-balloon on the 2-core machine this was measured on, 2026-12),
freshly allocated huge pages are the slow ones:

* faulting 256 MiB in with huge pages took 2.4-2.9 s, with 4 KiB pages 0.18-0.30 s;
* one restored ``run`` made 43 huge-page faults, and ``clear_page_erms`` was 10 % of
  QEMU's CPU time in ``perf``.  With huge pages off, QEMU used 6.6-7.0 instead of
  7.3-8.0 CPU-s per cycle, and the in-guest ``kexec_file_load`` took 1.35 instead of
  2.3 s (alternating A/B, 4 and 2 x 3 runs).

Under TCG every guest access goes through QEMU's own software TLB, so host huge pages buy
TCG little; under KVM they back the guest's page tables with 2 MiB mappings, which is
worth keeping.  ``huge_pages`` (``KDUMP_HARNESS_HUGE_PAGES``) overrides the choice.
"""

from __future__ import annotations

import ctypes
from collections.abc import Callable
from dataclasses import dataclass

from ..settings import HugePages, current
from .process import die_with_parent

#: ``prctl(PR_SET_THP_DISABLE, 1)`` (Linux 3.15): no huge pages for this process, also after
#: ``execve``; ``MADV_HUGEPAGE`` regions included.
PR_SET_THP_DISABLE = 41


@dataclass(frozen=True)
class HugePagesChoice:
    """Whether QEMU may use transparent huge pages, and why."""

    enabled: bool
    reason: str

    def note(self) -> str:
        """One line for the evidence (``qemu-cmdline.txt``): re-running the command line by
        hand does not reproduce a ``prctl``."""
        state = "on" if self.enabled else "off (prctl PR_SET_THP_DISABLE)"
        return f"# transparent huge pages {state}: {self.reason}"


def choose_huge_pages(setting: HugePages, accel: str) -> HugePagesChoice:
    """``auto``: off under TCG, on (the host's own THP policy) under KVM."""
    if setting is HugePages.ON:
        return HugePagesChoice(True, "huge_pages=on")
    if setting is HugePages.OFF:
        return HugePagesChoice(False, "huge_pages=off")
    if accel == "tcg":
        return HugePagesChoice(False, "TCG (huge_pages=auto): a fresh huge page is slow to "
                                      "fault on a host that reports free memory")
    return HugePagesChoice(True, f"{accel} (huge_pages=auto)")


def qemu_huge_pages(accel: str) -> HugePagesChoice:
    """The choice for a QEMU about to run ``accel``, from the process's settings."""
    return choose_huge_pages(current().huge_pages, accel)


def disable_huge_pages() -> None:
    """``preexec_fn`` part: this process and what it executes get no huge pages.  A kernel
    that refuses (older than 3.15) only leaves QEMU as fast as before."""
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_THP_DISABLE, 1, 0, 0, 0)


def qemu_preexec(choice: HugePagesChoice) -> Callable[[], None]:
    """The ``preexec_fn`` for QEMU: die with the runner, huge pages as chosen."""
    def preexec() -> None:
        if not choice.enabled:
            disable_huge_pages()
        die_with_parent()
    return preexec


__all__ = ["PR_SET_THP_DISABLE", "HugePagesChoice", "choose_huge_pages", "disable_huge_pages",
           "qemu_huge_pages", "qemu_preexec"]
