"""Panic and capture: trigger the panic, follow the capture kernel, collect its dump.

    trigger   check_trigger (before anything starts), fire, a reload in flight
    capture   panic_and_capture: the console followed stage by stage within deadlines
    collect   the metadata, the dump, the raw elfcorehdr (at the address the capture
              kernel's own /proc/cmdline names), both kernels' consoles
    outcome   Outcome, CaptureResult, CaptureTimes
"""

from __future__ import annotations

from .capture import panic_and_capture
from .collect import RAW_HEADER_READ, extract_dump
from .outcome import CaptureResult, CaptureTimes, Outcome
from .trigger import TRIGGERS, check_trigger, fire, start_reload_in_flight, trigger_command

__all__ = ["RAW_HEADER_READ", "TRIGGERS", "CaptureResult", "CaptureTimes", "Outcome",
           "check_trigger", "extract_dump", "fire", "panic_and_capture",
           "start_reload_in_flight", "trigger_command"]
