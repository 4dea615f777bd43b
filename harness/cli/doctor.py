"""``kdump-harness doctor``: check the host and say what to fix."""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from ..errors import HarnessError
from .common import print_json

#: Free space a cache needs: a few hundred MB of packages and images per profile.
MIN_FREE_BYTES = 2 << 30


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    detail: str
    fix: str = ""


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("doctor", help="check the host: QEMU, KVM, apt, disk, huge pages",
                       description="Check the host and say what to fix.")
    p.add_argument("--probe-kvm", action="store_true",
                   help="boot a cached guest kernel under KVM to see whether KVM really works")
    p.add_argument("--probe", action="store_true",
                   help="also check that the Debian mirror answers (an apt-get update)")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=cmd_doctor)


def check_qemu() -> Check:
    from ..api import QEMU_SURVIVES_CPU_UNPLUG
    from ..guest import accel

    try:
        binary = accel.qemu_binary()
        version = accel.qemu_version(binary)
    except HarnessError as exc:
        return Check("qemu", False, str(exc), "apt-get install qemu-system-x86")
    qboot = Path("/usr/share/qemu/qboot.rom").exists()
    detail = (f"{binary} {'.'.join(map(str, version))}"
              f"{'' if qboot else ' (no qboot.rom: SeaBIOS will be used, slightly slower)'}")
    if version < QEMU_SURVIVES_CPU_UNPLUG:
        # Usable, but swarms that unplug vCPUs end with QEMU aborting.
        return Check("qemu", True, detail + "; aborts after vCPU unplugs",
                     "bash ci/setup-host.sh (installs QEMU 10 from bookworm-backports)")
    return Check("qemu", True, detail)


def check_kvm(probe: bool) -> Check:
    if not os.path.exists("/dev/kvm"):
        return Check("kvm", True, "no /dev/kvm: guests run under TCG (slower, fully supported)")
    if not probe:
        return Check("kvm", True, "/dev/kvm exists; whether it really runs Linux is probed at "
                                  "the first boot (or now with --probe-kvm)")
    from ..api import list_images

    images = list_images()
    if not images:
        return Check("kvm", True, "no built image to probe with", "kdump-harness images build")
    from ..guest import accel

    ok, why = accel.probe_kvm(Path(images[0].kernel_path))
    return Check("kvm", True, ("KVM works: " if ok else "KVM unusable, TCG will be used: ") + why)


def check_apt(probe: bool) -> Check:
    if shutil.which("apt-get") is None or shutil.which("dpkg-deb") is None:
        return Check("apt", False, "apt-get/dpkg-deb not found",
                     "run on Debian or Ubuntu (the image builder downloads Debian packages)")
    from ..images.apt import AptCommandError, AptState, resolve_mirror

    try:
        mirror = resolve_mirror(None)
    except HarnessError as exc:
        return Check("apt", False, str(exc), "pass --mirror URI or set KDUMP_HARNESS_MIRROR")
    if not probe:
        return Check("apt", True, f"Debian mirror {mirror} (reachability: --probe)")
    with tempfile.TemporaryDirectory(prefix="kh-doctor-") as tmp:
        try:
            with AptState(Path(tmp), mirror, ("trixie",)).locked() as state:
                state.update()
        except (AptCommandError, HarnessError) as exc:
            return Check("apt", False, f"{mirror} did not answer: {str(exc).splitlines()[0]}",
                         "check the network or pass another --mirror")
    return Check("apt", True, f"Debian mirror {mirror} answered (apt-get update of trixie)")


def check_disk() -> Check:
    from ..images.cache import default_cache_root

    cache = default_cache_root()
    probe = cache if cache.exists() else cache.parent
    while not probe.exists():
        probe = probe.parent
    free = shutil.disk_usage(probe).free
    ok = free >= MIN_FREE_BYTES
    return Check("disk", ok, f"{free / 2**30:.1f} GiB free for the cache at {cache}",
                 "" if ok else "free some space or point KDUMP_HARNESS_CACHE elsewhere")


def check_tools() -> Check:
    missing = [t for t in ("xz", "zstd") if shutil.which(t) is None]
    if missing:
        return Check("tools", False, f"missing: {', '.join(missing)}",
                     "apt-get install xz-utils zstd lz4")
    if shutil.which("lz4") is None:
        # Not fatal: the capture initrd falls back to zstd (~70 ms slower per capture).
        return Check("tools", True, "xz and zstd present; no lz4: capture initrds are zstd",
                     "apt-get install lz4")
    return Check("tools", True, "xz, zstd and lz4 present")


def check_huge_pages(thp_mode: Path = Path("/sys/kernel/mm/transparent_hugepage/enabled")
                     ) -> Check:
    """Which transparent huge pages QEMU gets (``guest.host_memory``): informational."""
    from ..guest.host_memory import qemu_huge_pages

    try:
        words = thp_mode.read_text().split()
        host = next((w.strip("[]") for w in words if w.startswith("[")), "unknown")
    except OSError:
        host = "unknown"
    tcg, kvm = qemu_huge_pages("tcg"), qemu_huge_pages("kvm")
    return Check("memory", True, f"host THP mode {host}; QEMU under TCG: huge pages "
                                 f"{'on' if tcg.enabled else 'off'}, under KVM: "
                                 f"{'on' if kvm.enabled else 'off'} "
                                 "(KDUMP_HARNESS_HUGE_PAGES=auto|on|off)")


def check_tcg_threads() -> Check:
    """How a TCG guest started now would run its vCPUs (``guest.tcg_threads``)."""
    from ..guest.config import GuestConfig
    from ..guest.tcg_threads import qemu_tcg_threads

    vcpus = GuestConfig().cpus
    choice = qemu_tcg_threads("tcg", vcpus)
    return Check("cpus", True, f"a {vcpus}-vCPU TCG guest started now: thread={choice.mode} "
                               f"({choice.reason}; KDUMP_HARNESS_TCG_THREADS=auto|multi|single)")


def cmd_doctor(args: argparse.Namespace) -> int:
    checks = [check_qemu(), check_kvm(args.probe_kvm), check_apt(args.probe), check_disk(),
              check_tools(), check_huge_pages(), check_tcg_threads()]
    if args.json:
        print_json([c.__dict__ for c in checks])
    else:
        for c in checks:
            print(f"{'ok  ' if c.ok else 'FAIL'} {c.name:6} {c.detail}")
            if c.fix:
                print(f"     {'':6} fix: {c.fix}")
    return 0 if all(c.ok for c in checks) else 1


