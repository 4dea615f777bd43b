"""The ramoops decoder (harness.crash.pstore) on synthetic regions laid out as the kernel
lays them out (fs/pstore/ram.c, ram_core.c, platform.c)."""

from __future__ import annotations

import zlib

import pytest

from harness.crash.pstore import (
    PERSISTENT_RAM_SIG,
    ZONE_HEADER,
    LogLine,
    PstoreFormatError,
    RamoopsLayout,
    Zone,
    ZoneSpec,
    inflate,
    logged_after,
    missing_from,
    parse_dmesg_record,
    parse_log,
    parse_region,
    parse_zone,
    record_heading,
)
from harness.errors import EvidenceError

BASE = 0x3E5F7000
ZONE = 0x1000
PANIC_TEXT = ("Panic#1 Part1\n"
              "<5>[    0.000000] Linux version 6.12.117+deb13-cloud-amd64\n"
              "<6>[   14.482453] sysrq: Trigger a crash\n"
              "<0>[   14.485179] Kernel panic - not syncing: sysrq triggered crash\n"
              "<4>[   14.496684]  </TASK>\n"
              "<0>[   14.503694] Kernel Offset: disabled\n")
DUMP_LOG = ("[    0.000000] [    T0] Linux version 6.12.117+deb13-cloud-amd64\n"
            "[   14.482453] [  T274] sysrq: Trigger a crash\n"
            "[   14.485179] [  T274] Kernel panic - not syncing: sysrq triggered crash\n"
            "[   14.496684] [  T274]  </TASK>\n"
            "[   14.503694] [  T274] Kernel Offset: disabled\n")


def deflate_raw(data: bytes) -> bytes:
    """What pstore_compress writes: zlib_deflateInit2(..., -MAX_WBITS, ...)."""
    c = zlib.compressobj(6, zlib.DEFLATED, -zlib.MAX_WBITS)
    return c.compress(data) + c.flush()


def kmsg(text: str, *, compressed: bool = True, sec: int = 1796232344,
         usec: int = 901938) -> bytes:
    """A dmesg record as ramoops_write_kmsg_hdr and pstore_dump write it."""
    body = deflate_raw(text.encode()) if compressed else text.encode()
    return f"===={sec}.{usec:06d}-{'C' if compressed else 'D'}\n".encode() + body


def zone(payload: bytes = b"", *, size: int = ZONE, start: int | None = None,
         used: int | None = None, sig: int = PERSISTENT_RAM_SIG) -> bytes:
    """A persistent_ram_zone: header, then the ring (written from 0, not wrapped)."""
    data = bytearray(size - ZONE_HEADER.size)
    data[:len(payload)] = payload
    used = len(payload) if used is None else used
    start = used if start is None else start
    return ZONE_HEADER.pack(sig, start, used) + bytes(data)


def layout(**kw: int) -> RamoopsLayout:
    values = {"mem_address": BASE, "mem_size": 4 * ZONE, "record_size": ZONE,
              "console_size": 0, "ftrace_size": 0, "pmsg_size": 0, **kw}
    return RamoopsLayout(**values)


# -- layout ----------------------------------------------------------------------------

def test_layout_follows_ramoops_probe_with_the_module_defaults() -> None:
    lay = RamoopsLayout(mem_address=BASE, mem_size=0x10000, ftrace_zones=2)
    zones = lay.zones()
    dmesg = [z for z in zones if z.kind == "dmesg"]
    # 4 KiB each of console, ftrace and pmsg by default: 13 dmesg zones of 4 KiB.
    assert len(dmesg) == 13 and all(z.size == 0x1000 for z in dmesg)
    assert [z.offset for z in dmesg] == [i * 0x1000 for i in range(13)]
    rest = [(z.kind, z.index, z.offset, z.size) for z in zones[13:]]
    assert rest == [("console", 0, 0xD000, 0x1000), ("ftrace", 0, 0xE000, 0x800),
                    ("ftrace", 1, 0xE800, 0x800), ("pmsg", 0, 0xF000, 0x1000)]


def test_sizes_round_down_to_powers_of_two_and_zones_share_the_dump_space() -> None:
    lay = layout(mem_size=0x28000, record_size=0x18000, console_size=5000)
    zones = lay.zones()
    # record 0x18000 -> 0x10000; console 5000 -> 4096; the dump space is 0x27000, two zones
    # of 0x13800 each (zone size = space / count, as ramoops_init_przs computes it).
    assert [(z.kind, z.offset, z.size) for z in zones] == [
        ("dmesg", 0, 0x13800), ("dmesg", 0x13800, 0x13800), ("console", 0x27000, 0x1000)]


def test_layout_from_the_command_line_and_from_sysfs_names() -> None:
    cmdline = ("elfcorehdr=0x2e000000 ramoops.mem_address=1046441984 ramoops.mem_size=1048576 "
               "ramoops.record_size=65536 ramoops.console_size=0 ramoops.ftrace_size=0 "
               "ramoops.pmsg_size=0 ramoops.ecc=0 ramoops.max_reason=2 ramoops.mem_type=0")
    lay = RamoopsLayout.from_cmdline(cmdline)
    assert lay == RamoopsLayout(0x3E5F7000, 0x100000, 0x10000, 0, 0, 0, 0)
    assert len(lay.zones()) == 16
    assert RamoopsLayout.from_params({"mem_address": "0x1000", "mem_size": "0x2000",
                                      "mem_name": "pstore"}).record_size == 4096


@pytest.mark.parametrize("params,match", [
    ({"mem_size": "4096"}, "no mem_address"),
    ({"mem_address": "zero", "mem_size": "4096"}, "not a number"),
])
def test_bad_parameters_are_refused(params: dict[str, str], match: str) -> None:
    with pytest.raises(PstoreFormatError, match=match):
        RamoopsLayout.from_params(params)


def test_ecc_and_oversized_frontends_are_refused() -> None:
    with pytest.raises(PstoreFormatError, match="ECC"):
        layout(ecc=16).zones()
    with pytest.raises(PstoreFormatError, match="exceed mem_size"):
        layout(mem_size=0x1000, console_size=0x2000).zones()
    assert issubclass(PstoreFormatError, EvidenceError), "evidence problem, not a verdict"


# -- zones -----------------------------------------------------------------------------

def test_zones_like_persistent_ram_post_init() -> None:
    spec = ZoneSpec("dmesg", 0, 0, ZONE)
    ok = parse_zone(zone(b"hello"), spec, BASE)
    assert ok.valid and not ok.empty and ok.log == b"hello" and ok.address == BASE
    assert parse_zone(zone(), spec, BASE).empty
    unsigned = parse_zone(zone(b"x", sig=0), spec, BASE)
    assert not unsigned.valid and "no ramoops signature" in (unsigned.problem or "")
    too_big = parse_zone(zone(b"", used=ZONE), spec, BASE)
    assert not too_big.valid and "invalid buffer" in (too_big.problem or "")
    past_end = parse_zone(zone(b"abc", start=5), spec, BASE)
    assert not past_end.valid
    short = parse_zone(zone()[:100], spec, BASE)
    assert not short.valid and "not all in" in (short.problem or "")


def test_a_wrapped_ring_is_read_oldest_first() -> None:
    # A full console ring whose next write goes at 4: the oldest bytes start there.
    size = ZONE_HEADER.size + 10
    raw = ZONE_HEADER.pack(PERSISTENT_RAM_SIG, 4, 10) + b"IJabcdefGH"
    z = parse_zone(raw, ZoneSpec("console", 0, 0, size), BASE)
    assert z.log == b"cdefGHIJab"


def test_ftrace_zones_carry_the_kernel_version_in_their_signature() -> None:
    sig = PERSISTENT_RAM_SIG ^ 0x060C75          # LINUX_VERSION_CODE of 6.12.117
    assert parse_zone(zone(b"f", sig=sig), ZoneSpec("ftrace", 0, 0, ZONE), BASE).valid
    assert not parse_zone(zone(b"f", sig=sig), ZoneSpec("dmesg", 0, 0, ZONE), BASE).valid


# -- records ---------------------------------------------------------------------------

def dmesg_zone(payload: bytes) -> Zone:
    return parse_zone(zone(payload), ZoneSpec("dmesg", 3, 0, ZONE), BASE)


def test_a_compressed_panic_record() -> None:
    rec = parse_dmesg_record(dmesg_zone(kmsg(PANIC_TEXT)))
    assert rec is not None and rec.problem is None and rec.compressed
    assert rec.zone == 3 and rec.text == PANIC_TEXT
    assert rec.heading == ("Panic", 1, 1) and rec.reason == "Panic"
    assert rec.time == pytest.approx(1796232344.901938)
    assert rec.lines[-1] == LogLine(0, 14.503694, None, "Kernel Offset: disabled")


def test_uncompressed_and_old_style_headers() -> None:
    plain = parse_dmesg_record(dmesg_zone(kmsg("Oops#2 Part1\n", compressed=False)))
    assert plain is not None and not plain.compressed and plain.heading == ("Oops", 2, 1)
    old = parse_dmesg_record(dmesg_zone(b"====123.456\nPanic#1 Part1\n"))
    assert old is not None and old.problem is None and not old.compressed
    assert (old.seconds, old.microseconds) == (123, 456)
    # ramoops_read_kmsg_hdr: any flag but C is an uncompressed record.
    other = parse_dmesg_record(dmesg_zone(b"====5.000001-X\nPanic#1 Part1\n"))
    assert other is not None and other.problem is None and not other.compressed


@pytest.mark.parametrize("payload,problem", [
    (b"Panic#1 Part1\n", "no ====seconds.microseconds header"),
    (b"====1.000001-C\n" + deflate_raw(PANIC_TEXT.encode())[:-8], "ends before"),
    (b"====1.000001-C\n" + zlib.compress(PANIC_TEXT.encode()), "does not inflate"),
])
def test_records_that_do_not_decode_say_why(payload: bytes, problem: str) -> None:
    rec = parse_dmesg_record(dmesg_zone(payload))
    assert rec is not None and problem in (rec.problem or "") and rec.text is None
    assert rec.reason is None and rec.lines == []


def test_empty_and_invalid_zones_hold_no_record() -> None:
    assert parse_dmesg_record(dmesg_zone(b"")) is None
    bad = parse_zone(zone(b"x", sig=0), ZoneSpec("dmesg", 0, 0, ZONE), BASE)
    assert parse_dmesg_record(bad) is None


def test_inflate_is_raw_deflate() -> None:
    assert inflate(deflate_raw(b"abc" * 100)) == b"abc" * 100
    with pytest.raises(PstoreFormatError):
        inflate(b"\x00garbage")


# -- regions ---------------------------------------------------------------------------

def test_a_region_with_records_empty_zones_and_an_unsigned_one() -> None:
    region = (zone(kmsg(PANIC_TEXT)) + zone() + zone(kmsg("Oops#1 Part1\n", compressed=False))
              + zone(b"junk", sig=0))
    parsed = parse_region(region, layout())
    assert [z.valid for z in parsed.dmesg_zones] == [True, True, True, False]
    assert [r.zone for r in parsed.records] == [0, 2]
    assert [r.zone for r in parsed.records_for("Panic")] == [0]
    assert [r.zone for r in parsed.records_for("Oops")] == [2]
    summary = parsed.summary()
    assert "4 dmesg zones (3 initialised), 2 record(s)" in summary
    assert "dmesg-0: 1796232344.901938 C" in summary and "('Panic', 1, 1), 5 lines" in summary


def test_a_freshly_initialised_region_holds_nothing() -> None:
    parsed = parse_region(zone() * 4, layout())
    assert all(z.empty for z in parsed.dmesg_zones) and not parsed.records


def test_a_short_read_is_refused() -> None:
    with pytest.raises(PstoreFormatError, match="bytes read"):
        parse_region(zone() * 3, layout())


# -- log lines and order ---------------------------------------------------------------

def test_log_lines_in_both_forms_compare_equal() -> None:
    record = parse_log(PANIC_TEXT)
    dump = parse_log(DUMP_LOG)
    assert [line.key for line in record] == [line.key for line in dump]
    assert dump[3] == LogLine(None, 14.496684, "T274", " </TASK>")
    assert record[3].message == " </TASK>" and record[3].level == 4


def test_what_the_kernel_logged_after_the_record() -> None:
    record = parse_log(PANIC_TEXT)
    dump = parse_log(DUMP_LOG)
    assert logged_after(record, dump) == [] and missing_from(record, dump) == []
    later = parse_log(DUMP_LOG + "[   14.600000] [  T274] kexec: late line\n")
    assert [line.message for line in logged_after(record, later)] == ["kexec: late line"]
    # Without the panic notifiers' line the record ends earlier than the dump's log.
    assert len(logged_after(record[:-1], dump)) == 1
    # A record from another boot shares nothing with this log.
    other = parse_log("<0>[    9.000000] Kernel panic - not syncing: other\n")
    assert missing_from(other, dump) == other and logged_after(other, dump) == dump
    assert logged_after([], dump) == dump


def test_record_heading_of_a_pstore_file() -> None:
    assert record_heading(PANIC_TEXT) == ("Panic", 1, 1)
    assert record_heading("Oops#12 Part3\n...") == ("Oops", 12, 3)
    assert record_heading("<0>[ 1.0] no heading") is None
