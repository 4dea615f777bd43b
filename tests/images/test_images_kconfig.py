"""The kernel config checker."""

from __future__ import annotations

from pathlib import Path

import pytest

from harness.errors import KernelUnsuitable
from harness.images import kconfig
from harness.images.kconfig import REQUIRED_OPTIONS

GOOD = "\n".join(f"{symbol}=y" for symbol, _ in REQUIRED_OPTIONS) + "\nCONFIG_KEXEC=y\n" \
    "CONFIG_MEMORY_HOTREMOVE=y\nCONFIG_LOCALVERSION=\"-test\"\nCONFIG_NR_CPUS=64\n"


def test_parse_values_and_unset_lines() -> None:
    config = kconfig.parse_kernel_config(
        "#\n# comment\nCONFIG_A=y\nCONFIG_B=m\n# CONFIG_C is not set\nCONFIG_S=\"x y\"\n")
    assert config == {"CONFIG_A": "y", "CONFIG_B": "m", "CONFIG_C": "n", "CONFIG_S": "\"x y\""}


def test_a_complete_config_has_no_problems(tmp_path: Path) -> None:
    assert kconfig.check_kernel_config(kconfig.parse_kernel_config(GOOD)) == []
    path = tmp_path / ".config"
    path.write_text(GOOD)
    assert kconfig.check_kernel_config(path) == []


@pytest.mark.parametrize("symbol", ["CONFIG_CRASH_DUMP", "CONFIG_KEXEC_FILE",
                                    "CONFIG_PROC_VMCORE", "CONFIG_MEMORY_HOTPLUG",
                                    "CONFIG_HOTPLUG_CPU"])
def test_each_missing_essential_is_named(symbol: str) -> None:
    text = GOOD.replace(f"{symbol}=y", f"# {symbol} is not set")
    problems = kconfig.check_kernel_config(kconfig.parse_kernel_config(text))
    assert len(problems) == 1 and problems[0].startswith(f"{symbol} is not set (")
    with pytest.raises(KernelUnsuitable, match=symbol):
        kconfig.raise_if_unsuitable(kconfig.parse_kernel_config(text), "test kernel")


def test_absent_symbol_counts_as_unset() -> None:
    text = GOOD.replace("CONFIG_PROC_VMCORE=y\n", "")
    assert any("CONFIG_PROC_VMCORE" in p for p in
               kconfig.check_kernel_config(kconfig.parse_kernel_config(text)))


def test_empty_config_cannot_be_checked() -> None:
    assert kconfig.check_kernel_config({}) == ["the kernel config is empty: cannot check it"]


def test_crash_hotplug_is_information_not_a_problem() -> None:
    without = kconfig.parse_kernel_config(GOOD)
    with_hp = kconfig.parse_kernel_config(GOOD + "CONFIG_CRASH_HOTPLUG=y\n")
    assert not kconfig.has_crash_hotplug(without) and kconfig.has_crash_hotplug(with_hp)
    assert kconfig.check_kernel_config(without) == []
    assert kconfig.describe_kernel_config(without)[0].startswith("crash hot-plug: no")
    assert kconfig.describe_kernel_config(with_hp)[0].startswith("crash hot-plug: yes")


def test_notes_mention_missing_hot_remove() -> None:
    config = kconfig.parse_kernel_config(GOOD.replace("CONFIG_MEMORY_HOTREMOVE=y", ""))
    assert any("DIMM unplug" in note for note in kconfig.describe_kernel_config(config))
