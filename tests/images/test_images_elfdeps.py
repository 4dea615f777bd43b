"""Library closure inside the guest packages, and the missing-library message."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from harness.errors import ImageBuildError
from harness.images import elfdeps


def _host_dynamic_binary() -> Path | None:
    for candidate in ("/bin/true", "/usr/bin/true"):
        path = Path(candidate)
        if path.is_file():
            try:
                info = elfdeps.read_elf_info(path)
            except ImageBuildError:
                return None
            if info.needed == ("libc.so.6",) and info.interpreter:
                return path
    return None


HOST_TRUE = _host_dynamic_binary()
needs_host_true = pytest.mark.skipif(HOST_TRUE is None,
                                     reason="needs an x86_64 /bin/true linked only to libc")


@pytest.mark.parametrize(("soname", "package"), [
    ("libc.so.6", "libc6"), ("libz.so.1", "zlib1g"), ("liblzo2.so.2", "liblzo2-2"),
    ("libtomcrypt.so.1", "libtomcrypt1"), ("libbz2.so.1.0", "libbz2-1.0"),
    ("libxenctrl.so.4.20", "libxenmisc4.20"), ("libsnappy.so.1", "libsnappy1"),
])
def test_likely_packages_follow_debian_naming(soname: str, package: str) -> None:
    assert elfdeps.likely_packages(soname)[0] == package


def test_symlinks_resolve_across_the_usr_merge(tmp_path: Path) -> None:
    # bookworm's libc6: the loader in /lib/x86_64-linux-gnu, /lib64 symlinking to it.
    libc = tmp_path / "libc6"
    (libc / "lib" / "x86_64-linux-gnu").mkdir(parents=True)
    (libc / "lib" / "x86_64-linux-gnu" / "ld-linux-x86-64.so.2").write_bytes(b"loader")
    (libc / "lib64").mkdir()
    os.symlink("/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2",
               libc / "lib64" / "ld-linux-x86-64.so.2")
    # trixie's libdw: a relative symlink in /usr/lib.
    libdw = tmp_path / "libdw1t64"
    (libdw / "usr" / "lib" / "x86_64-linux-gnu").mkdir(parents=True)
    (libdw / "usr" / "lib" / "x86_64-linux-gnu" / "libdw-0.192.so").write_bytes(b"dw")
    os.symlink("libdw-0.192.so", libdw / "usr" / "lib" / "x86_64-linux-gnu" / "libdw.so.1")
    files = elfdeps.PackageFiles({"libc6": libc, "libdw1t64": libdw})
    loader = files.resolve("/lib64/ld-linux-x86-64.so.2")
    assert loader is not None and loader.package == "libc6"
    assert loader.path == "usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2"
    found = files.find_library("libdw.so.1")
    assert found is not None and found.disk_path.read_bytes() == b"dw"
    assert files.find_library("libnothere.so.1") is None


def _package_with(root: Path, files: dict[str, Path]) -> Path:
    for rel, source in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(source, root / rel)
    return root


@needs_host_true
def test_missing_library_names_soname_user_and_package(tmp_path: Path) -> None:
    assert HOST_TRUE is not None
    root = _package_with(tmp_path / "coreutils", {"usr/bin/true": HOST_TRUE})
    files = elfdeps.PackageFiles({"coreutils": root})
    binary = files.find_executable("coreutils", "true")
    assert binary is not None
    with pytest.raises(ImageBuildError) as caught:
        elfdeps.library_closure([("/bin/true", binary)], files, profile="trixie",
                                depends=lambda package: ["libc6"])
    error = caught.value
    assert error.message == ("/lib64/ld-linux-x86-64.so.2 (needed by /bin/true) is in none of "
                             "the trixie profile's packages (1 more missing)")
    details = str(error.details)
    assert "libc.so.6 needed by /bin/true (coreutils): probably in libc6 (a dependency of " \
        "coreutils)" in details
    assert "ld-linux-x86-64.so.2 needed by /bin/true (coreutils): probably in libc6" in details
    assert "profiles.trixie.packages" in details


@needs_host_true
def test_closure_resolves_inside_the_packages_only(tmp_path: Path) -> None:
    assert HOST_TRUE is not None
    host_libc = Path("/lib/x86_64-linux-gnu/libc.so.6").resolve()
    host_loader = Path("/lib64/ld-linux-x86-64.so.2").resolve()
    if not (host_libc.is_file() and host_loader.is_file()):
        pytest.skip("needs the host's libc as a fixture")
    roots = {
        "coreutils": _package_with(tmp_path / "coreutils", {"bin/true": HOST_TRUE}),
        "libc6": _package_with(tmp_path / "libc6", {
            "usr/lib/x86_64-linux-gnu/libc.so.6": host_libc,
            "usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2": host_loader}),
    }
    os.makedirs(roots["libc6"] / "usr" / "lib64")
    os.symlink("../lib/x86_64-linux-gnu/ld-linux-x86-64.so.2",
               roots["libc6"] / "usr" / "lib64" / "ld-linux-x86-64.so.2")
    files = elfdeps.PackageFiles(roots)
    binary = files.find_executable("coreutils", "true")
    assert binary is not None and binary.path == "usr/bin/true"
    closure = elfdeps.library_closure([("/bin/true", binary)], files, profile="test")
    assert set(closure.libraries) == {"libc.so.6", "ld-linux-x86-64.so.2"}
    assert all(lib.package == "libc6" for lib in closure.libraries.values())
    assert closure.interpreter is not None and closure.interpreter.package == "libc6"
    assert closure.interpreter_paths == {"/lib64/ld-linux-x86-64.so.2"}


def test_non_elf_is_a_clear_error(tmp_path: Path) -> None:
    script = tmp_path / "script"
    script.write_text("#!/bin/sh\n")
    with pytest.raises(ImageBuildError, match="not a readable ELF file"):
        elfdeps.read_elf_info(script)
