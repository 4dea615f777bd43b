"""The contention injector: what makes ``crash hp: kexec_trylock() failed`` happen.

Three kinds, each started at a chosen offset from a swarm's first event:

``reload``   kdump reloads (``/harness/kdump-load MODE``: unload, then load) back to back,
             pinned to one guest CPU, by default the CPU that services the ACPI interrupt
             (IRQ 9).  ``kexec_file_load`` holds the kexec lock for most of its ~1.5 s, so
             every hot-plug event in that window fails its trylock.  KNOWLEDGE.md: one
             reload pinned to the ACPI-IRQ CPU ~0.3 s before a 16-DIMM burst made all 32
             block events fail, 4 runs out of 4; pinned elsewhere it only delayed onlining.
             A fixed head start is at the mercy of the host's load (how long kexec takes
             to read its files before the syscall): CI saw 0 failures in 2 of 3 suite
             runs.  So by default (``sync=lock``) the swarm waits for the guest to say the
             load holds the lock *and has built its crash header*: ``kexec -s -d`` (6.8+)
             logs ``Loaded ELF headers at ...`` from inside ``kexec_file_load`` right after
             ``prepare_elf_headers()``; a watcher on /dev/kmsg reports that line, and
             ``offset`` then counts from it.  (Syncing on the earlier ``kexec_file:
             kernel:`` line let a burst land while the load was still reading its files:
             every event failed its trylock, and the header built afterwards had all the
             DIMMs anyway: accurate, 1 suite run of 3 here.)  What remains of the window
             is the digest and the copy of the segments, which the capture initrd's
             padding (``pad``, 32 MiB) makes as long as a distro-sized initrd's: ~2 s.
             ``sync=none`` keeps the plain head start (the only way on older kernels or
             with ``kexec_load``, which logs nothing).
             Even inside the window, Debian's kernels (voluntary preemption) stall the
             hot-plug path: onlining memory waits for an RCU grace period
             (percpu_down_write on mem_hotplug_lock), which kexec_file_load's digest loop,
             ~0.9 s without a scheduling point, holds up until the syscall is nearly
             done: measured, 4 of 8 synced runs then saw no failure at all.  Booted with
             ``preempt=full`` the loop is preemptible and 10 of 10 failed all 32 block
             events; ``boot_args_for()`` adds it, and a reload on a guest without it
             says so.
``udev``     a udev-like handler for every memory/CPU uevent: it reads ``crash_hotplug``
             and reloads kdump unless it reads 1 (the distro rule: ``ATTRS{crash_hotplug}
             =="1"`` skips the reload).  One failure cascades into reloads; on 6.1, which
             has no ``crash_hotplug``, every event reloads, as a distro does.
``readers``  concurrent ``crash_hotplug`` sysfs readers in tight loops.  Alone they do not
             reproduce the failure (they queue on the crash hot-plug mutex before trying
             the kexec lock) but they delay handlers and hold the lock at random moments.

Specs are written ``KIND[:key=value,...]`` on the command line, e.g.
``reload:cpu=1,offset=-0.3,count=1`` or ``readers:count=8``.
"""

from __future__ import annotations

from .injector import ContentionInjector
from .runs import ContentionRun, parse_reload_log, parse_udev_log
from .scripts import install_command, irq_cpu, start_command
from .spec import (
    ACPI_IRQ,
    DEFAULT_RELOAD_PAD_MIB,
    DIR,
    KINDS,
    LOCKED_MARK,
    PREEMPT_FULL,
    RELOADING,
    ContentionSpec,
    Sync,
    boot_args_for,
    parse_contention,
)

__all__ = ["ACPI_IRQ", "DEFAULT_RELOAD_PAD_MIB", "DIR", "KINDS", "LOCKED_MARK", "PREEMPT_FULL",
           "RELOADING", "ContentionInjector", "ContentionRun", "ContentionSpec", "Sync",
           "boot_args_for", "install_command", "irq_cpu", "parse_contention",
           "parse_reload_log", "parse_udev_log", "start_command"]
