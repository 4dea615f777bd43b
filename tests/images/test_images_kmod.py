"""Module dependency resolution (pure, from mappings) and the .modinfo reader."""

from __future__ import annotations

import lzma
import shutil
import subprocess
from pathlib import Path

import pytest

from harness.errors import ImageBuildError
from harness.images import kmod
from harness.images.cache import default_cache_root

# The 6.1 cloud kernel's virtio stack, as its .modinfo sections declare it.
DEPENDS_6_1 = {
    "virtio_net": ("net_failover", "virtio", "virtio_ring"),
    "net_failover": ("failover",),
    "failover": (),
    "virtio_pci": ("virtio_pci_modern_dev", "virtio", "virtio_ring", "virtio_pci_legacy_dev"),
    "virtio_pci_modern_dev": (),
    "virtio_pci_legacy_dev": (),
    "virtio_ring": (),
    "virtio": (),
    "virtio_blk": ("virtio", "virtio_ring"),
}


def resolve(roots: list[str], depends: dict[str, tuple[str, ...]],
            builtin: set[str] = frozenset(), required: bool = True,  # type: ignore[assignment]
            ) -> kmod.ResolvedGroup:
    return kmod.resolve_group("g", roots, available=depends, builtin=builtin,
                              depends=lambda name: depends[name], required=required)


def test_dependencies_come_first() -> None:
    group = resolve(["virtio_net"], DEPENDS_6_1)
    assert group.load_order == ("failover", "net_failover", "virtio", "virtio_ring", "virtio_net")


def test_shared_dependencies_are_listed_once() -> None:
    group = resolve(["virtio_pci", "virtio_blk"], DEPENDS_6_1)
    assert group.load_order.count("virtio") == 1
    order = group.load_order
    assert order.index("virtio_ring") < order.index("virtio_pci") < order.index("virtio_blk")


def test_builtin_modules_are_skipped() -> None:
    available = {k: v for k, v in DEPENDS_6_1.items() if k not in ("virtio", "virtio_ring")}
    group = resolve(["virtio_net"], available | {"virtio": (), "virtio_ring": ()},
                    builtin={"virtio", "virtio_ring"})
    assert group.load_order == ("failover", "net_failover", "virtio_net")
    assert set(group.builtin) == {"virtio", "virtio_ring"}


def test_builtin_root_needs_nothing() -> None:
    group = resolve(["virtio_pci"], {}, builtin={"virtio_pci"})
    assert group.load_order == () and group.builtin == ("virtio_pci",)


def test_optional_group_records_what_the_kernel_lacks() -> None:
    group = resolve(["9pnet_virtio", "9p"], {}, required=False)
    assert group.load_order == () and group.unavailable == ("9pnet_virtio", "9p")


def test_required_module_missing_is_an_error() -> None:
    with pytest.raises(ImageBuildError, match="virtio_net is neither built into"):
        resolve(["virtio_net"], {})


def test_missing_dependency_names_the_chain() -> None:
    with pytest.raises(ImageBuildError, match="virtio_net -> net_failover"):
        resolve(["virtio_net"], {"virtio_net": ("net_failover",)})


def test_cycles_are_reported() -> None:
    with pytest.raises(ImageBuildError, match="cycle: a -> b -> a"):
        resolve(["a"], {"a": ("b",), "b": ("a",)})


@pytest.mark.parametrize(("path", "name"), [
    ("kernel/drivers/char/hw_random/virtio-rng.ko.xz", "virtio_rng"),
    ("kernel/fs/9p/9p.ko", "9p"),
    ("kernel/net/9p/9pnet_virtio.ko.zst", "9pnet_virtio"),
    ("a/b.ko.gz", "b"),
])
def test_module_names_follow_the_kernel(path: str, name: str) -> None:
    assert kmod.module_name(path) == name


def test_uncompressed_path() -> None:
    assert kmod.uncompressed_path("kernel/x/virtio_net.ko.xz") == "kernel/x/virtio_net.ko"
    assert kmod.uncompressed_path("kernel/x/virtio_net.ko") == "kernel/x/virtio_net.ko"


def test_modinfo_and_builtin_parsing() -> None:
    info = kmod.parse_modinfo(b"license=GPL\0depends=virtio,virtio-ring\0alias=a\0alias=b\0")
    assert info["alias"] == ["a", "b"]
    assert kmod.depends_from_modinfo(info) == ("virtio", "virtio_ring")
    assert kmod.depends_from_modinfo(kmod.parse_modinfo(b"depends=\0")) == ()
    builtin = kmod.parse_modules_builtin("kernel/drivers/virtio/virtio.ko\n"
                                         "kernel/drivers/virtio/virtio_pci.ko\n\n")
    assert builtin == {"virtio", "virtio_pci"}


@pytest.mark.skipif(shutil.which("gcc") is None, reason="needs gcc to make a synthetic module")
def test_modinfo_reader_on_a_synthetic_module(tmp_path: Path) -> None:
    source = tmp_path / "fake.c"
    source.write_text(
        'static const char a[] __attribute__((section(".modinfo"), used)) = "license=GPL";\n'
        'static const char b[] __attribute__((section(".modinfo"), used)) = '
        '"depends=virtio,virtio_ring";\n'
        'static const char c[] __attribute__((section(".modinfo"), used)) = "name=fake";\n')
    subprocess.run(["gcc", "-c", "-o", tmp_path / "fake.ko", source], check=True)
    (tmp_path / "fake.ko.xz").write_bytes(lzma.compress((tmp_path / "fake.ko").read_bytes()))
    (tmp_path / "modules.builtin").write_text("kernel/drivers/virtio/virtio.ko\n")
    tree = kmod.ModuleTree.from_directory(tmp_path)
    assert tree.paths == {"fake": "fake.ko"}  # the first of fake.ko / fake.ko.xz, sorted
    assert tree.depends("fake") == ("virtio", "virtio_ring")
    compressed = (tmp_path / "fake.ko.xz").read_bytes()
    assert kmod.decompress_module("fake.ko.xz", compressed) == (tmp_path / "fake.ko").read_bytes()
    assert tree.builtin == {"virtio"}


def _cached_kernel_deb() -> Path | None:
    debs = default_cache_root() / "debs"
    if not debs.is_dir():
        return None
    # The smallest big package: a cloud kernel's modules (generic ones take seconds to unpack).
    big = [p for p in debs.glob("*.deb") if p.stat().st_size > 20_000_000]
    return min(big, key=lambda p: p.stat().st_size, default=None)


def test_modinfo_reader_on_a_real_debian_module(tmp_path: Path) -> None:
    from harness.images.debs import extract_deb

    deb = _cached_kernel_deb()
    if deb is None:
        pytest.skip("no Debian kernel package in the cache: `kdump-harness images build` first")
    written = extract_deb(deb, tmp_path, lambda p: p.endswith(("/virtio_net.ko",
                                                               "/virtio_net.ko.xz")))
    if not written:
        pytest.skip(f"{deb.name} has no virtio_net module (a split 7.x binary package)")
    elf = kmod.decompress_module(written[0], (tmp_path / written[0]).read_bytes())
    info = kmod.read_modinfo(elf, written[0])
    assert info["name"] == ["virtio_net"]
    assert "net_failover" in kmod.depends_from_modinfo(info)
