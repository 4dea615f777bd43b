"""The guest side of contention: busybox ash scripts, installed once, started per source;
and which guest CPU services the ACPI interrupt (where a reload hurts most)."""

from __future__ import annotations

import re

from ...errors import HarnessError
from .spec import ACPI_IRQ, DIR, LOCKED_MARK, ContentionSpec

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
# SYNC=lock: print {LOCKED_MARK} once the first load has built its crash header inside
# kexec_file_load (kexec -d makes 6.8+ log "Loaded ELF headers at ..." right after
# prepare_elf_headers(), the kexec lock held until the digest and the copy are done); the
# watcher reads /dev/kmsg from our own start line on, so older lines cannot fool it.
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
                seen && /Loaded ELF headers at/ {{ print "{LOCKED_MARK}"; fflush(); exit }}' &
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
