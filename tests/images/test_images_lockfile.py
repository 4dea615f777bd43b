"""The lock file: parsing, stable serialisation, hash verification, the committed lock."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from harness.errors import ImageBuildError, UsageError
from harness.images import lockfile
from harness.images.builder import lock_file_path
from harness.images.profiles import load_profiles

SHA = "ab" * 32


def sample() -> dict[str, object]:
    pkg = {"version": "1:1.37.0-6+b9", "architecture": "amd64", "size": 3,
           "filename": "pool/main/b/busybox/busybox-static_1.37.0-6+b9_amd64.deb", "sha256": SHA}
    kernel = {"version": "6.12.107-1", "architecture": "amd64", "size": 3, "sha256": SHA,
              "filename": "pool/main/l/linux-signed-amd64/linux-image-6.12_amd64.deb"}
    return {"format": 1, "profiles": {"trixie": {"suites": ["trixie"], "flavours": {"cloud": {
        "kernel": {"metapackage": "linux-image-cloud-amd64", "metapackage_version": "6.12.107-1",
                   "release": "6.12.107+deb13-cloud-amd64",
                   "packages": ["linux-image-6.12.107+deb13-cloud-amd64"]},
        "packages": {"busybox-static": pkg, "linux-image-6.12.107+deb13-cloud-amd64": kernel},
    }}}}}


def test_round_trip_is_byte_stable() -> None:
    lock = lockfile.parse_lock(sample())
    text = lockfile.dumps_lock(lock)
    assert text.endswith("}\n")
    assert lockfile.dumps_lock(lockfile.loads_lock(text)) == text
    assert json.loads(text)["profiles"]["trixie"]["flavours"]["cloud"]["packages"][
        "busybox-static"]["sha256"] == SHA


def test_userspace_excludes_the_kernel() -> None:
    flavour = lockfile.parse_lock(sample()).flavour("trixie", "cloud")
    assert list(flavour.userspace()) == ["busybox-static"]


def test_missing_profile_says_how_to_fix() -> None:
    with pytest.raises(ImageBuildError, match="images update --profile sid"):
        lockfile.parse_lock(sample()).flavour("sid", "cloud")


@pytest.mark.parametrize(("edit", "message"), [
    (lambda p: p.update(sha256="xyz"), "sha256 is not 64 hex digits"),
    (lambda p: p.pop("version"), "bad or missing field"),
    (lambda p: p.update(filename="busybox.tar"), "must be a .deb pool path"),
])
def test_bad_entries_are_rejected(edit: object, message: str) -> None:
    data = sample()
    flavours = data["profiles"]["trixie"]["flavours"]  # type: ignore[index]
    package = flavours["cloud"]["packages"]["busybox-static"]
    edit(package)  # type: ignore[operator]
    with pytest.raises(UsageError, match=message):
        lockfile.parse_lock(data)


def test_unknown_format_is_rejected() -> None:
    with pytest.raises(UsageError, match="unsupported lock format"):
        lockfile.parse_lock({"format": 99})


def test_verify_accepts_match_and_names_a_mismatch(tmp_path: Path) -> None:
    deb = tmp_path / "busybox.deb"
    deb.write_bytes(b"abc")
    good = lockfile.LockedPackage("busybox-static", "1.0", "amd64", "pool/x.deb",
                                  hashlib.sha256(b"abc").hexdigest(), 3)
    lockfile.verify_package_file(good, deb)
    bad = lockfile.LockedPackage("busybox-static", "1.0", "amd64", "pool/x.deb", SHA, 3)
    with pytest.raises(ImageBuildError, match=f"SHA256 mismatch for busybox-static 1.0: the "
                                              f"lock says {SHA}"):
        lockfile.verify_package_file(bad, deb)


def test_save_is_atomic_and_missing_file_is_empty(tmp_path: Path) -> None:
    path = tmp_path / "packages.lock.json"
    assert lockfile.load_lock(path).profiles == {}
    lockfile.save_lock(lockfile.parse_lock(sample()), path)
    assert lockfile.load_lock(path).flavour("trixie", "cloud").kernel.release.startswith("6.12")
    assert [p.name for p in tmp_path.iterdir()] == ["packages.lock.json"]


def test_committed_lock_covers_every_profile_and_flavour() -> None:
    path = lock_file_path()
    text = path.read_text()
    lock = lockfile.loads_lock(text, str(path))
    assert lockfile.dumps_lock(lock) == text, "not in canonical form: regenerate it"
    profiles = load_profiles()
    for profile in profiles.profiles.values():
        for flavour in profile.kernels:
            locked = lock.flavour(profile.name, flavour)
            assert set(profile.packages) <= set(locked.packages), (profile.name, flavour)
            assert profile.release_matches_series(locked.kernel.release)
            assert locked.kernel.packages[0] == f"linux-image-{locked.kernel.release}"
