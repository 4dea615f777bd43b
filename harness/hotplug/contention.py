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
             load holds the lock: ``kexec -s -d`` (6.8+) logs ``kexec_file: kernel: ...``
             from inside ``kexec_file_load``, ~1 s before it lets go; a watcher on
             /dev/kmsg reports that line, and ``offset`` then counts from it.
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

import re
import threading
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from enum import StrEnum
from typing import TYPE_CHECKING, Any

from ..errors import HarnessError, UsageError
from ..guest.console import LineBuffer
from ..model import ContentionKind, values

if TYPE_CHECKING:
    import paramiko

    from ..guest import Guest

KINDS = values(ContentionKind)
#: Sources that reload kdump, and so hold the kexec lock.
RELOADING = ("reload", "udev")
#: The boot option that makes kexec_file_load's long loop preemptible (see above).
PREEMPT_FULL = "preempt=full"

class Sync(StrEnum):
    """When a reload's swarm starts: once the guest reports the kexec lock held, or at a
    fixed offset from the reload's start."""

    LOCK = "lock"
    NONE = "none"


#: The reload's capture initrd is padded with this many MiB of zeros by default (the
#: kernel's initramfs unpacker skips zero padding).  Debian's and Fedora's kdump initrds
#: are 20-60 MiB; the harness's own is 10 MiB, and kexec_file_load holds the kexec lock
#: while it digests and copies the segments, so the padding gives the reload a distro's
#: lock window.  Measured here with two CPU hogs on the host: unpadded, a 16-DIMM burst
#: outlasted the window (14 of 32 block events failed, the rest repaired the header);
#: see the module docstring.
DEFAULT_RELOAD_PAD_MIB = 32
#: What the reload script prints once the kexec lock is seen held (see the module doc).
LOCKED_MARK = "HARNESS-LOCKED"
#: The interrupt line QEMU's q35 ACPI SCI uses (hot-plug GPEs arrive on it).
ACPI_IRQ = 9
DIR = "/run/harness/contention"


@dataclass(frozen=True)
class ContentionSpec:
    """One contention source.

    ``cpu``: guest CPU to pin to (``None``: the ACPI-IRQ CPU for ``reload``, unpinned for
    the others).  ``offset``: seconds from the swarm's first event, negative for before.
    ``count``: reloads back to back (``reload``) or concurrent readers (``readers``).
    ``sync``: ``lock`` (``reload`` only, its default): the reload starts at once and the
    swarm ``max(offset, 0)`` seconds after the guest reports that the first load holds
    the kexec lock; ``none``: the reload starts ``offset`` seconds from the swarm.
    """

    kind: ContentionKind
    cpu: int | None = None
    offset: float = -0.3
    count: int = 1
    #: None: ``lock`` for reload, ``none`` for the others.
    sync: Sync | None = None
    #: MiB of zeros after the reload's capture initrd (None: DEFAULT_RELOAD_PAD_MIB for
    #: reload, 0 for udev, whose reloads are a distro's own).
    pad: int | None = None

    def __post_init__(self) -> None:
        kind = _coerce(ContentionKind, self.kind, "contention kind")
        object.__setattr__(self, "kind", kind)
        reload = kind is ContentionKind.RELOAD
        sync = (Sync.LOCK if reload else Sync.NONE) if self.sync is None else self.sync
        object.__setattr__(self, "sync", _coerce(Sync, sync, f"contention {kind}: sync"))
        if self.pad is None:
            object.__setattr__(self, "pad", DEFAULT_RELOAD_PAD_MIB if reload else 0)
        if self.sync is Sync.LOCK and not reload:
            raise UsageError(f"contention {kind}: only reload can sync on the kexec lock")
        if self.count < 1:
            raise UsageError(f"contention {kind}: count must be at least 1")
        if self.cpu is not None and self.cpu < 0:
            raise UsageError(f"contention {kind}: cpu must be a guest CPU number")
        if (self.pad or 0) < 0 or (self.pad and not reload):
            raise UsageError(f"contention {kind}: pad (MiB) is for reload, and not negative")

    def label(self) -> str:
        cpu = "acpi-irq" if self.cpu is None and self.kind == "reload" else self.cpu
        when = (f"swarm {max(self.offset, 0.0):+.2f} s after the lock is held" if self.synced
                else f"offset={self.offset:+.2f} s")
        pad = f", pad={self.pad}M" if self.pad else ""
        return f"{self.kind}(cpu={cpu}, {when}, count={self.count}{pad})"

    @property
    def synced(self) -> bool:
        return self.sync is Sync.LOCK

    def to_json_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json_dict(cls, d: dict[str, Any]) -> ContentionSpec:
        pad = d.get("pad")
        return cls(kind=ContentionKind(d["kind"]), cpu=d.get("cpu"),
                   offset=float(d.get("offset", -0.3)), count=int(d.get("count", 1)),
                   sync=Sync(d["sync"]) if d.get("sync") else None,
                   pad=int(pad) if pad is not None else 0)


def _coerce(enum: type[Any], value: object, what: str) -> Any:
    try:
        return enum(value)
    except ValueError:
        raise UsageError(f"{what} must be one of {', '.join(values(enum))}, "
                         f"not {value!r}") from None


def boot_args_for(specs: Sequence[ContentionSpec], kernel_args: Sequence[str] = ()
                  ) -> tuple[str, ...]:
    """Kernel command line words a guest needs for ``specs`` (unless the user chose a
    preemption model in ``kernel_args`` already)."""
    if any(s.kind in RELOADING for s in specs) and not any(
            a.startswith("preempt=") for a in kernel_args):
        return (PREEMPT_FULL,)
    return ()


def parse_contention(text: str) -> ContentionSpec:
    """``reload``, ``reload:cpu=1,offset=-0.3,count=2,sync=none``, ``readers:count=8``."""
    kind, _, rest = text.partition(":")
    spec = ContentionSpec(_coerce(ContentionKind, kind.strip(), "contention kind"))
    for item in filter(None, (p.strip() for p in rest.split(","))):
        key, sep, value = item.partition("=")
        if not sep:
            raise UsageError(f"contention option {item!r} in {text!r}: use key=value")
        try:
            if key == "cpu":
                spec = replace(spec, cpu=None if value in ("irq", "acpi") else int(value))
            elif key == "offset":
                spec = replace(spec, offset=float(value))
            elif key == "count":
                spec = replace(spec, count=int(value))
            elif key == "sync":
                spec = replace(spec, sync=_coerce(Sync, value, f"contention {kind}: sync"))
            elif key == "pad":
                spec = replace(spec, pad=int(value.removesuffix("M")))
            else:
                raise UsageError(f"unknown contention option {key!r} in {text!r} "
                                 "(cpu, offset, count, sync, pad)")
        except ValueError:
            raise UsageError(f"contention option {item!r} in {text!r} is not a number") from None
    return spec


_CPU_HEADER = re.compile(r"^\s*(CPU\d+\s*)+$")


def irq_cpu(interrupts: str, irq: int = ACPI_IRQ, effective: str = "") -> int:
    """The CPU servicing ``irq``: its effective affinity if known, else the busiest column.

    ``interrupts`` is /proc/interrupts; ``effective`` is /proc/irq/N/effective_affinity_list.
    """
    if effective.strip():
        first = effective.strip().split(",")[0].split("-")[0]
        if first.isdigit():
            return int(first)
    lines = interrupts.splitlines()
    header = next((line for line in lines if _CPU_HEADER.match(line)), None)
    if header is None:
        raise HarnessError("cannot read /proc/interrupts: no CPU header line")
    cpus = [int(c[3:]) for c in header.split()]
    for line in lines:
        name, sep, rest = line.partition(":")
        if sep and name.strip() == str(irq):
            counts = [int(x) for x in rest.split()[:len(cpus)] if x.isdigit()]
            if counts:
                return cpus[max(range(len(counts)), key=lambda i: counts[i])]
    raise HarnessError(f"IRQ {irq} is not in /proc/interrupts: no ACPI SCI?")


# -- guest-side scripts (busybox ash) ------------------------------------------------------

_RELOAD_SCRIPT = f"""\
# reload COUNT MODE TAG SYNC PAD: COUNT kdump reloads back to back, each timed (guest
# uptime), with the capture initrd padded by PAD MiB of zeros (see DEFAULT_RELOAD_PAD_MIB).
# SYNC=lock: print {LOCKED_MARK} once the first load is inside kexec_file_load, where
# kexec -d makes 6.8+ log "kexec_file: kernel: ..." with the kexec lock held; the watcher
# reads /dev/kmsg from our own start line on, so older lines cannot fool it.
i=0
watcher=
initrd=/boot/capture.cpio
if [ "${{5:-0}}" -gt 0 ]; then
    initrd={DIR}/capture-padded-$3.cpio
    cat /boot/capture.cpio > "$initrd"
    dd if=/dev/zero bs=1M count="$5" >> "$initrd" 2>/dev/null
fi
while [ $i -lt "$1" ]; do
    i=$((i+1))
    if [ $i = 1 ] && [ "$4" = lock ]; then
        start="harness-contention: reload $3 starts $$"
        echo "$start" > /dev/kmsg
        # busybox awk cannot read /dev/kmsg itself (EINVAL: its reads are smaller than a
        # record), so cat feeds it; the cat's PID is kept to end it afterwards.  Both may
        # run on any CPU: on the reload's own CPU they would wait for kexec_file_load,
        # which does not yield, to finish.
        any=$(cat /sys/devices/system/cpu/online)
        ( taskset -c "$any" cat /dev/kmsg & echo $! > {DIR}/kmsg-$3.pid; wait ) |
            taskset -c "$any" awk -v start="$start" 'index($0, start) {{ seen = 1; next }}
                seen && /kexec_file: kernel:/ {{ print "{LOCKED_MARK}"; fflush(); exit }}' &
        watcher=$!
    fi
    s=$(cut -d' ' -f1 /proc/uptime)
    KDUMP_INITRD=$initrd /harness/kdump-load "$2" > {DIR}/reload-$3.$i.out 2>&1
    rc=$?
    [ -n "$watcher" ] && {{ kill $(cat {DIR}/kmsg-$3.pid) $watcher 2>/dev/null; watcher=; }}
    echo "reload $i start=$s end=$(cut -d' ' -f1 /proc/uptime) rc=$rc" >> {DIR}/reload-$3.log
done
"""

# Runs once per uevent (from busybox `uevent`), in parallel, as udev workers do.  The
# distro rule skips the reload only when crash_hotplug reads 1.  Reloads are serialised
# and coalesced the way systemd treats `try-restart kdump` from a udev rule: while one
# reload is queued, later requests are absorbed by it (Debian's kdump-tools rule).
_UDEV_SCRIPT = f"""\
# udev-handler MODE: the kdump udev rule, for memory and cpu uevents.
case "$SUBSYSTEM" in memory|cpu) ;; *) exit 0 ;; esac
touch {DIR}/running.$$
v=$(cat /sys/devices/system/$SUBSYSTEM/crash_hotplug 2>/dev/null)
up=$(cut -d' ' -f1 /proc/uptime)
line="$up $SUBSYSTEM $ACTION ${{DEVPATH##*/}} crash_hotplug=${{v:-absent}}"
if [ "$v" != 1 ]; then
    if mkdir {DIR}/udev.queued 2>/dev/null; then
        until mkdir {DIR}/udev.lock 2>/dev/null; do sleep 0.05; done
        rmdir {DIR}/udev.queued
        /harness/kdump-load "$1" > {DIR}/udev-reload.$$.out 2>&1
        line="$line reload rc=$?"
        rmdir {DIR}/udev.lock
    else
        line="$line coalesced"
    fi
fi
echo "$line" >> {DIR}/udev.log
rm -f {DIR}/running.$$
"""

_UDEV_START = f"""\
# udev-start MODE: route memory and cpu uevents to the handler, one per event, in parallel.
# (Debian kernels have no CONFIG_UEVENT_HELPER: busybox's netlink listener it is.)
printf '#!/bin/sh\\nsh {DIR}/udev-handler.sh %s &\\n' "$1" > {DIR}/udev-helper
chmod +x {DIR}/udev-helper
uevent {DIR}/udev-helper > /dev/null 2>&1 &
echo $! > {DIR}/udev.pid
echo uevent > {DIR}/udev.via
"""

_UDEV_STOP = f"""\
[ -f {DIR}/udev.pid ] && kill "$(cat {DIR}/udev.pid)" 2>/dev/null
rm -f {DIR}/udev.pid
"""

_READER_SCRIPT = f"""\
# reader N: read both crash_hotplug files until told to stop; count the reads.
n=0
while [ ! -e {DIR}/stop ]; do
    read v < /sys/devices/system/memory/crash_hotplug
    read c < /sys/devices/system/cpu/crash_hotplug
    n=$((n+1))
done 2>/dev/null
echo $n > {DIR}/reader.$1.count
"""


def install_command() -> str:
    """One shell command that writes every contention script into the guest."""
    parts = [f"rm -rf {DIR}; mkdir -p {DIR}"]
    for name, body in (("reload.sh", _RELOAD_SCRIPT), ("udev-handler.sh", _UDEV_SCRIPT),
                       ("udev-start.sh", _UDEV_START), ("udev-stop.sh", _UDEV_STOP),
                       ("reader.sh", _READER_SCRIPT)):
        parts.append(f"cat > {DIR}/{name} <<'HARNESS_EOF'\n{body}HARNESS_EOF\n")
    return "\n".join(parts)


def start_command(spec: ContentionSpec, cpu: int | None, kexec_mode: str, tag: int = 0) -> str:
    """The guest command that starts ``spec`` (it returns at once for udev and readers).

    ``tag`` tells apart the logs of several sources of the same kind.
    """
    pin = f"taskset -c {cpu} " if cpu is not None else ""
    if spec.kind == "reload":
        return (f"{pin}sh {DIR}/reload.sh {spec.count} {kexec_mode} {tag} {spec.sync} "
                f"{spec.pad or 0}")
    if spec.kind == "udev":
        return f"sh {DIR}/udev-start.sh {kexec_mode}"
    starts = " ".join(f"{pin}sh {DIR}/reader.sh {tag}-{i} > /dev/null 2>&1 &"
                      for i in range(spec.count))
    return f"{starts} echo started"


# -- reports ------------------------------------------------------------------------------

_RELOAD_LINE = re.compile(r"reload (\d+) start=([\d.]+) end=([\d.]+) rc=(\d+)")
_UDEV_LINE = re.compile(
    r"^([\d.]+) (\w+) (\w+) (\S+) crash_hotplug=(\S+)(?: reload rc=(\d+)| (coalesced))?")


@dataclass
class ContentionRun:
    """What one contention source did (guest times are uptime seconds)."""

    spec: ContentionSpec
    cpu: int | None
    started_at: float | None = None         # host seconds from the swarm's first event
    reloads: list[dict[str, float]] = field(default_factory=list)
    events: int = 0                         # udev: uevents handled
    zero_reads: int = 0                     # udev: crash_hotplug read something other than 1
    coalesced: int = 0                      # udev: reload requests absorbed by a queued one
    reads: int = 0                          # readers: total reads
    via: str = ""                           # udev: "helper" or "uevent"
    #: sync=lock: host seconds from the start to the guest reporting the lock held
    #: (None: it never did, and the swarm went ahead once the reload ended or timed out).
    lock_seen_after: float | None = None
    #: Something that makes this run weaker than it could be (not an error).
    note: str | None = None
    error: str | None = None

    def to_json_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["spec"] = self.spec.to_json_dict()
        return d

    def summary(self) -> str:
        text = f"{self.spec.kind} on cpu {self.cpu if self.cpu is not None else 'any'}"
        if self.started_at is not None:
            text += f", started {self.started_at:+.2f} s"
        if self.spec.kind == "reload" or self.reloads:
            failed = sum(1 for r in self.reloads if r.get("rc"))
            text += f", {len(self.reloads)} reloads ({failed} failed)"
        if self.spec.synced:
            text += (f", lock held {self.lock_seen_after:.2f} s after start"
                     if self.lock_seen_after is not None else ", lock never seen held")
        if self.spec.kind == "udev":
            text += (f" via {self.via or '?'}, {self.events} events, {self.zero_reads} not-1 "
                     f"reads, {self.coalesced} coalesced")
        if self.spec.kind == "readers":
            text += f", {self.reads} reads"
        if self.note:
            text += f"; note: {self.note}"
        if self.error:
            text += f"; error: {self.error}"
        return text


def parse_reload_log(text: str) -> list[dict[str, float]]:
    return [{"n": int(m.group(1)), "start": float(m.group(2)), "end": float(m.group(3)),
             "rc": int(m.group(4))} for m in _RELOAD_LINE.finditer(text)]


def parse_udev_log(text: str) -> tuple[int, int, int, list[dict[str, float]]]:
    """``(events, reads other than 1, coalesced requests, reloads)`` from the handler's log."""
    events = zero = coalesced = 0
    reloads: list[dict[str, float]] = []
    for line in text.splitlines():
        m = _UDEV_LINE.match(line.strip())
        if not m:
            continue
        events += 1
        if m.group(5) != "1":
            zero += 1
        if m.group(6) is not None:
            reloads.append({"at": float(m.group(1)), "rc": int(m.group(6))})
        if m.group(7):
            coalesced += 1
    return events, zero, coalesced, reloads


# -- the injector --------------------------------------------------------------------------

class ContentionInjector:
    """Starts contention sources at their offsets from a swarm and collects what they did.

    ``prepare()`` installs the scripts and resolves the ACPI-IRQ CPU; ``lead`` says how
    long before the swarm's first event the earliest source starts; ``schedule(t0)``
    arms timers; ``stop()`` ends the sources (waiting, bounded, for reloads in flight)
    and returns one ``ContentionRun`` each.  A swarm stopped early by a hook leaves the
    injector running: whoever panics the guest decides whether to call ``stop()``.
    """

    def __init__(self, guest: Guest, specs: Sequence[ContentionSpec], *,
                 kexec_mode: str | None = None) -> None:
        self.guest = guest
        self.specs = tuple(specs)
        mode = kexec_mode or (guest.kdump_mode if guest.config.kexec != "none" else "none")
        if any(s.kind in ("reload", "udev") for s in self.specs) and mode not in ("file",
                                                                                  "classic"):
            raise UsageError(f"reload contention needs a kdump load mode (file or classic), "
                             f"not {mode!r}")
        self.kexec_mode = mode
        self.runs = [ContentionRun(s, s.cpu) for s in self.specs]
        self._timers: list[threading.Timer] = []
        self._channels: list[tuple[ContentionRun, paramiko.Channel]] = []
        self._lock = threading.Lock()
        self._t0: float | None = None
        self._started: dict[int, float] = {}     # id(run) -> host monotonic start
        self.acpi_cpu: int | None = None
        self.prepared = False
        self.stopped = False

    @property
    def lead(self) -> float:
        """Seconds before the swarm's first event that the earliest timed source starts."""
        return max([0.0] + [-s.offset for s in self.specs if not s.synced])

    @property
    def synced(self) -> bool:
        """Whether the swarm must ``wait_synced()`` before its first event."""
        return any(s.synced for s in self.specs)

    @property
    def sync_delay(self) -> float:
        """Seconds from the lock being seen held to the swarm's first event."""
        return max([0.0] + [max(s.offset, 0.0) for s in self.specs if s.synced])

    def prepare(self) -> None:
        """Install the guest scripts and resolve the CPUs to pin to (one SSH command each)."""
        cmdline = self.guest.run(f"{install_command()}\ncat /proc/cmdline", check=True).stdout
        if PREEMPT_FULL not in cmdline.split():
            for run in self.runs:
                if run.spec.kind in RELOADING:
                    run.note = (f"the guest was not booted with {PREEMPT_FULL}: hot-plug "
                                "work stalls on RCU while kexec_file_load computes its "
                                "digest, so only part of the lock window counts")
        if any(s.kind == "reload" and s.cpu is None for s in self.specs):
            out = self.guest.run(f"cat /proc/irq/{ACPI_IRQ}/effective_affinity_list "
                                 f"2>/dev/null; echo @@; cat /proc/interrupts", check=True).stdout
            effective, _, interrupts = out.partition("@@")
            self.acpi_cpu = irq_cpu(interrupts, ACPI_IRQ, effective)
            for run in self.runs:
                if run.spec.kind == "reload" and run.spec.cpu is None:
                    run.cpu = self.acpi_cpu
        self.prepared = True

    def schedule(self, t0: float) -> None:
        """Start each source at ``t0 + offset`` (host monotonic); late ones start at once."""
        if not self.prepared:
            self.prepare()
        self._t0 = t0
        for run in self.runs:
            at = time.monotonic() if run.spec.synced else t0 + run.spec.offset
            delay = max(0.0, at - time.monotonic())
            timer = threading.Timer(delay, self._start, args=(run,))
            timer.daemon = True
            self._timers.append(timer)
            timer.start()

    def _start(self, run: ContentionRun) -> None:
        if self.stopped:
            return
        command = start_command(run.spec, run.cpu, self.kexec_mode, self.runs.index(run))
        try:
            chan = self.guest.ssh.start(command, timeout=self.guest.timeouts.command)
        except Exception as exc:
            run.error = f"could not start: {exc}"
            return
        started = time.monotonic()
        with self._lock:
            self._channels.append((run, chan))
            self._started[id(run)] = started
        if self._t0 is not None:
            run.started_at = started - self._t0

    def _channel(self, run: ContentionRun) -> paramiko.Channel | None:
        with self._lock:
            return next((c for r, c in self._channels if r is run), None)

    def wait_synced(self, timeout: float) -> None:
        """Block until each ``sync=lock`` reload reports the kexec lock held (bounded).

        A reload that ends, or a deadline that passes, without the report is noted in its
        ``error`` and the swarm goes ahead: on kernels before 6.8, or with ``kexec_load``,
        nothing is logged from inside the syscall (use ``sync=none`` there).
        """
        deadline = time.monotonic() + timeout
        for run in (r for r in self.runs if r.spec.synced):
            # The mark counts only as a whole line: a piece of it proves nothing.
            lines = LineBuffer()
            while time.monotonic() < deadline and run.error is None:
                chan = self._channel(run)
                if chan is None:
                    time.sleep(0.005)        # its timer has not fired yet
                    continue
                if chan.recv_ready():
                    got = lines.feed(chan.recv(4096).decode("utf-8", "replace"))
                    if LOCKED_MARK in (line.strip() for line in got):
                        run.lock_seen_after = time.monotonic() - self._started[id(run)]
                        break
                elif chan.exit_status_ready():
                    break
                else:
                    time.sleep(0.005)
            if run.lock_seen_after is None:
                run.error = run.error or (
                    "the reload never reported holding the kexec lock (sync=lock needs "
                    "kexec_file_load on Linux 6.8+, whose kexec -d logs from inside the "
                    "syscall; use sync=none otherwise); the swarm went ahead without it")

    def rebase(self, t0: float) -> None:
        """The swarm really started at ``t0``: express start times relative to it."""
        self._t0 = t0
        with self._lock:
            for run, _ in self._channels:
                run.started_at = self._started[id(run)] - t0

    def stop(self, timeout: float | None = None) -> list[ContentionRun]:
        """End every source and collect its log; waits at most ``timeout`` for reloads."""
        if self.stopped:
            return self.runs
        self.stopped = True
        for timer in self._timers:
            timer.cancel()
        limit = timeout if timeout is not None else self.guest.timeouts.command
        deadline = time.monotonic() + limit
        try:
            self.guest.run(f"touch {DIR}/stop", timeout=limit)
            if any(r.spec.kind == "udev" for r in self.runs):
                self._drain_udev(deadline)
            self.guest.run(f"sh {DIR}/udev-stop.sh", timeout=limit)
            # Reloads (and udev handlers' reloads) in flight finish on their own; a
            # half-done reload would leave kdump unloaded for whatever comes next.
            while time.monotonic() < deadline:
                busy = [r for r, c in self._channels if r.spec.kind == "reload"
                        and not c.exit_status_ready()]
                handlers = self.guest.run(f"ls {DIR} | grep -c '^running' || true").stdout
                if not busy and handlers.strip() in ("", "0"):
                    break
                time.sleep(0.1)
            else:
                for run in self.runs:
                    run.error = run.error or f"still running after {limit:.0f} s"
            self._collect()
        except HarnessError as exc:
            for run in self.runs:
                run.error = run.error or f"could not collect: {exc.message}"
        finally:
            for _, chan in self._channels:
                chan.close()
        return self.runs

    def _drain_udev(self, deadline: float, quiet: float = 1.0) -> None:
        """Let the handlers catch up with queued uevents, as udev would, before stopping.

        Under TCG each handler takes ~0.1 s, so a swarm leaves a backlog in the netlink
        socket; done means no handler running and no new log line for ``quiet`` seconds.
        """
        last, quiet_since = "", time.monotonic()
        while time.monotonic() < deadline:
            state = self.guest.run(f"ls {DIR} | grep -c '^running'; "
                                   f"wc -l < {DIR}/udev.log 2>/dev/null || echo 0").stdout
            running = state.split()[0] if state.split() else "0"
            if state != last or running != "0":
                last, quiet_since = state, time.monotonic()
            elif time.monotonic() - quiet_since >= quiet:
                return
            time.sleep(0.1)

    def _collect(self) -> None:
        out = self.guest.run(
            f"cd {DIR}; for f in reload-*.log udev.log udev.via reader.*.count; do "
            f"[ -f $f ] && {{ echo \"@@$f\"; cat $f; }}; done; true").stdout
        files: dict[str, str] = {}
        for chunk in out.split("@@")[1:]:
            name, _, body = chunk.partition("\n")
            files[name.strip()] = body
        events, zero, coalesced, udev_reloads = parse_udev_log(files.get("udev.log", ""))
        for tag, run in enumerate(self.runs):
            if run.spec.kind == "reload":
                run.reloads = parse_reload_log(files.get(f"reload-{tag}.log", ""))
            elif run.spec.kind == "udev":
                run.events, run.zero_reads, run.reloads = events, zero, udev_reloads
                run.coalesced = coalesced
                run.via = files.get("udev.via", "").strip()
            else:
                run.reads = sum(int(v.strip() or 0) for k, v in files.items()
                                if k.startswith(f"reader.{tag}-"))
