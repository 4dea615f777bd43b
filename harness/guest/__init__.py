"""One QEMU guest: its configuration, its process, and the channels into it.

In the order a guest comes up::

    config       GuestConfig (validated when built), GuestState, Readiness, PhaseTimes
    accel        KVM probed by a short boot, else TCG
    qemu_args    pure builders of QEMU's and the kernel's command lines
    process      QEMU in its own process group, with a parent-death signal
    qmp          a synchronous facade over qemu.qmp, its transcript (qmp.jsonl)
    console      the serial console: complete lines only, crash signatures
    ssh          paramiko sessions into the guest
    machine      Guest: launch, boot, readiness, health, teardown (a context manager)
    snapshot     snapshots of kdump-ready guests: key, cache, build (RAM file), prune
    presession   a snapshot's SSH session, connected before the save, replayed after
    restore      a Guest started from its snapshot: clock offset, readiness checked again
    health       what the console says about a running guest (panic, OOM, refused memory)
    kdump_sizing why a kdump load failed, and what the reservation would need
    cma          what a kexec load takes from CMA and gives back (6.17+; seed003)
    kexec_tool   a kexec_file_load(2) tool with any flags (KEXEC_FILE_NO_CMA), built on the host
"""

from __future__ import annotations

from .config import (
    CAPTURE_MODES,
    KEXEC_MODES,
    GuestConfig,
    GuestState,
    ImageLike,
    PhaseTimes,
    Readiness,
)
from .machine import Guest
from .ssh import CommandResult

__all__ = ["CAPTURE_MODES", "KEXEC_MODES", "CommandResult", "Guest", "GuestConfig",
           "GuestState", "ImageLike", "PhaseTimes", "Readiness"]
