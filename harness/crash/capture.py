"""The panic -> capture -> collect sequence, followed on the console within deadlines.

The console is watched, never a shell: a panic trigger gets no reply.  Each stage waits
for the earliest of the lines that can end it (``_first``); QEMU's own death on the way is
a harness error, never a capture outcome.
"""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

from ..errors import InfrastructureError, LostVMError
from ..guest import Guest, GuestState
from ..guest.health import how_it_ended
from ..guest.kdump_sizing import RAISE_CRASHKERNEL
from ..signatures import CRASH_SIGNATURES, END_PANIC, PANIC, PRINTK_TIME
from ..timeouts import Deadline, poll
from .collect import (
    CAPTURE_BANNER,
    collect_dump,
    collect_metadata,
    console_tail,
    save_raw_header,
    split_console,
)
from .lock_evidence import LockEvidence, LockHolder, kexec_lock_at_panic
from .outcome import CaptureResult, Outcome
from .trigger import fire, start_reload_in_flight

# The console only ever shows complete lines (guest/console.py); the HARNESS: lines are
# also anchored at their end, so that a kernel message printed into the middle of one
# (printk does not wait for userspace's line to end) makes it not match rather than match
# wrongly.


_CAPTURE_START = re.compile(
    r"HARNESS: capture-start mode=(\w+) uptime=(\d+\.\d+)(?: (elfcorehdr=\S+))?\s*$", re.M)
_DUMP_WRITTEN = re.compile(
    r"HARNESS: dump-written rc=(\d+) mode=(\w+) uptime=(\d+\.\d+)\s*$", re.M)
_CAPTURE_DONE = re.compile(r"HARNESS: capture-done rc=(\d+) uptime=(\d+\.\d+)\s*$", re.M)
_CAPTURE_FAILED = re.compile(r"HARNESS: capture-failed reason=(\S+)\s*$", re.M)
_OOM = re.compile(r"Out of memory|oom-kill|invoked oom-killer|Initramfs unpacking failed|"
                  r"System is deadlocked on memory|Unable to allocate|cannot allocate memory",
                  re.IGNORECASE)


def panic_and_capture(guest: Guest, *, trigger: str = "sysrq", cpus: tuple[int, ...] = (),
                      out: Path | None = None, read_raw_header: bool = True,
                      during_reload: bool = False) -> CaptureResult:
    """Panic ``guest``, follow the capture kernel, collect the dump into ``out``.

    ``during_reload`` first starts a kdump reload and fires once it is in flight (the old
    image unloaded, the new one being loaded under the kexec lock).  Never raises for
    kernel behaviour: the outcome says what happened.  The guest is stopped afterwards in
    every case.
    """
    out = out or guest.workdir
    mode = guest.config.capture_mode
    result = CaptureResult(Outcome.HARNESS_ERROR, "not started", trigger, mode,
                           during_reload=during_reload)
    start_mark = guest.console.mark()
    wall0 = time.time()
    t0 = time.monotonic()
    try:
        if during_reload:
            start_reload_in_flight(guest)
        result.trigger_note = fire(guest, trigger, cpus)
        # From here on commands over SSH are refused: the guest is (about to be) gone.
        guest.state = GuestState.PANICKED
        _follow(guest, result, start_mark, t0, wall0, out, read_raw_header)
    except InfrastructureError as exc:
        result.outcome = Outcome.HARNESS_ERROR
        result.reason = str(exc).splitlines()[0]
    finally:
        guest.shutdown()
        split_console(guest, start_mark, out)
        result.console_tail = console_tail(guest.console.text(start_mark))
        result.times.total = time.monotonic() - t0
        (out / "capture.json").write_text(json.dumps(result.to_json_dict(), indent=2) + "\n")
        missing = out / "vmcore.missing"
        if not result.captured and not missing.exists():
            missing.write_text(f"{result.outcome.value}: {result.reason}\n")
    return result


#: What ``_first`` returns when QEMU exited without any of the patterns.
_EXITED = re.compile("").match("")


def _first(guest: Guest, patterns: dict[str, re.Pattern[str]], start: int,
           seconds: float) -> tuple[str, re.Match[str]] | tuple[None, None]:
    """Wait up to ``seconds`` until one of ``patterns`` appears after ``start`` (the
    earliest match wins); ``("exited", ...)`` when QEMU exited first."""

    def earliest() -> tuple[str, re.Match[str]] | None:
        text = guest.console.text(start)
        hits = [(m.start(), name, m) for name, rx in patterns.items() if (m := rx.search(text))]
        if not hits:
            return None
        _, name, m = min(hits, key=lambda h: h[0])
        return name, m

    def step() -> tuple[str, re.Match[str]] | None:
        hit = earliest()
        if hit or (guest.alive() and not guest.console.eof):
            return hit
        # Let the drain thread deliver the last bytes before concluding (a busy host may
        # take a while to schedule it).
        guest.console.wait_eof(guest.timeouts.shutdown)
        crashed = guest.crashed()
        if crashed:
            # QEMU's own failure (e.g. 7.2's heap corruption after overlapping DIMM and
            # vCPU unplugs) says nothing about the kernel: never a capture verdict.
            raise LostVMError(crashed)
        assert _EXITED is not None  # an empty pattern always matches
        return earliest() or ("exited", _EXITED)

    found = poll(step, deadline=Deadline(seconds, " or ".join(patterns)), interval=0.02)
    return found if found is not None else (None, None)


def _follow(guest: Guest, result: CaptureResult, start: int, t0: float, wall0: float,
            out: Path, read_raw_header: bool) -> None:
    t = guest.timeouts
    # A panic in NMI context defers its console output (printk from NMI only fills the
    # ring buffer), so the first sign of an NMI panic may be the capture kernel's banner.
    name, m = _first(guest, {"panic": PANIC, "end": END_PANIC, "banner": CAPTURE_BANNER,
                             "capture": _CAPTURE_START}, start, t.panic)
    if name is None or m is None or (name == "exited" and not guest.console.text(start).strip()):
        if result.trigger_note:
            raise LostVMError(f"no panic followed the {result.trigger} trigger, whose SSH "
                              f"channel broke as it was sent: {result.trigger_note}")
        result.outcome = Outcome.NO_PANIC
        result.reason = (f"no panic on the console within {t.panic:.0f} s of the "
                         f"{result.trigger} trigger"
                         + (" (QEMU exited)" if name == "exited" else ""))
        return
    panic_at = start + m.start()
    if name == "panic":
        result.panic_message = m.group(1).strip()
        result.times.panic = guest.console.arrival_time(panic_at) - t0
        after_panic = panic_at + len(m.group(0))
    else:
        # No panic line seen: the panic happened between the trigger and this output.
        result.times.panic = None
        after_panic = panic_at
    # In the guest's clock, which a restored guest has from its snapshot (restore.py).
    offset = guest.clock_offset
    result.panic_window = (wall0 - 1.0 - offset, time.time() + 1.0 - offset)
    panic_time = t0 + (result.times.panic or 0.0)

    name, m = _first(guest, {"end": END_PANIC, "banner": CAPTURE_BANNER,
                             "capture": _CAPTURE_START}, after_panic,
                     t.capture_boot)
    if name in ("end", "exited", None):
        _no_capture_kernel(guest, result, name, after_panic)
        return

    name, m = _first(guest, {"capture": _CAPTURE_START}, after_panic,
                     t.capture_boot)
    if name != "capture" or m is None:
        _capture_failed(guest, result, after_panic, "the capture kernel started but its "
                        "userspace never reported in")
        return
    capture_at = after_panic + m.start()
    result.times.capture_userspace = guest.console.arrival_time(capture_at) - panic_time
    _await_dump(guest, result, after_panic, capture_at, m.group(3), out, read_raw_header)


def _await_dump(guest: Guest, result: CaptureResult, after_panic: int, capture_at: int,
                console_hdr: str | None, out: Path, read_raw_header: bool) -> None:
    """From the capture kernel's userspace to the dump on the host (or why not)."""
    name, m = _first(guest, {"done": _CAPTURE_DONE, "failed": _CAPTURE_FAILED,
                             "panic": PANIC}, capture_at,
                     guest.timeouts.dump_write)
    if name != "done" or m is None:
        what = {"failed": "the capture script gave up", "panic": "the capture kernel panicked",
                "exited": "QEMU exited during the capture",
                None: f"the dump was not written within {guest.timeouts.dump_write:.0f} s"}[name]
        _capture_failed(guest, result, after_panic, what)
        return
    text = guest.console.text(capture_at)
    written, started = _DUMP_WRITTEN.search(text), _CAPTURE_START.search(text)
    done_at = guest.console.arrival_time(capture_at + m.start())
    if written and started:
        result.times.dump_written = float(written.group(3)) - float(started.group(2))
    # The capture script synced its metadata before saying capture-done: read it now, while
    # the capture kernel still runs and the first kernel's elfcorehdr is still in memory.
    have_metadata = collect_metadata(guest, out, result)
    if read_raw_header:
        save_raw_header(guest, out, result, console_hdr)
    guest.shutdown()   # QMP quit: QEMU closes the dump disk cleanly before we read it
    if have_metadata:
        collect_dump(guest, out, result)
    result.times.collected = time.monotonic() - done_at
    if result.panic_message is None and "vmcore_dmesg" in result.files:
        # NMI panics print nothing on the console before kdump: take it from the dump.
        found = PANIC.search(Path(result.files["vmcore_dmesg"]).read_text(errors="replace"))
        result.panic_message = found.group(1).strip() if found else None
    rc = int(m.group(1))
    if rc != 0 or "vmcore" not in result.files:
        _capture_failed(guest, result, after_panic,
                        f"the dump writer exited with status {rc}" if rc else "no dump was found")
        return
    result.outcome = Outcome.CAPTURED
    result.reason = f"vmcore captured ({result.mode})"
    if "vmcore_dmesg" in result.files:
        result.lock_at_panic = kexec_lock_at_panic(
            Path(result.files["vmcore_dmesg"]).read_text(errors="replace"),
            source="vmcore-dmesg")


def _no_capture_kernel(guest: Guest, result: CaptureResult, name: str | None,
                       after_panic: int) -> None:
    """No capture kernel after the panic: say how the panic ended (``name``: ``end``,
    ``exited`` or ``None`` for the deadline) and what the kernel's log says of the lock."""
    result.outcome = Outcome.KDUMP_DID_NOT_OCCUR
    loaded = guest.readiness.get("kexec_crash_loaded")
    if name == "exited":
        # How the machine ended: a guest-reset with nothing after the panic was, under
        # TCG, a vCPU never brought up that the crash's NMI started (GuestKernelOptions).
        ended, _ = how_it_ended(guest.qmp.shutdown, guest.workdir / "qemu-debug.log")
        why = f"QEMU exited after the panic with no capture kernel output ({ended})"
    elif name == "end":
        why = "the panic ran to '---[ end Kernel panic' without starting the capture kernel"
    else:
        why = (f"no capture kernel output within {guest.timeouts.capture_boot:.0f} s of "
               "the panic")
    # The replay (panic_print=0x20) of a panic that did not kexec holds the log.
    text = guest.console.text(after_panic)
    lock = kexec_lock_at_panic(text, source="console replay")
    result.lock_at_panic = lock
    if (guest.config.crash_debug and not _replayed(text) and loaded == "1"
            and lock.holder is LockHolder.UNKNOWN and not result.during_reload):
        # A panic that gives up on kdump replays its log (panic_print, qemu_args): without
        # a replay the kernel went on to kexec, and the machine ended on the way.
        result.reason = why + (" (a capture kernel was loaded and no log replay followed "
                               "the panic: the kernel went on to kexec)")
        return
    result.reason = why + _no_dump_cause(lock, result.during_reload, loaded)


def _replayed(text: str) -> bool:
    """Whether the console after a panic replays the kernel's log: a record older than
    the first one after the panic (the replay starts from the oldest record kept, so this
    holds even when the log buffer has wrapped)."""
    times = [float(t) for t in PRINTK_TIME.findall(text)]
    return any(t < times[0] for t in times[1:])


def _no_dump_cause(lock: LockEvidence, during_reload: bool, loaded: str | None) -> str:
    """Why no capture kernel started, from the kernel's own evidence: the lock holder its
    log names, else what ``/sys/kernel/kexec_crash_loaded`` said."""
    if lock.held:
        return (" (" + ("a kdump reload was in flight: " if during_reload else "")
                + lock.describe() + ")")
    if during_reload:
        return (" (a kdump reload was in flight: kexec_crash_loaded read 0 before the "
                f"trigger, so no image was loaded; {lock.describe()})")
    if loaded != "1":
        return " (nothing was loaded: kexec_crash_loaded read 0 at boot)"
    return f" (a capture kernel was loaded; {lock.describe()})"


def _capture_failed(guest: Guest, result: CaptureResult, since: int, what: str) -> None:
    result.outcome = Outcome.CAPTURE_FAILED
    text = guest.console.text(since)
    evidence = [line for line in text.splitlines() if _OOM.search(line)]
    if evidence:
        what += (f"; out of memory in the capture kernel: {evidence[0].strip()}; "
                 f"{RAISE_CRASHKERNEL}")
    elif CRASH_SIGNATURES["panic"].search(text):
        what += "; " + next(line.strip() for line in text.splitlines()
                            if CRASH_SIGNATURES["panic"].search(line))
    result.reason = what
