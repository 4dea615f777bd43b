"""Panic triggers, capture-kernel tracking, vmcore retrieval and outcome classification.

A panic ends in exactly one ``Outcome``, each reached within a deadline:

``captured``            the capture kernel saved a dump; files are on the host.
``kdump_did_not_occur`` the first kernel panicked but no capture kernel started: nothing
                        was loaded, or ``__crash_kexec()`` found the kexec lock held (a
                        hot-plug handler, a sysfs reader or a reload had it) and the panic
                        carried on to ``---[ end Kernel panic``.
``capture_failed``      the capture kernel started but produced no dump (out of memory with
                        a too small crashkernel, a panic in the capture kernel, a write error).
``no_panic``            the trigger did not take: the guest kept running.
``harness_error``       QEMU, QMP, SSH or the host failed; says nothing about the kernel.

The console is watched, never a shell: a panic trigger gets no reply.
"""

from __future__ import annotations

import enum
import json
import logging
import re
import tarfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from .errors import HarnessError, InfrastructureError, LostVMError, SshError, UsageError
from .guest import Guest, GuestState
from .guest.console import CRASH_SIGNATURES
from .guest.kdump_sizing import RAISE_CRASHKERNEL
from .model import Trigger, values
from .timeouts import wait_until

log = logging.getLogger(__name__)

TRIGGERS = values(Trigger)

# The console only ever shows complete lines (console.py); the HARNESS: lines are also
# anchored at their end, so that a kernel message printed into the middle of one (printk
# does not wait for userspace's line to end) makes it not match rather than match wrongly.
_PANIC = re.compile(r"Kernel panic - not syncing: ?([^\n]*)")
_END_PANIC = re.compile(r"---\[ end Kernel panic")
_CAPTURE_BANNER = re.compile(r"Linux version \S+")
_CAPTURE_START = re.compile(
    r"HARNESS: capture-start mode=(\w+) uptime=(\d+\.\d+)(?: (elfcorehdr=\S+))?\s*$", re.M)
_DUMP_WRITTEN = re.compile(
    r"HARNESS: dump-written rc=(\d+) mode=(\w+) uptime=(\d+\.\d+)\s*$", re.M)
_CAPTURE_DONE = re.compile(r"HARNESS: capture-done rc=(\d+) uptime=(\d+\.\d+)\s*$", re.M)
_CAPTURE_FAILED = re.compile(r"HARNESS: capture-failed reason=(\S+)\s*$", re.M)
_CMDLINE_ELFCOREHDR = re.compile(r"(?:^|\s)(elfcorehdr=\S+)")
_OOM = re.compile(r"Out of memory|oom-kill|invoked oom-killer|Initramfs unpacking failed|"
                  r"System is deadlocked on memory|Unable to allocate|cannot allocate memory",
                  re.IGNORECASE)


class Outcome(enum.Enum):
    CAPTURED = "captured"
    KDUMP_DID_NOT_OCCUR = "kdump_did_not_occur"
    CAPTURE_FAILED = "capture_failed"
    NO_PANIC = "no_panic"
    HARNESS_ERROR = "harness_error"


@dataclass
class CaptureTimes:
    """Seconds, measured on the host from the trigger."""

    panic: float | None = None                 # trigger to "Kernel panic" on the console
    capture_userspace: float | None = None     # panic to capture-kernel userspace
    dump_written: float | None = None          # capture userspace to dump written
    collected: float | None = None             # dump written to files on the host
    total: float | None = None


@dataclass
class CaptureResult:
    outcome: Outcome
    reason: str
    trigger: str
    mode: str
    panic_message: str | None = None
    times: CaptureTimes = field(default_factory=CaptureTimes)
    panic_window: tuple[float, float] | None = None     # host wall clock around the panic
    files: dict[str, str] = field(default_factory=dict)
    console_tail: str = ""
    capture_status: dict[str, str] = field(default_factory=dict)
    elfcorehdr_addr: int | None = None
    #: Why the first kernel's raw elfcorehdr could not be read (a harness problem: the run
    #: is then a harness error, never a verdict; the evidence stays in the run directory).
    raw_header_problem: str | None = None
    #: Set when the trigger's SSH channel broke as it was sent (see ``fire``).
    trigger_note: str | None = None
    during_reload: bool = False

    @property
    def captured(self) -> bool:
        return self.outcome is Outcome.CAPTURED

    def to_json_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["outcome"] = self.outcome.value
        return d


# -- triggers ---------------------------------------------------------------------------
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


# -- the whole panic -> capture -> collect sequence -------------------------------------
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
        _split_console(guest, start_mark, out)
        result.console_tail = _console_tail(guest.console.text(start_mark))
        result.times.total = time.monotonic() - t0
        (out / "capture.json").write_text(json.dumps(result.to_json_dict(), indent=2) + "\n")
        missing = out / "vmcore.missing"
        if not result.captured and not missing.exists():
            missing.write_text(f"{result.outcome.value}: {result.reason}\n")
    return result


def _first(guest: Guest, patterns: dict[str, re.Pattern[str]], start: int,
           deadline: float) -> tuple[str, re.Match[str]] | tuple[None, None]:
    """Wait until one of ``patterns`` appears after ``start`` (earliest match wins)."""

    def earliest() -> tuple[str, re.Match[str]] | None:
        text = guest.console.text(start)
        hits = [(m.start(), name, m) for name, rx in patterns.items() if (m := rx.search(text))]
        if not hits:
            return None
        _, name, m = min(hits, key=lambda h: h[0])
        return name, m

    while True:
        hit = earliest()
        if hit:
            return hit
        if time.monotonic() > deadline:
            return None, None
        if not guest.alive() or guest.console.eof:
            # Let the drain thread deliver the last bytes before concluding (a busy host
            # may take a while to schedule it).
            guest.console.wait_eof(guest.timeouts.shutdown)
            crashed = guest.crashed()
            if crashed:
                # QEMU's own failure (e.g. 7.2's heap corruption after overlapping DIMM
                # and vCPU unplugs) says nothing about the kernel: never a capture verdict.
                raise LostVMError(crashed)
            hit = earliest()
            if hit:
                return hit
            empty = re.match("", "")
            assert empty is not None  # an empty pattern always matches
            return "exited", empty
        time.sleep(0.02)


def _follow(guest: Guest, result: CaptureResult, start: int, t0: float, wall0: float,
            out: Path, read_raw_header: bool) -> None:
    t = guest.timeouts
    # A panic in NMI context defers its console output (printk from NMI only fills the
    # ring buffer), so the first sign of an NMI panic may be the capture kernel's banner.
    name, m = _first(guest, {"panic": _PANIC, "end": _END_PANIC, "banner": _CAPTURE_BANNER,
                             "capture": _CAPTURE_START}, start, time.monotonic() + t.panic)
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
    result.panic_window = (wall0 - 1.0, time.time() + 1.0)
    panic_time = t0 + (result.times.panic or 0.0)

    name, m = _first(guest, {"end": _END_PANIC, "banner": _CAPTURE_BANNER,
                             "capture": _CAPTURE_START}, after_panic,
                     time.monotonic() + t.capture_boot)
    if name in ("end", "exited", None):
        result.outcome = Outcome.KDUMP_DID_NOT_OCCUR
        loaded = guest.readiness.get("kexec_crash_loaded")
        why = {"end": "the panic ran to '---[ end Kernel panic' without starting the "
                      "capture kernel",
               "exited": "QEMU exited after the panic with no capture kernel output",
               None: f"no capture kernel output within {t.capture_boot:.0f} s of the panic"}[name]
        if result.during_reload:
            hint = (" (a kdump reload was in flight: the kexec lock was held, or the old "
                    "image already unloaded)")
        elif loaded != "1":
            hint = " (nothing was loaded)"
        else:
            hint = " (a capture kernel was loaded: the kexec lock was probably held at the panic)"
        result.reason = why + hint
        return

    name, m = _first(guest, {"capture": _CAPTURE_START}, after_panic,
                     time.monotonic() + t.capture_boot)
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
                             "panic": _PANIC}, capture_at,
                     time.monotonic() + guest.timeouts.dump_write)
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
    have_metadata = _collect_metadata(guest, out, result)
    if read_raw_header:
        _save_raw_header(guest, out, result, console_hdr)
    guest.shutdown()   # QMP quit: QEMU closes the dump disk cleanly before we read it
    if have_metadata:
        _collect_dump(guest, out, result)
    result.times.collected = time.monotonic() - done_at
    if result.panic_message is None and "vmcore_dmesg" in result.files:
        # NMI panics print nothing on the console before kdump: take it from the dump.
        found = _PANIC.search(Path(result.files["vmcore_dmesg"]).read_text(errors="replace"))
        result.panic_message = found.group(1).strip() if found else None
    rc = int(m.group(1))
    if rc != 0 or "vmcore" not in result.files:
        _capture_failed(guest, result, after_panic,
                        f"the dump writer exited with status {rc}" if rc else "no dump was found")
        return
    result.outcome = Outcome.CAPTURED
    result.reason = f"vmcore captured ({result.mode})"


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


def _parse_elfcorehdr_arg(arg: str) -> int | None:
    """``elfcorehdr=0x7f000000`` (kexec_file) or ``elfcorehdr=2080768K`` (kexec-tools)."""
    value = arg.split("=", 1)[1]
    if "@" in value:             # elfcorehdr=size@addr form
        value = value.split("@", 1)[1]
    try:
        if value[-1:] in "kK":
            return int(value[:-1], 0) * 1024
        if value[-1:] in "mM":
            return int(value[:-1], 0) << 20
        return int(value, 0)
    except ValueError:
        return None


#: How much guest memory to read at the elfcorehdr: enough for thousands of ranges.
RAW_HEADER_READ = 1 << 20


def _save_raw_header(guest: Guest, out: Path, result: CaptureResult,
                     console_hdr: str | None) -> None:
    """Read the first kernel's elfcorehdr from guest memory while the capture kernel runs.

    Its address comes from the capture kernel's own /proc/cmdline (collected in the
    metadata), not from the console: a console line can arrive torn or interleaved with
    kernel output.  What cannot be read is a harness problem (``raw_header_problem``),
    never a verdict about the dump.
    """
    path = out / "elfcorehdr.raw"
    cmdline = Path(result.files["capture_cmdline"]) if "capture_cmdline" in result.files else None
    found = _CMDLINE_ELFCOREHDR.search(cmdline.read_text(errors="replace")) if cmdline else None
    addr = _parse_elfcorehdr_arg(found.group(1)) if found else None
    if addr is None:
        where = ("capture/capture-cmdline.txt names no usable elfcorehdr=" if cmdline
                 else "the capture metadata holds no capture-cmdline.txt")
        result.raw_header_problem = f"the raw elfcorehdr was not read: {where}"
    else:
        result.elfcorehdr_addr = addr
        console_addr = _parse_elfcorehdr_arg(console_hdr) if console_hdr else None
        if console_addr is not None and console_addr != addr:
            log.warning("the console's capture-start line says %s but the capture kernel's "
                        "/proc/cmdline says %s: reading at the latter", console_hdr,
                        found.group(1) if found else "?")
        try:
            guest.qmp.execute("pmemsave", {"val": addr, "size": RAW_HEADER_READ,
                                           "filename": str(path)})
            result.files["raw_elfcorehdr"] = str(path)
        except HarnessError as exc:
            result.raw_header_problem = f"pmemsave of the raw elfcorehdr at {addr:#x} failed: {exc}"
    if result.raw_header_problem:
        (out / "elfcorehdr.raw.missing").write_text(result.raw_header_problem + "\n")


def _collect_metadata(guest: Guest, out: Path, result: CaptureResult) -> bool:
    """Unpack the capture's metadata tar (status, logs, its command line) into capture/;
    False (and vmcore.missing saying why) when there is no readable tar."""
    capture_dir = out / "capture"
    capture_dir.mkdir(exist_ok=True)
    try:
        with tarfile.open(guest.meta_disk, "r:") as tar:
            tar.extractall(capture_dir, filter="data")
    except (tarfile.TarError, OSError) as exc:
        (out / "vmcore.missing").write_text(f"the metadata disk holds no readable tar: {exc}\n")
        return False
    status_file = capture_dir / "status.txt"
    if status_file.exists():
        result.capture_status = dict(
            line.split("=", 1) for line in status_file.read_text().splitlines() if "=" in line)
    for name in ("vmcore-dmesg.txt", "capture-cmdline.txt", "capture-dmesg.txt"):
        if (capture_dir / name).exists():
            result.files[name.removesuffix(".txt").replace("-", "_")] = str(capture_dir / name)
    return True


def _collect_dump(guest: Guest, out: Path, result: CaptureResult) -> None:
    """Extract the dump from the dump disk (headers mode: from the metadata)."""
    capture_dir = out / "capture"
    mode = result.mode
    if mode == "headers":
        src = capture_dir / "vmcore.headers"
        if src.exists() and src.stat().st_size > 0:
            target = out / "vmcore.headers"
            src.replace(target)
            result.files["vmcore"] = str(target)
    else:
        target = out / ("vmcore.elf" if mode == "elf" else
                        "vmcore.kdump" if mode == "compressed" else "vmcore")
        extract_dump(guest.dump_disk, target, mode,
                     int(result.capture_status.get("vmcore_size", "0") or 0))
        if target.exists() and target.stat().st_size > 0:
            result.files["vmcore"] = str(target)
    if "vmcore" not in result.files:
        (out / "vmcore.missing").write_text(
            f"the capture ran (status {result.capture_status}) but left no dump\n")


def extract_dump(disk: Path, target: Path, mode: str, full_size: int) -> None:
    """Turn the dump disk's contents into a regular dump file."""
    if mode == "full":
        with open(disk, "rb") as src, open(target, "wb") as dst:
            left = full_size
            while left > 0:
                chunk = src.read(min(left, 8 << 20))
                if not chunk:
                    break
                dst.write(chunk)
                left -= len(chunk)
        return
    # elf / compressed: makedumpfile wrote its flattened (-F) stream; rebuild it.
    from .vmcore.flattened import rebuild_flattened

    with open(disk, "rb") as src, open(target, "wb") as dst:
        rebuild_flattened(src, dst)


def _split_console(guest: Guest, start: int, out: Path) -> None:
    """Write the first and the capture kernel's consoles to separate files."""
    text = guest.console.text()
    m = _CAPTURE_BANNER.search(text, start)
    cut = m.start() if m else len(text)
    # Back up to the start of the line the banner is on.
    cut = text.rfind("\n", 0, cut) + 1 if m else cut
    (out / "console-first-kernel.log").write_text(text[:cut])
    (out / "console-capture-kernel.log").write_text(
        text[cut:] if m else "(the capture kernel printed nothing)\n")


def _console_tail(text: str, head: int = 8, tail: int = 25) -> str:
    """The panic's first lines and the console's last ones: the cause and the end."""
    lines = text.splitlines()
    m = next((i for i, line in enumerate(lines) if _PANIC.search(line)), None)
    if m is None or len(lines) - m <= head + tail:
        return "\n".join(lines[-(head + tail):])
    return "\n".join(lines[m:m + head] + ["[...]"] + lines[-tail:])
