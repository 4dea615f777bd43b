"""The newc writer: round trips through our reader and GNU cpio, determinism, alignment."""

from __future__ import annotations

import shutil
import stat
import subprocess
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from harness.images import cpio

SAMPLE: list[cpio.Entry] = [
    cpio.RegularFile("init", b"#!/bin/sh\necho hi\n", 0o755),
    cpio.RegularFile("etc/harness/modules/net", b"/lib/modules/x/a.ko\n"),
    cpio.Symlink("bin/sh", "busybox"),
    cpio.RegularFile("bin/busybox", b"\x7fELF" + bytes(1001), 0o755),
    cpio.Directory("tmp", 0o1777),
    cpio.console_node(),
]


def _by_path(blob: bytes) -> dict[str, cpio.ParsedEntry]:
    (archive,) = cpio.read_newc(blob)
    return {e.path: e for e in archive}


def test_round_trip_keeps_types_modes_and_contents() -> None:
    members = _by_path(cpio.newc_bytes(SAMPLE))
    assert members["init"].data == b"#!/bin/sh\necho hi\n"
    assert members["init"].mode == stat.S_IFREG | 0o755
    assert members["etc/harness/modules/net"].mode == stat.S_IFREG | 0o644
    assert members["bin/sh"].mode == stat.S_IFLNK | 0o777
    assert members["bin/sh"].data == b"busybox"
    assert members["tmp"].mode == stat.S_IFDIR | 0o1777
    assert members["dev/console"].mode == stat.S_IFCHR | 0o600
    assert members["dev/console"].rdev == (5, 1)


def test_parents_are_added_and_precede_children() -> None:
    (archive,) = cpio.read_newc(cpio.newc_bytes(SAMPLE))
    order = [e.path for e in archive]
    for parent in ("etc", "etc/harness", "etc/harness/modules", "bin", "dev"):
        assert stat.S_ISDIR(_by_path(cpio.newc_bytes(SAMPLE))[parent].mode)
    for index, path in enumerate(order):
        if "/" in path:
            assert order.index(path.rsplit("/", 1)[0]) < index


def test_output_is_reproducible_owner_root_mtime_zero() -> None:
    first = cpio.newc_bytes(SAMPLE)
    assert first == cpio.newc_bytes(list(reversed(SAMPLE)))
    for entry in cpio.read_newc(first)[0]:
        assert (entry.uid, entry.gid, entry.mtime) == (0, 0, 0)


def test_every_header_is_four_byte_aligned_and_trailer_ends_it() -> None:
    blob = cpio.newc_bytes(SAMPLE)
    assert len(blob) % 4 == 0
    offsets = [i for i in range(0, len(blob), 4) if blob[i:i + 6] == cpio.NEWC_MAGIC]
    assert len(offsets) == len(cpio.read_newc(blob)[0]) + 1  # + the trailer
    assert b"TRAILER!!!\0" in blob[offsets[-1]:]


def test_concatenated_archives_parse_separately() -> None:
    first = cpio.newc_bytes(SAMPLE)
    second = cpio.newc_bytes([cpio.RegularFile("boot/vmlinuz", b"k" * 5)])
    archives = cpio.read_newc(first + second)
    assert [e.path for e in archives[1]] == ["boot", "boot/vmlinuz"]


def test_later_entries_replace_earlier_ones() -> None:
    blob = cpio.newc_bytes([cpio.RegularFile("init", b"old"), cpio.RegularFile("init", b"new")])
    assert _by_path(blob)["init"].data == b"new"


@pytest.mark.parametrize("bad", ["", "/", "../etc", "a/../../b"])
def test_bad_paths_are_refused(bad: str) -> None:
    with pytest.raises(ValueError):
        cpio.newc_bytes([cpio.RegularFile(bad, b"")])


@pytest.mark.skipif(shutil.which("cpio") is None, reason="GNU cpio not installed")
def test_gnu_cpio_lists_and_extracts_it(tmp_path: Path) -> None:
    blob = cpio.newc_bytes([e for e in SAMPLE if not isinstance(e, cpio.CharDevice)])
    listing = subprocess.run(["cpio", "-itv"], input=blob, capture_output=True, check=True)
    lines = listing.stdout.decode().splitlines()
    assert any(line.startswith("lrwxrwxrwx") and line.endswith("bin/sh -> busybox")
               for line in lines)
    assert any(line.startswith("-rwxr-xr-x") and line.endswith(" init") for line in lines)
    subprocess.run(["cpio", "-idm", "--quiet"], input=blob, cwd=tmp_path, check=True)
    assert (tmp_path / "init").read_bytes() == b"#!/bin/sh\necho hi\n"
    assert (tmp_path / "init").stat().st_mode & 0o777 == 0o755
    assert (tmp_path / "bin" / "sh").readlink() == Path("busybox")


names = st.lists(st.text("abcxyz", min_size=1, max_size=4), min_size=1, max_size=3).map("/".join)


@settings(max_examples=60, deadline=None)
@given(st.dictionaries(names, st.binary(max_size=70), max_size=12))
def test_any_file_tree_round_trips(files: dict[str, bytes]) -> None:
    # A path cannot be both a file and a parent directory of another file.
    files = {p: d for p, d in files.items()
             if not any(other.startswith(p + "/") for other in files)}
    members = _by_path(cpio.newc_bytes([cpio.RegularFile(p, d) for p, d in files.items()]))
    assert {p: members[p].data for p in files} == files
