"""profiles.toml: the committed file and the validation of bad ones."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

import pytest

from harness.errors import UsageError
from harness.images import profiles


def test_committed_profiles_load() -> None:
    loaded = profiles.load_profiles()
    assert set(loaded.profiles) == {"bookworm", "trixie", "sid"}
    assert loaded.default_profile == "trixie" and loaded.default_flavour == "cloud"
    for profile in loaded.profiles.values():
        assert profile.kernels["cloud"] == "linux-image-cloud-amd64"
        assert profile.kernels["generic"] == "linux-image-amd64"
        assert {"busybox-static", "kexec-tools", "makedumpfile", "dropbear-bin",
                "libc6"} <= set(profile.packages)
    groups = {g.name: g for g in loaded.module_groups}
    assert {"base", "net", "blk", "9p", "fwcfg"} <= set(groups)
    assert groups["net"].required and not groups["9p"].required
    assert any(b.guest_path == "/bin/busybox" for b in loaded.binaries)


def test_series_matching() -> None:
    sid = profiles.load_profiles().get("sid")
    assert sid.release_matches_series("7.2.13+deb14-cloud-amd64")
    assert not sid.release_matches_series("6.12.1")
    bookworm = profiles.load_profiles().get("bookworm")
    assert not bookworm.release_matches_series("6.12.107+deb13-amd64")


def test_unknown_profile_lists_the_known_ones() -> None:
    with pytest.raises(UsageError, match=r"unknown profile 'jessie' \(known: bookworm"):
        profiles.load_profiles().get("jessie")


def _document() -> dict[str, Any]:
    with profiles.default_profiles_path().open("rb") as f:
        return tomllib.load(f)


def test_a_profile_missing_a_binary_package_is_rejected() -> None:
    data = _document()
    data["profiles"]["trixie"]["packages"].remove("makedumpfile")
    with pytest.raises(UsageError, match="packages must include makedumpfile"):
        profiles.parse_profiles(data, Path("p.toml"))


def test_unknown_flavour_and_bad_module_symbol_are_rejected() -> None:
    data = _document()
    data["profiles"]["sid"]["kernels"]["rt"] = "linux-image-rt-amd64"
    with pytest.raises(UsageError, match="unknown flavours"):
        profiles.parse_profiles(data, Path("p.toml"))
    data = _document()
    data["module_groups"]["net"]["modules"] = {"virtio_net": "VIRTIO_NET"}
    with pytest.raises(UsageError, match="CONFIG_ symbol"):
        profiles.parse_profiles(data, Path("p.toml"))


def test_capture_initrd_subset() -> None:
    capture = profiles.load_profiles().capture
    assert capture is not None
    assert capture.binaries == ("/bin/busybox", "/usr/bin/makedumpfile")
    assert {"blk", "pstore"} <= set(capture.module_groups)
    data = _document()
    data["capture"]["module_groups"].append("nfs")
    with pytest.raises(UsageError, match=r"capture: not defined .*: nfs"):
        profiles.parse_profiles(data, Path("p.toml"))
    data = _document()
    del data["capture"]
    assert profiles.parse_profiles(data, Path("p.toml")).capture is None


def test_broken_toml_is_a_usage_error(tmp_path: Path) -> None:
    path = tmp_path / "profiles.toml"
    path.write_text("[profiles\n")
    with pytest.raises(UsageError, match=r"profiles\.toml"):
        profiles.load_profiles(path)
