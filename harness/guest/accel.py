"""Choose the accelerator: KVM only when it really runs a Linux kernel, else TCG.

``/dev/kvm`` existing proves nothing (on this project's build machines it is a PVM flavour
that dies with "KVM internal error ... emulation failure" on a normal kernel), so the
probe boots the guest kernel itself for a moment.  The answer is cached per host boot.
"""

from __future__ import annotations

import functools
import json
import os
import select
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from ..errors import HostError, UsageError
from ..timeouts import Deadline, poll
from .process import die_with_parent

QEMU = "qemu-system-x86_64"
#: Oldest QEMU the harness is known to work with (Debian bookworm's).
MIN_QEMU = (7, 2)


@dataclass(frozen=True)
class AccelChoice:
    name: str      # "kvm" or "tcg"
    reason: str


def qemu_binary() -> str:
    path = shutil.which(QEMU)
    if path is None:
        raise HostError(f"{QEMU} not found: install it with `apt-get install qemu-system-x86`")
    return path


def qemu_version_output(binary: str) -> str:
    """``binary --version``, run once per build of it in this process (a run asks twice:
    the version check and the snapshot key; each start of QEMU costs ~40 ms of CPU)."""
    try:
        built = os.stat(binary).st_mtime_ns
    except OSError:
        built = 0
    return _version_output(binary, built)


@functools.lru_cache(maxsize=4)
def _version_output(binary: str, built: int) -> str:
    return subprocess.run([binary, "--version"], capture_output=True, text=True, timeout=10,
                          check=False).stdout


def qemu_version(binary: str | None = None) -> tuple[int, int, int]:
    out = qemu_version_output(binary or qemu_binary())
    first = out.splitlines()[0] if out else ""
    try:
        ver = first.split("version", 1)[1].split()[0]
        parts = [int(p) for p in ver.split("(")[0].split(".")[:3]]
    except (IndexError, ValueError):
        raise HostError(f"cannot read QEMU's version from {first!r}") from None
    while len(parts) < 3:
        parts.append(0)
    version = (parts[0], parts[1], parts[2])
    if version[:2] < MIN_QEMU:
        raise HostError(f"QEMU {ver} is too old: the harness needs {MIN_QEMU[0]}.{MIN_QEMU[1]}+")
    return version


def _cache_file(cache_dir: Path) -> Path:
    """The probe's verdict holds until the host reboots or QEMU changes."""
    try:
        boot_id = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        boot_id = "unknown"
    try:
        qemu = os.stat(qemu_binary()).st_mtime_ns
    except (OSError, HostError):
        qemu = 0
    return cache_dir / f"accel-{boot_id}-{qemu}.json"


def _qemu_refused(out: bytes) -> tuple[bool, str]:
    if b"failed to initialize kvm" in out.lower() or b"Could not access KVM" in out:
        return False, "QEMU could not initialise KVM"
    return False, "a KVM probe boot did not reach the kernel's root mount in time"


def probe_kvm(kernel: Path, timeout: float = 20.0) -> tuple[bool, str]:
    """Boot ``kernel`` under KVM with no root fs: reaching the VFS panic proves KVM works."""
    if not os.access("/dev/kvm", os.R_OK | os.W_OK):
        return False, "/dev/kvm is missing or not accessible"
    argv = [qemu_binary(), "-nodefaults", "-no-user-config", "-display", "none", "-no-reboot",
            "-accel", "kvm", "-cpu", "host", "-m", "256M", "-kernel", str(kernel),
            "-append", "console=ttyS0 panic=-1 loglevel=4", "-serial", "stdio"]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            stdin=subprocess.DEVNULL, start_new_session=True,
                            preexec_fn=die_with_parent)
    stdout = proc.stdout
    assert stdout is not None
    out = bytearray()

    def verdict() -> tuple[bool, str] | None:
        ready, _, _ = select.select([stdout], [], [], 0.2)
        chunk = os.read(stdout.fileno(), 65536) if ready else b""
        out.extend(chunk)
        if b"Unable to mount root" in out or b"Kernel panic" in out:
            return True, "KVM booted the guest kernel"
        if b"KVM internal error" in out or b"emulation failure" in out:
            return False, "KVM cannot run this kernel (KVM internal error)"
        if ready and not chunk:                     # QEMU ended without a verdict
            return _qemu_refused(bytes(out))
        return None

    try:
        found = poll(verdict, deadline=Deadline(timeout, "a KVM probe boot"), interval=0.0)
        return found if found is not None else _qemu_refused(bytes(out))
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()


def choose_accel(requested: str, kernel: Path, cache_dir: Path) -> AccelChoice:
    """Resolve ``auto`` (probe KVM with a short boot, cached per QEMU binary; else TCG),
    ``kvm`` or ``tcg``.  The faces resolve the ``accel`` setting (marker > command line >
    ``KDUMP_HARNESS_ACCEL`` > ini) before a guest is configured."""
    if requested not in ("auto", "kvm", "tcg"):
        raise UsageError(f"accel must be auto, kvm or tcg, not {requested!r}")
    if requested == "tcg":
        return AccelChoice("tcg", "requested")
    cache = _cache_file(cache_dir)
    if requested == "auto" and cache.exists():
        data = json.loads(cache.read_text())
        return AccelChoice(data["name"], data["reason"] + " (cached probe)")
    ok, why = probe_kvm(kernel)
    if requested == "kvm" and not ok:
        raise HostError(f"KVM was requested but does not work: {why}")
    choice = AccelChoice("kvm", why) if ok else AccelChoice("tcg", f"KVM unusable: {why}")
    cache_dir.mkdir(parents=True, exist_ok=True)
    cache.write_text(json.dumps({"name": choice.name, "reason": choice.reason}))
    return choice
