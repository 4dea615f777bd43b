"""Building images: cache keys (plan.py), your own kernel (kernel.py), concurrent builds
(builder.py), real offline builds, the lock fallback (lock_fallback.py) and pruning
(cached_images.py)."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import struct
import subprocess
import threading
import time
from pathlib import Path
from types import MappingProxyType
from typing import Any

import pytest

from harness import settings
from harness.errors import ImageBuildError, KernelUnsuitable, UsageError
from harness.images import builder, cached_images, cpio, elfdeps, lock_fallback
from harness.images.image import GuestImage
from harness.images.kconfig import REQUIRED_OPTIONS
from harness.images.kernel import custom_kernel
from harness.images.lockfile import LockedFlavour, load_lock, lock_file_path
from harness.images.packages import PinnedVersionGone
from harness.images.plan import BuildPlan, plan_build


def fake_bzimage(path: Path, release: str = "7.1.0-rc3+") -> Path:
    blob = bytearray(0x1000)
    struct.pack_into("<H", blob, 0x1FE, 0xAA55)
    blob[0x202:0x206] = b"HdrS"
    struct.pack_into("<H", blob, 0x20E, 0x800 - 0x200)
    version = f"{release} (dev@example) #1 SMP\0".encode()
    blob[0x800:0x800 + len(version)] = version
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(bytes(blob))
    return path


def good_config(path: Path, extra: str = "") -> Path:
    path.write_text("\n".join(f"{symbol}=y" for symbol, _ in REQUIRED_OPTIONS) + "\n" + extra)
    return path


# -- keys and planning ---------------------------------------------------------------------


def test_key_is_stable_and_follows_every_input(rootfs: Path) -> None:
    key = plan_build("trixie", rootfs=rootfs).key
    assert plan_build("trixie", rootfs=rootfs).key == key
    assert plan_build("trixie", flavour="generic", rootfs=rootfs).key != key
    assert plan_build("bookworm", rootfs=rootfs).key != key
    (rootfs / "harness" / "lib.sh").write_text("changed\n")
    changed = plan_build("trixie", rootfs=rootfs).key
    assert changed != key
    os.chmod(rootfs / "harness" / "lib.sh", 0o755)
    assert plan_build("trixie", rootfs=rootfs).key != changed


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"flavour": "rt"}, "unknown flavour 'rt'"),
    ({"modules_dir": Path("/tmp")}, "needs your own kernel"),
    ({"kernel": Path("/nonexistent/bzImage")}, "no such file"),
])
def test_bad_requests_are_usage_errors(rootfs: Path, kwargs: dict[str, Any],
                                       message: str) -> None:
    with pytest.raises(UsageError, match=message):
        plan_build("trixie", rootfs=rootfs, **kwargs)


def test_rootfs_needs_an_executable_init(rootfs: Path) -> None:
    os.chmod(rootfs / "init", 0o644)
    with pytest.raises(UsageError, match="no executable init"):
        plan_build("trixie", rootfs=rootfs)


def test_custom_kernel_finds_modules_and_config_of_a_build_tree(tmp_path: Path) -> None:
    tree = tmp_path / "linux"
    kernel = fake_bzimage(tree / "arch" / "x86" / "boot" / "bzImage")
    good_config(tree / ".config")
    modules = tmp_path / "mods"
    (modules / "lib" / "modules" / "7.1.0-rc3+" / "kernel").mkdir(parents=True)
    custom = custom_kernel(kernel, modules, None)
    assert custom.release == "7.1.0-rc3+"
    assert custom.modules == modules / "lib" / "modules" / "7.1.0-rc3+"
    assert custom.config == tree / ".config" and custom.config_source == str(tree / ".config")


def test_custom_kernel_with_modules_of_another_release(tmp_path: Path) -> None:
    kernel = fake_bzimage(tmp_path / "bzImage")
    (tmp_path / "mods" / "lib" / "modules" / "6.99.0" / "kernel").mkdir(parents=True)
    with pytest.raises(UsageError, match=r"no lib/modules/7.1.0-rc3\+ .*found: 6.99.0"):
        custom_kernel(kernel, tmp_path / "mods", None)


# -- caching and concurrency (the build itself replaced by a fake) ----------------------------


def _fake_build(calls: list[str], delay: float = 0.0) -> Any:
    def build(plan: BuildPlan, cache: Any, mirror: Any, staging: Path,
              output: Path) -> dict[str, Any]:
        calls.append(plan.key)
        time.sleep(delay)
        for name in ("vmlinuz", "userspace.cpio", "capture.cpio", "initrd.cpio"):
            (output / name).write_bytes(name.encode())
        return {"profile": plan.profile.name, "flavour": plan.flavour,
                "kernel_release": "6.12.0", "crash_hotplug": True, "packages": {},
                "module_groups": {}, "builtin_modules": {}, "unavailable_modules": {},
                "key": plan.key, "sizes": {}}
    return build


def test_concurrent_requests_build_once(rootfs: Path, cache_dir: Path,
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[str] = []
    monkeypatch.setattr(builder, "_build", _fake_build(calls, delay=0.3))
    results: list[GuestImage] = []

    def worker() -> None:
        results.append(builder.build_image("trixie", rootfs=rootfs, cache_dir=cache_dir))

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(calls) == 1
    assert sorted(r.cached for r in results) == [False, True, True, True]
    assert len({r.directory for r in results}) == 1
    assert [p.name for p in (cache_dir / "images").iterdir()] == [results[0].directory.name]


def test_rebuild_replaces_files_in_place(rootfs: Path, cache_dir: Path,
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[str] = []
    monkeypatch.setattr(builder, "_build", _fake_build(calls))
    first = builder.build_image("trixie", rootfs=rootfs, cache_dir=cache_dir)
    inode = first.directory.stat().st_ino
    again = builder.build_image("trixie", rootfs=rootfs, cache_dir=cache_dir)
    assert again.cached and len(calls) == 1
    rebuilt = builder.build_image("trixie", rootfs=rootfs, cache_dir=cache_dir, rebuild=True)
    assert not rebuilt.cached and len(calls) == 2
    assert rebuilt.directory.stat().st_ino == inode and rebuilt.built_at > first.built_at
    assert cached_images.image_path("trixie", rootfs=rootfs, cache_dir=cache_dir) == first.directory
    assert [i.directory for i in cached_images.list_images(cache_dir)] == [first.directory]


def test_custom_kernel_config_is_checked_before_any_download(
        tmp_path: Path, rootfs: Path, cache_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def no_network(*args: object, **kwargs: object) -> None:
        raise AssertionError("tried to fetch packages")
    monkeypatch.setattr(builder, "fetch_debs", no_network)
    kernel = fake_bzimage(tmp_path / "bzImage")
    config = good_config(tmp_path / "config").read_text().replace("CONFIG_CRASH_DUMP=y", "")
    (tmp_path / "config").write_text(config)
    with pytest.raises(KernelUnsuitable, match="CONFIG_CRASH_DUMP is not set"):
        builder.build_image("trixie", kernel=kernel, config=tmp_path / "config",
                            rootfs=rootfs, cache_dir=cache_dir)
    good_config(tmp_path / "config", "CONFIG_VIRTIO_NET=m\n")
    with pytest.raises(UsageError, match=r"virtio_net is a module \(CONFIG_VIRTIO_NET=m\)"):
        builder.build_image("trixie", kernel=kernel, config=tmp_path / "config",
                            rootfs=rootfs, cache_dir=cache_dir)


# -- a real build from cached packages (no network) -----------------------------------------


def _seed_debs(user_cache: Path, cache_dir: Path, profile: str, flavour: str,
               userspace_only: bool = False) -> None:
    locked = load_lock(lock_file_path()).flavour(profile, flavour)
    wanted = locked.userspace() if userspace_only else locked.packages
    missing = [n for n, p in wanted.items()
               if not (user_cache / "debs" / f"{p.sha256}.deb").is_file()]
    if missing:
        pytest.skip(f"packages not cached ({', '.join(missing[:3])}...): run "
                    f"`kdump-harness images build --profile {profile}` once to enable this test")
    (cache_dir / "debs").mkdir(parents=True, exist_ok=True)
    for package in wanted.values():
        source = user_cache / "debs" / f"{package.sha256}.deb"
        target = cache_dir / "debs" / source.name
        try:
            os.link(source, target)
        except OSError:
            shutil.copy(source, target)


@pytest.fixture
def offline(monkeypatch: pytest.MonkeyPatch) -> None:
    from harness.images import apt

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("a build from a warm cache must not use apt")
    monkeypatch.setattr(apt.AptState, "__init__", refuse)


def _archive(path: Path) -> dict[str, cpio.ParsedEntry]:
    (archive,) = cpio.read_newc(path.read_bytes())
    return {e.path: e for e in archive}


@pytest.mark.usefixtures("offline")
def test_real_trixie_build_from_cached_packages(user_cache: Path, cache_dir: Path,
                                                rootfs: Path, tmp_path: Path) -> None:
    _seed_debs(user_cache, cache_dir, "trixie", "cloud")
    image = builder.build_image("trixie", rootfs=rootfs, cache_dir=cache_dir)
    assert image.kernel_release.startswith("6.12.") and image.crash_hotplug
    # Debian's zstd trixie kernel has CONFIG_PVH: the guest boots the uncompressed vmlinux.
    assert image.pvh_kernel_path is not None
    assert image.pvh_kernel_path.read_bytes()[:4] == b"\x7fELF"
    assert image.kernel_config["CONFIG_CRASH_DUMP"] == "y"
    members = _archive(image.initrd_path.parent / "userspace.cpio")
    for path in ("init", "bin/busybox", "sbin/kexec", "usr/bin/makedumpfile",
                 "usr/sbin/dropbear", "usr/bin/dropbearkey", "dev/console", "etc/passwd"):
        assert path in members, path
    # The capture kernel's initrd keeps what profiles.toml's [capture] names, and whatever
    # those binaries need.
    capture = _archive(image.capture_initrd_path)
    for path in ("init", "bin/busybox", "usr/bin/makedumpfile",
                 "lib/x86_64-linux-gnu/libc.so.6", "etc/harness/modules/blk"):
        assert path in capture, path
    for path in ("sbin/kexec", "usr/sbin/dropbear", "etc/harness/modules/net",
                 "lib/x86_64-linux-gnu/libtomcrypt.so.1"):
        assert path not in capture, path
    assert len(image.capture_initrd_path.read_bytes()) < 0.8 * len(
        (image.initrd_path.parent / "userspace.cpio").read_bytes())
    assert members["lib64/ld-linux-x86-64.so.2"].data == \
        b"/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2"
    # Every DT_NEEDED of every ELF file in either archive is in that archive.
    for archive in (members, capture):
        for path, entry in archive.items():
            if entry.data[:4] == b"\x7fELF" and not path.startswith("lib/modules/"):
                (tmp_path / "elf").write_bytes(entry.data)
                for soname in elfdeps.read_elf_info(tmp_path / "elf").needed:
                    assert f"lib/x86_64-linux-gnu/{soname}" in archive, (path, soname)
    # Module group files list absolute guest paths that exist, dependencies first.
    net = members["etc/harness/modules/net"].data.decode().split()
    assert [p.rsplit("/", 1)[1] for p in net][-1] == "virtio_net.ko"
    assert all(p[1:] in members and members[p[1:]].data[:4] == b"\x7fELF" for p in net)
    assert members["etc/harness/modules/base"].data == b""  # virtio_pci is built in on 6.12
    assert image.builtin_modules["base"] == ("virtio_pci",)
    assert image.unavailable_modules["9p"] == ("9pnet_virtio", "9p")  # no 9p in cloud
    manifest = json.loads(members["etc/harness/image.json"].data)
    assert manifest["kernel_release"] == image.kernel_release
    assert manifest["module_groups"]["net"]["load"] == net
    # The first kernel's initrd adds the kernel and the capture initrd.
    userspace, boot = cpio.read_newc(image.initrd_path.read_bytes())
    assert len(userspace) == len(members)
    boot_files = {e.path: e.data for e in boot}
    # The inner copy is lz4-compressed in the legacy frame format, the only one the
    # kernel's initramfs unpacker reads (the kernel has RD_LZ4); it unpacks to the same.
    inner = boot_files["boot/capture.cpio"]
    assert inner[:4] == b"\x02\x21\x4c\x18", "lz4 legacy frame magic"
    unpacked = subprocess.run(["lz4", "-d", "-c"], input=inner, capture_output=True, check=True)
    assert unpacked.stdout == image.capture_initrd_path.read_bytes()
    assert boot_files["boot/vmlinuz"] == image.kernel_path.read_bytes()
    # (Byte-for-byte reproducibility across rebuilds is checked by harness.bench.images.)


@pytest.mark.usefixtures("offline")
def test_custom_kernel_without_modules_uses_the_config(user_cache: Path, cache_dir: Path,
                                                       rootfs: Path, tmp_path: Path) -> None:
    _seed_debs(user_cache, cache_dir, "trixie", "cloud", userspace_only=True)
    kernel = fake_bzimage(tmp_path / "bzImage")
    config = good_config(tmp_path / "config", "CONFIG_VIRTIO_PCI=y\nCONFIG_VIRTIO_NET=y\n"
                                              "CONFIG_VIRTIO_BLK=y\nCONFIG_CRASH_HOTPLUG=y\n")
    image = builder.build_image("trixie", kernel=kernel, config=config, rootfs=rootfs,
                                cache_dir=cache_dir)
    assert image.flavour == "custom" and image.kernel_release == "7.1.0-rc3+"
    assert image.crash_hotplug and image.config_source == str(config)
    assert image.builtin_modules["net"] == ("virtio_net",)
    assert image.unavailable_modules["9p"] == ("9pnet_virtio", "9p")
    assert not any(name.startswith("linux-") for name in image.packages)
    assert image.kernel_path.read_bytes() == kernel.read_bytes()


def test_missing_package_file_without_network_is_clear(rootfs: Path, cache_dir: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    from harness.images import packages

    def no_mirror(mirror: str | None) -> str:
        raise ImageBuildError("no network in this test")
    monkeypatch.setattr(packages, "resolve_mirror", no_mirror)
    with pytest.raises(ImageBuildError, match="no network in this test"):
        builder.build_image("trixie", rootfs=rootfs, cache_dir=cache_dir)


# -- the archive dropped a pinned version (every Debian point release does) ---------------------


def _newer(flavour: LockedFlavour, name: str) -> LockedFlavour:
    """The lock's flavour with ``name`` at a newer version (as the archive has it now)."""
    old = flavour.packages[name]
    packages = dict(flavour.packages)
    packages[name] = dataclasses.replace(old, version=old.version + "+really.newer",
                                         sha256="ab" * 32)
    return LockedFlavour(flavour.kernel, MappingProxyType(packages))


@pytest.fixture
def moved_archive(monkeypatch: pytest.MonkeyPatch) -> tuple[list[str], list[str]]:
    """The archive has moved on past the lock's libc6: ``_build`` fails for plans that
    still pin it, and resolving the current versions gives a newer one.  Returns the
    build calls and the resolutions, for counting."""
    locked = load_lock(lock_file_path()).flavour("trixie", "cloud")
    calls: list[str] = []
    resolves: list[str] = []
    fake = _fake_build(calls)

    def build(plan: BuildPlan, cache: Any, mirror: Any, staging: Path,
              output: Path) -> dict[str, Any]:
        if plan.packages["libc6"] == locked.packages["libc6"]:
            raise PinnedVersionGone("libc6 gone", package=locked.packages["libc6"])
        return fake(plan, cache, mirror, staging, output)  # type: ignore[no-any-return]

    def resolve(cache: Any, profile: Any, flavour: str, mirror: Any) -> LockedFlavour:
        resolves.append(flavour)
        return _newer(locked, "libc6")

    monkeypatch.setattr(builder, "_build", build)
    monkeypatch.setattr(lock_fallback, "resolve_current_flavour", resolve)
    return calls, resolves


def test_a_dropped_pin_falls_back_to_the_current_version_and_says_so(
        rootfs: Path, cache_dir: Path, moved_archive: tuple[list[str], list[str]]) -> None:
    calls, resolves = moved_archive
    image = builder.build_image("trixie", rootfs=rootfs, cache_dir=cache_dir)
    old = load_lock(lock_file_path()).flavour("trixie", "cloud").packages["libc6"]
    assert dict(image.lock_drift) == {"libc6": (old.version, old.version + "+really.newer")}
    assert "libc6" in image.drift_summary() and "packages.lock.json" in image.drift_summary()
    assert len(calls) == 1 and resolves == ["cloud"]
    # The fallback is remembered: the next request finds its image without the archive.
    again = builder.build_image("trixie", rootfs=rootfs, cache_dir=cache_dir)
    assert again.cached and again.directory == image.directory
    assert again.lock_drift == image.lock_drift
    assert len(calls) == 1 and resolves == ["cloud"]


def test_a_dropped_pin_is_an_error_under_the_strict_policy(
        rootfs: Path, cache_dir: Path, moved_archive: tuple[list[str], list[str]],
        monkeypatch: pytest.MonkeyPatch) -> None:
    calls, resolves = moved_archive
    with pytest.raises(ImageBuildError, match=r"libc6 gone .*strict lock"):
        builder.build_image("trixie", rootfs=rootfs, cache_dir=cache_dir, lock="strict")
    monkeypatch.setenv("KDUMP_HARNESS_LOCK", "strict")
    with settings.configured(), pytest.raises(ImageBuildError, match="strict lock"):
        builder.build_image("trixie", rootfs=rootfs, cache_dir=cache_dir)
    assert resolves == [] and calls == []
    monkeypatch.setenv("KDUMP_HARNESS_LOCK", "loose")
    with pytest.raises(UsageError, match="KDUMP_HARNESS_LOCK='loose': expected one of "
                                         "prefer, strict"):
        settings.from_sources()


def test_an_image_that_follows_the_lock_reports_no_drift(
        rootfs: Path, cache_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(builder, "_build", _fake_build([]))
    image = builder.build_image("trixie", rootfs=rootfs, cache_dir=cache_dir)
    assert image.lock_drift == {} and image.drift_summary() == ""


def test_prune_keeps_the_current_images_and_removes_what_changes_left_behind(
        rootfs: Path, cache_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(builder, "_build", _fake_build([]))
    old = builder.build_image("trixie", rootfs=rootfs, cache_dir=cache_dir)
    (rootfs / "harness" / "lib.sh").write_text("changed\n")     # a new image key
    current = builder.build_image("trixie", rootfs=rootfs, cache_dir=cache_dir)
    kernel = fake_bzimage(tmp_path / "bzImage")
    custom = builder.build_image("trixie", kernel=kernel, config=good_config(tmp_path / "cfg"),
                                 rootfs=rootfs, cache_dir=cache_dir)
    assert len({old.directory, current.directory, custom.directory}) == 3

    would = cached_images.prune_images(cache_dir, rootfs=rootfs, dry_run=True, keep_custom=True)
    assert [d for d, _ in would] == [old.directory] and old.directory.exists()
    gone = cached_images.prune_images(cache_dir, rootfs=rootfs)
    assert {d for d, _ in gone} == {old.directory, custom.directory}
    assert all(size > 0 for _, size in gone)
    assert current.directory.exists() and not old.directory.exists()
    assert builder.build_image("trixie", rootfs=rootfs, cache_dir=cache_dir).cached
