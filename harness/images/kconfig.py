"""Kernel configuration: parse a .config and say whether the kernel can do the job.

The harness needs kdump (a crash kernel loaded with kexec_file_load, /proc/vmcore in the
capture kernel) and memory/CPU hot-plug; a kernel missing any of that would only fail later,
inside a slow TCG boot, with a confusing symptom. Checking the config first turns that into
one clear ``KernelUnsuitable`` message.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path

from ..errors import KernelUnsuitable

#: Options the harness cannot work without: (symbol, why).
REQUIRED_OPTIONS: tuple[tuple[str, str], ...] = (
    ("CONFIG_CRASH_DUMP", "kdump: the kernel cannot act as (or load) a capture kernel"),
    ("CONFIG_KEXEC_FILE", ("kdump: `kexec -s -p` (kexec_file_load) is how the harness loads "
                          "the capture kernel")),
    ("CONFIG_PROC_VMCORE", "kdump: the capture kernel exposes the dump as /proc/vmcore"),
    ("CONFIG_RELOCATABLE", "kdump: the same bzImage must run from the crashkernel= region"),
    ("CONFIG_MEMORY_HOTPLUG", "hot-plug: DIMMs cannot be added"),
    ("CONFIG_HOTPLUG_CPU", "hot-plug: vCPUs cannot be added"),
    ("CONFIG_BLK_DEV_INITRD", "boot: the guest userspace is an initramfs"),
    ("CONFIG_DEVTMPFS", "boot: /init mounts devtmpfs to find the dump disks"),
)

_LINE = re.compile(r"^(CONFIG_[A-Za-z0-9_]+)=(.*)$")
_UNSET = re.compile(r"^# (CONFIG_[A-Za-z0-9_]+) is not set$")


def parse_kernel_config(text: str) -> dict[str, str]:
    """``CONFIG_X=value`` lines -> {symbol: value}; "is not set" lines map to ``"n"``.

    String values keep their quotes, as in the file.
    """
    config: dict[str, str] = {}
    for line in text.splitlines():
        line = line.strip()
        if match := _LINE.match(line):
            config[match[1]] = match[2]
        elif match := _UNSET.match(line):
            config[match[1]] = "n"
    return config


def load_kernel_config(path: Path) -> dict[str, str]:
    return parse_kernel_config(path.read_text(errors="replace"))


def _enabled(config: Mapping[str, str], symbol: str) -> bool:
    return config.get(symbol, "n") in ("y", "m")


def check_kernel_config(config: Mapping[str, str] | Path) -> list[str]:
    """Problems that rule this kernel out for the harness (empty list: suitable).

    Each problem names the missing option and what it breaks. Crash hot-plug
    (CONFIG_CRASH_HOTPLUG) is *not* a problem: kernels without it (6.1) are the negative
    control; see ``describe_kernel_config``.
    """
    if isinstance(config, Path):
        config = load_kernel_config(config)
    if not config:
        return ["the kernel config is empty: cannot check it"]
    return [f"{symbol} is not set ({why})" for symbol, why in REQUIRED_OPTIONS
            if not _enabled(config, symbol)]


def has_crash_hotplug(config: Mapping[str, str]) -> bool:
    """Does the kernel rewrite the kdump elfcorehdr itself on hot-plug (6.6+ option)?"""
    return _enabled(config, "CONFIG_CRASH_HOTPLUG")


def describe_kernel_config(config: Mapping[str, str]) -> list[str]:
    """Informational notes: features that change what a test can expect."""
    notes = []
    if has_crash_hotplug(config):
        notes.append("crash hot-plug: yes (CONFIG_CRASH_HOTPLUG): the kernel updates the "
                     "kdump image on hot-plug")
    else:
        notes.append("crash hot-plug: no (CONFIG_CRASH_HOTPLUG unset or unknown, as on 6.1): "
                     "the kdump image goes stale on hot-plug unless userspace reloads it")
    if not _enabled(config, "CONFIG_MEMORY_HOTREMOVE"):
        notes.append("memory hot-remove: no (CONFIG_MEMORY_HOTREMOVE): DIMM unplug will fail")
    if not _enabled(config, "CONFIG_KEXEC"):
        notes.append("classic kexec_load: no (CONFIG_KEXEC): only `kexec -s` works")
    if config.get("CONFIG_KEXEC_SIG_FORCE") == "y":
        notes.append("CONFIG_KEXEC_SIG_FORCE=y: kexec_file_load accepts signed kernels only")
    return notes


def raise_if_unsuitable(config: Mapping[str, str], what: str) -> None:
    """``KernelUnsuitable`` listing every problem ``check_kernel_config`` finds."""
    problems = check_kernel_config(config)
    if problems:
        raise KernelUnsuitable(
            f"{what} cannot run the kdump hot-plug tests: {problems[0]}"
            + (f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""),
            details="\n".join(problems))
