"""Panic and capture: trigger the panic, follow the capture kernel, collect its dump.

    trigger   check_trigger (before anything starts), fire, a reload in flight
    capture   panic_and_capture: the console followed stage by stage within deadlines
    collect   the metadata, the dump, the raw elfcorehdr (at the address the capture
              kernel's own /proc/cmdline names), both kernels' consoles
    outcome   Outcome, CaptureResult, CaptureTimes
    lock_evidence  who held the kexec lock at the panic, from the kernel's own log
"""

from __future__ import annotations

from .capture import panic_and_capture
from .collect import RAW_HEADER_READ, extract_dump
from .lock_evidence import LockEvidence, LockHolder, kexec_lock_at_panic
from .outcome import CaptureResult, CaptureTimes, Outcome
from .trigger import TRIGGERS, check_trigger, fire, start_reload_in_flight, trigger_command

__all__ = ["RAW_HEADER_READ", "TRIGGERS", "CaptureResult", "CaptureTimes", "LockEvidence",
           "LockHolder", "Outcome", "check_trigger", "extract_dump", "fire",
           "kexec_lock_at_panic", "panic_and_capture", "start_reload_in_flight",
           "trigger_command"]
