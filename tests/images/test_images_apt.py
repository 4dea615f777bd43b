"""Mirror detection from apt configurations, and apt record parsing."""

from __future__ import annotations

from pathlib import Path

import pytest

from harness.errors import HostError, ImageBuildError, UsageError
from harness.images import apt

# Placeholder hosts only: the real mirror always comes from the host's configuration.
ARCHIVE = "http://archive.example.invalid/debian"
SECURITY = "http://security.example.invalid/debian-security"
THIRD_PARTY = "https://vendor.example.invalid/apt"

DEB822 = f"""\
Types: deb
# a comment inside the stanza
URIs: {ARCHIVE}
Suites: bookworm bookworm-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: {SECURITY}
Suites: bookworm-security
Components: main
"""


def make_etc(tmp_path: Path, sources_list: str | None = None,
             parts: dict[str, str] | None = None) -> Path:
    etc = tmp_path / "apt"
    (etc / "sources.list.d").mkdir(parents=True)
    if sources_list is not None:
        (etc / "sources.list").write_text(sources_list)
    for name, text in (parts or {}).items():
        (etc / "sources.list.d" / name).write_text(text)
    return etc


def test_one_line_format_with_options_and_comments() -> None:
    entries = apt.parse_one_line_sources(
        "# comment\n"
        f"deb-src {ARCHIVE} bookworm main\n"
        f"deb [arch=amd64 signed-by=/k.gpg] {ARCHIVE}/ trixie main contrib # trailing\n")
    assert [(e.uri, e.suites, e.components) for e in entries] == [
        (f"{ARCHIVE}/", ("trixie",), ("main", "contrib"))]


def test_deb822_stanzas() -> None:
    entries = apt.parse_deb822_sources(DEB822)
    assert [(e.uri, e.suites) for e in entries] == [
        (ARCHIVE, ("bookworm", "bookworm-updates")), (SECURITY, ("bookworm-security",))]


def test_deb822_disabled_and_source_only_stanzas_are_ignored() -> None:
    text = (f"Types: deb-src\nURIs: {ARCHIVE}\nSuites: sid\nComponents: main\n\n"
            f"Types: deb\nURIs: {ARCHIVE}\nSuites: sid\nComponents: main\nEnabled: no\n")
    assert apt.parse_deb822_sources(text) == []


def test_deb822_host_file(tmp_path: Path) -> None:
    etc = make_etc(tmp_path, parts={"debian.sources": DEB822})
    assert apt.detect_mirror(etc) == ARCHIVE


def test_security_and_third_party_entries_are_skipped(tmp_path: Path) -> None:
    etc = make_etc(tmp_path, sources_list=(
        f"deb {SECURITY} bookworm-security main\n"
        f"deb {THIRD_PARTY} cloud-sdk-bookworm main\n"
        f"deb {ARCHIVE}/ bookworm main\n"))
    assert apt.detect_mirror(etc) == ARCHIVE


def test_sources_list_comes_before_parts_and_parts_sort_by_name(tmp_path: Path) -> None:
    etc = make_etc(tmp_path, parts={
        "b.sources": DEB822.replace(ARCHIVE, ARCHIVE + "-b"),
        "a.list": f"deb {ARCHIVE}-a sid main\n",
        "c.list.disabled": f"deb {ARCHIVE}-c sid main\n",
    })
    assert apt.detect_mirror(etc) == ARCHIVE + "-a"
    (etc / "sources.list").write_text(f"deb {ARCHIVE}-main bookworm main\n")
    assert apt.detect_mirror(etc) == ARCHIVE + "-main"


def test_no_debian_archive_says_to_pass_mirror(tmp_path: Path) -> None:
    etc = make_etc(tmp_path, sources_list=f"deb {THIRD_PARTY} nodistro main\n")
    with pytest.raises(HostError, match="pass --mirror URI"):
        apt.detect_mirror(etc)


def test_mirror_option_is_validated() -> None:
    assert apt.resolve_mirror(ARCHIVE + "/") == ARCHIVE
    with pytest.raises(UsageError, match="expected an http"):
        apt.resolve_mirror("archive.example.invalid/debian")


def test_depends_and_records() -> None:
    assert apt.depends_names(
        "libc6 (>= 2.34), debconf (>= 0.5) | debconf-2.0, perl:any, "
        "linux-image-6.1.0-50-cloud-amd64 (= 6.1.176-1)") == [
        "libc6", "debconf", "perl", "linux-image-6.1.0-50-cloud-amd64"]
    records = apt.parse_control_records(
        "Package: a\nVersion: 1\nDescription: x\n more\n\nPackage: b\nVersion: 2\n")
    assert [r["Package"] for r in records] == ["a", "b"]
    assert records[0]["Description"] == "x\nmore"


def test_private_apt_options_never_touch_the_host(tmp_path: Path) -> None:
    state = apt.AptState.__new__(apt.AptState)
    state.root, state.mirror, state.suites = tmp_path, ARCHIVE, ("trixie",)
    options = " ".join(state.options())
    for key in ("Dir::Etc=", "Dir::State=", "Dir::Cache=", "Dir::State::status="):
        assert f"{key}{tmp_path}" in options
    assert "Debug::NoLocking=1" in options and "APT::Architecture=amd64" in options
    assert state.sources_list == (
        f"deb [signed-by={apt.DEBIAN_KEYRING}] {ARCHIVE} trixie main\n")


def test_a_failed_apt_command_is_an_image_build_error() -> None:
    exc = apt.AptCommandError(["apt-get", "download", "-q", "x=1"], 100, "E: Version '1' not found")
    assert isinstance(exc, ImageBuildError)
    assert exc.message == "apt-get download -q x=1 exited with 100"
    assert exc.output == exc.details == "E: Version '1' not found"
    assert str(exc).splitlines()[0] == exc.message  # all `kdump-harness doctor` shows
