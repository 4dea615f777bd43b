"""What the plugin says before and after the run: the accelerator, QEMU, the kernels.

Before (the report header): the accelerator setting and, when a KVM probe already ran on
this host, its answer; the QEMU version; each selected profile's kernel release where its
image is built (the first guest test builds the rest).  After (the terminal summary): the
accelerators that actually ran and the kernel releases the guests booted, gathered from
the tests' JUnit properties (which reach the controller from every xdist worker).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path

from ..errors import HarnessError


def qemu_line() -> str:
    from ..guest.accel import qemu_binary, qemu_version

    try:
        return "QEMU " + ".".join(map(str, qemu_version(qemu_binary())))
    except HarnessError as exc:
        return f"QEMU unusable ({exc.message})"


def kvm_probe_line(cache_root: Path) -> str:
    """The cached KVM probe's answer for this host and QEMU, if a guest ran already."""
    from ..guest.accel import _cache_file

    try:
        data = json.loads(_cache_file(cache_root).read_text())
    except (OSError, ValueError, HarnessError):
        return "KVM not probed yet"
    return f"KVM probe: {data.get('name')} ({data.get('reason')})"


def kernel_lines(profiles: Iterable[str]) -> list[str]:
    """``trixie 6.12.117+deb13-cloud-amd64`` for each profile whose image is built."""
    from ..images import image_path
    from ..images.image import GuestImage, is_complete

    out = []
    for profile in profiles:
        try:
            directory = image_path(profile)
            release = (GuestImage.load(directory, cached=True).kernel_release
                       if is_complete(directory) else "not built yet")
        except (HarnessError, OSError, KeyError) as exc:
            release = f"unknown ({exc})"
        out.append(f"{profile} {release}")
    return out


def seen(properties: Iterable[tuple[str, object]], name: str) -> list[str]:
    """The distinct values of JUnit property ``name``, in order of appearance."""
    values = [str(v) for k, v in properties if k == name and v]
    return list(dict.fromkeys(values))
