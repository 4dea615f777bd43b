"""seed002, "Execute kmsg_dump() reliably in kdump path" (2011): crash_kexec_post_notifiers
and pstore, end to end with real guests.

With ``crash_kexec_post_notifiers`` panic() runs the panic notifiers and
``kmsg_dump(KMSG_DUMP_PANIC)`` before ``__crash_kexec()`` (kernel/panic.c): pstore's RAM
backend, ramoops, records the panic log in a region ``reserve_mem=`` keeps in guest RAM,
and kdump still captures.  Without it kdump runs first and never returns: no notifier, no
kmsg_dump, nothing in pstore.

Written with the scenario API (the ``kdump`` fixture): ``kdump.boot`` -> ``.swarm`` ->
``.panic`` -> ``Capture.verify``, and ``kdump.run`` for the job without the option.

The first kernel loads ramoops (a module in Debian) with ``ramoops.mem_name=`` naming the
``reserve_mem`` region; kdump-load hands the region's address and layout to the capture
kernel, which reads it back through its own pstore (``capture/pstore/``), and the host
reads it from guest memory while the capture kernel runs (``pstore-ramoops.raw``,
decoded by ``harness.crash.pstore``).  The order is proven, not just the presence:

* before the panic the first kernel's pstore is empty and the host finds every dmesg zone
  initialised and empty;
* while the capture kernel runs the region holds a complete Panic record whose log is the
  first kernel's own (the dump's lines and timestamps) up to the last line the kernel
  logged before kdump; the capture kernel's pstore, read as its userspace starts, and
  the dump kdump wrote (the region read out of the ELF vmcore) hold the same record;
* the record's wall-clock time, mapped to the host clock through an offset measured just
  before the panic, precedes the capture kernel's command line on the console.

The panic path is the harness's own: with ``crash_kexec_post_notifiers`` among the kernel
arguments it asks for ``panic_print=0x20`` (the log replay of a panic that does not kexec:
kdump pre-empts it) instead of ``0x60`` (harness/guest/qemu_args.py).  The all-CPU
backtrace (0x40) would run before kdump here, and 7.2 takes it a second time after
``crash_smp_send_stop()`` parked the other CPUs, waiting 10 s for CPUs that can no longer
answer ("After 10 seconds, these CPUS still haven't responded to the NMI", 18 s under
TCG).  A distribution's panic path has no such wait: neither the console nor the dump's
log may show it.

VMCOREINFO's CRASHTIME cannot order anything here: ``crash_save_vmcoreinfo()`` stamps it
with ``ktime_get_real_seconds()``, the timekeeper's coarse seconds, which stop at the last
tick before panic() disabled interrupts, whereas pstore stamps its record with
``ktime_get_real_fast_ns()`` (the clocksource): with that 10 s wait on 7.2 the record was
12-18 s *after* CRASHTIME (without it, in the same second).  ``order.txt`` records
both.

pstore compresses the record (raw deflate, "C") unless ``pstore.compress=none`` ("D"):
both are checked.

Without the option the dump's log lacks the panic notifiers' "Kernel Offset:" line (the
notifiers never ran: kdump came first) and no pstore copy holds a record.
"""

from __future__ import annotations

import re
import time
from pathlib import Path

import pytest

from harness.crash import CaptureResult, Outcome
from harness.crash.pstore import (
    DmesgRecord,
    RamoopsLayout,
    RamoopsRegion,
    logged_after,
    missing_from,
    parse_log,
    parse_region,
)
from harness.guest import Guest
from harness.plugin.scenario import Capture, Scenario, ScenarioGuest
from harness.results import Result
from harness.vmcore import Dump, open_dump

pytestmark = [pytest.mark.guest, pytest.mark.seed002]

MiB = 1 << 20
#: 1 MiB of guest RAM, kept from the kernel by reserve_mem (6.11+), sixteen 64 KiB dmesg
#: zones; Debian builds no pstore console, ftrace or pmsg frontend, so no zones for them.
PSTORE_ARGS = ("reserve_mem=1M:4096:pstore", "ramoops.mem_name=pstore",
               "ramoops.record_size=0x10000", "ramoops.console_size=0",
               "ramoops.ftrace_size=0", "ramoops.pmsg_size=0")
POST_NOTIFIERS = "crash_kexec_post_notifiers"
DIMMS = "2x256M"
PANIC_LINE = "Kernel panic - not syncing: sysrq triggered crash"
#: Printed by an x86 panic notifier (dump_kernel_offset): it runs before kdump only with
#: crash_kexec_post_notifiers.
NOTIFIER_LINE = re.compile(r"Kernel Offset: ")
#: The capture kernel's first sure sign on the console: kexec put elfcorehdr= on its
#: command line (a "Linux version" line can be the first kernel's log replayed).
CAPTURE_KERNEL = re.compile(r"Kernel command line: (?:\S+ )*elfcorehdr=\S+")
#: lib/nmi_backtrace.c, when an all-CPU backtrace waits out CPUs that cannot answer.
STALL = "these CPUS still haven't responded"
#: The default run: post notifiers on trixie and sid, without them on trixie.
SLOW = pytest.mark.slow
#: pstore compresses dmesg records with raw deflate by default (CONFIG_PSTORE_COMPRESS=y:
#: "C" records); pstore.compress=none (pstore is built in) stores them as text ("D").
COMPRESSION = [
    pytest.param("trixie", (), marks=pytest.mark.profile("trixie"), id="trixie"),
    pytest.param("sid", (), marks=pytest.mark.profile("sid"), id="sid"),
    pytest.param("trixie", ("pstore.compress=none",),
                 marks=[pytest.mark.profile("trixie"), SLOW], id="trixie-compress-none"),
]
PROFILES = [pytest.param("trixie", marks=pytest.mark.profile("trixie")),
            pytest.param("sid", marks=[pytest.mark.profile("sid"), SLOW])]


def ramoops_params(guest: Guest) -> dict[str, str]:
    out = guest.run("grep -r . /sys/module/ramoops/parameters/", check=True).stdout
    return {line.split(":", 1)[0].rsplit("/", 1)[1]: line.split(":", 1)[1]
            for line in out.splitlines() if ":" in line}


def read_region(guest: Guest, layout: RamoopsLayout, path: Path) -> RamoopsRegion:
    """The region as it is now, read from guest memory (QMP pmemsave)."""
    guest.qmp.execute("pmemsave", {"val": layout.mem_address, "size": layout.mem_size,
                                   "filename": str(path)})
    return parse_region(path.read_bytes(), layout)


def clock_offset(guest: Guest) -> tuple[float, float]:
    """The guest's CLOCK_REALTIME minus the host's monotonic clock, and its uncertainty
    (half the best of three round trips; busybox's date has no sub-second field, its
    adjtimex does)."""
    cmd = "adjtimex | awk '/tv_sec/{s=$2} /tv_usec/{u=$2} END{printf \"%d.%06d\\n\", s, u}'"
    samples = []
    for _ in range(3):
        t0 = time.monotonic()
        guest_now = float(guest.run(cmd, check=True).stdout)
        t1 = time.monotonic()
        samples.append((t1 - t0, guest_now - (t0 + t1) / 2))
    rtt, offset = min(samples)
    return offset, rtt / 2


def read_physical(path: Path, dump: Dump, addr: int, size: int) -> bytes:
    """``size`` bytes of guest memory at ``addr`` out of an ELF dump's PT_LOAD data; what
    no segment holds (pages makedumpfile -d 31 left out as zero) reads as zeros."""
    out = bytearray(size)
    with open(path, "rb") as f:
        for load in dump.loads:
            lo = max(addr, load.range.start)
            hi = min(addr + size, load.range.start + load.present)
            if load.file_offset is None or lo >= hi:
                continue
            f.seek(load.file_offset + lo - load.range.start)
            out[lo - addr:hi - addr] = f.read(hi - lo)
    return bytes(out)


def capture_pstore(capture: CaptureResult) -> tuple[dict[str, str], dict[str, str]]:
    """What the capture kernel's pstore showed: its dmesg records by name, and status.txt."""
    assert "capture_pstore" in capture.files, "the capture kernel saved no pstore listing"
    folder = Path(capture.files["capture_pstore"])
    status = dict(line.split("=", 1) for line in (folder / "status.txt").read_text().splitlines()
                  if "=" in line and not line.startswith("record="))
    records = {p.name: p.read_text(errors="replace") for p in folder.glob("dmesg-ramoops-*")}
    return records, status


def host_region(capture: CaptureResult, out: Path) -> tuple[RamoopsLayout, RamoopsRegion]:
    """The region the host read while the capture kernel ran, at the address and with the
    layout the capture kernel's own command line names."""
    assert "pstore_region" in capture.files, (out / "pstore-ramoops.missing").read_text()
    layout = RamoopsLayout.from_cmdline(Path(capture.files["capture_cmdline"]).read_text())
    region = parse_region(Path(capture.files["pstore_region"]).read_bytes(), layout)
    (out / "pstore-ramoops.txt").write_text(region.summary() + "\n")
    return layout, region


def first_kernel_baseline(sg: ScenarioGuest) -> RamoopsLayout:
    """Before the panic: ramoops found its reserve_mem region, pstore shows no record and
    every dmesg zone is initialised (ramoops wrote its signature) and empty."""
    params = ramoops_params(sg.guest)
    assert params["mem_name"] == "pstore" and int(params["mem_size"]) == MiB, params
    layout = RamoopsLayout.from_params(params)
    listing = sg.guest.run("mount -t pstore pstore /sys/fs/pstore && ls /sys/fs/pstore",
                           check=True).stdout
    assert not listing.split(), f"pstore holds records before the panic: {listing}"
    before = read_region(sg.guest, layout, sg.out / "pstore-before-panic.raw")
    assert len(before.dmesg_zones) == 16
    assert all(z.empty for z in before.dmesg_zones), before.summary()
    return layout


def panic_and_verify(sg: ScenarioGuest) -> tuple[Capture, Dump, str]:
    """Snapshot, sysrq panic, capture; the dump must be accurate.  Returns the capture,
    the dump and the dump's log (makedumpfile --dump-dmesg)."""
    capture = sg.panic("sysrq")
    result = capture.result
    assert result.outcome is Outcome.CAPTURED, f"{result.reason}\n{result.console_tail}"
    report = capture.verify()
    assert report.verdict == "accurate", report.to_text()
    dump = open_dump(Path(result.files["vmcore"]))
    dmesg = Path(result.files["vmcore_dmesg"]).read_text(errors="replace")
    return capture, dump, dmesg


def the_panic_record(capture: CaptureResult, layout: RamoopsLayout, dmesg: str,
                     out: Path) -> DmesgRecord:
    """The host's read while the capture kernel ran: one complete Panic record, this
    kernel's own log (the dump's lines and timestamps) up to the last line it logged
    before kdump, the panic notifiers' line included."""
    host_layout, region = host_region(capture, out)
    assert host_layout == layout, "kdump-load handed the capture kernel another region"
    assert len(region.records) == 1, region.summary()
    (record,) = region.records_for("Panic")
    assert record.problem is None and record.heading == ("Panic", 1, 1), region.summary()
    messages = [line.message for line in record.lines]
    assert PANIC_LINE in messages
    assert any(NOTIFIER_LINE.match(m) for m in messages[messages.index(PANIC_LINE):]), \
        "no panic notifier's line after the panic in the record"
    log = parse_log(dmesg)
    assert not missing_from(record.lines, log), "the record is not this kernel's log"
    assert not logged_after(record.lines, log), "the kernel logged on after the kmsg_dump"
    return record


def no_stall(guest: Guest, mark: int, dmesg: str) -> float:
    """No all-CPU backtrace waited for parked CPUs between the panic and kdump (neither
    on the console nor in the dump's log); returns the seconds from the panic line to the
    capture kernel's command line on the console."""
    assert STALL not in dmesg, "an NMI backtrace waited for CPUs before kdump (dump's log)"
    assert STALL not in guest.console.text(mark), "an NMI backtrace waited (console)"
    panicked = guest.console.find(re.escape(PANIC_LINE), mark)
    started = guest.console.find(CAPTURE_KERNEL, mark)
    assert panicked is not None and started is not None, "no panic or capture kernel line"
    return started.at - panicked.at


@pytest.mark.parametrize("profile,compress", COMPRESSION)
def test_post_notifiers_put_the_panic_log_in_pstore_before_kdump(
        kdump: Scenario, profile: str, compress: tuple[str, ...]) -> None:
    sg = kdump.boot(profile, kernel_args=(*PSTORE_ARGS, *compress, POST_NOTIFIERS),
                    capture_mode="elf")
    layout = first_kernel_baseline(sg)
    sg.swarm(dimms=DIMMS)
    offset, uncertainty = clock_offset(sg.guest)
    mark = sg.guest.console.mark()
    capture, dump, dmesg = panic_and_verify(sg)
    record = the_panic_record(capture.result, layout, dmesg, sg.out)
    assert record.compressed == (not compress), "pstore.compress= did not take"
    to_capture_kernel = no_stall(sg.guest, mark, dmesg)

    # The capture kernel's pstore, read as its userspace started, and kdump's own dump.
    records, status = capture_pstore(capture.result)
    assert status["backend"] == "ramoops"
    assert list(records) == ["dmesg-ramoops-0"] and records["dmesg-ramoops-0"] == record.text
    in_dump = read_physical(Path(capture.result.files["vmcore"]), dump, layout.mem_address,
                            layout.mem_size)
    assert parse_region(in_dump, layout).records == (record,)

    # Timestamps: the record (the first kernel's wall clock at kmsg_dump) is before the
    # capture kernel's command line on the console, on the host's clock.
    started = sg.guest.console.find(CAPTURE_KERNEL, mark)
    assert started is not None, "no capture kernel command line on the console"
    margin = started.at - (record.time - offset) - uncertainty
    assert margin > 0, f"the record is {-margin:.3f} s after the capture kernel started"
    crashtime = dump.vmcoreinfo.crash_time if dump.vmcoreinfo else None
    (sg.out / "order.txt").write_text(
        f"record {record.time:.6f} (guest wall clock); the capture kernel's command line "
        f"on the console {margin:.3f} s later (host clock, offset uncertainty "
        f"{uncertainty:.3f} s), {to_capture_kernel:.3f} s after the panic line; the "
        f"capture kernel read its pstore at uptime {status['uptime']} s; CRASHTIME "
        f"{crashtime} (coarse, stops during panic)\n")


@pytest.mark.parametrize("profile", PROFILES)
def test_without_post_notifiers_kdump_runs_first_and_pstore_gets_nothing(
        kdump: Scenario, profile: str) -> None:
    job = kdump.run(profile, dimms=DIMMS, add_cpus=0, kernel_args=PSTORE_ARGS,
                    expect="accurate")
    assert job.result is Result.ACCURATE, job.reason
    assert job.capture is not None
    capture = job.capture
    dmesg = Path(capture.files["vmcore_dmesg"]).read_text(errors="replace")
    layout, region = host_region(capture, kdump.out)

    # ramoops ran in the first kernel, on the region the capture kernel was given...
    assert f"ramoops: using {MiB:#x}@{layout.mem_address:#x}" in dmesg
    assert "pstore: Registered ramoops as persistent store backend" in dmesg
    # ...the panic happened, but kdump took over before the panic notifiers and kmsg_dump.
    assert PANIC_LINE in dmesg
    assert not NOTIFIER_LINE.search(dmesg), "a panic notifier ran before kdump"
    assert len(region.dmesg_zones) == 16 and not region.records, region.summary()
    assert all(z.empty for z in region.dmesg_zones), region.summary()
    records, status = capture_pstore(capture)
    assert status["backend"] == "ramoops" and not records, records
