"""Foundation: every profile boots to kdump-ready under QEMU, and bad set-ups fail clearly."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import pytest

from harness.errors import KdumpLoadError
from harness.guest import GuestConfig
from harness.guest.sockdir import sweep_stale

pytestmark = pytest.mark.guest

PROFILES = [pytest.param(p, marks=pytest.mark.profile(p)) for p in ("bookworm", "trixie", "sid")]


@pytest.mark.parametrize("profile", PROFILES)
def test_profile_boots_kdump_ready(make_guest, guest_image, profile: str) -> None:
    guest = make_guest(profile)
    ready = guest.readiness
    image = guest_image(profile)
    assert ready.get("release") == image.kernel_release
    assert ready.kdump_loaded, guest.kdump_output
    assert ready.get("kdump_syscall") == "file"
    assert ready.get("crashkernel").strip(","), "no Crash kernel range in /proc/iomem"
    assert ready.get("cpus_online") == "0-1"
    assert ready.get("cpus_possible") == "0-7", "vCPU hot-plug slots must be possible CPUs"
    # 6.1 has no crash hot-plug: no crash_hotplug sysfs file; 6.6+ reads 1 for file loads.
    expected_hp = "" if profile == "bookworm" else "1"
    assert ready.get("crash_hotplug_memory") == expected_hp
    assert ready.get("crash_hotplug_cpu") == expected_hp
    # Evidence a failing run needs is there from the start.
    for name in ("qemu-cmdline.txt", "console.log", "qmp.jsonl", "readiness.json"):
        assert (guest.workdir / name).exists(), name
    # zstd kernels (trixie, sid) boot uncompressed through PVH; bookworm's LZ4 bzImage as is.
    booted = "vmlinuz" if profile == "bookworm" else "vmlinux"
    assert f"/{booted} " in (guest.workdir / "qemu-cmdline.txt").read_text()
    result = guest.run("echo out; echo err >&2; exit 3")
    assert (result.status, result.stdout, result.stderr) == (3, "out\n", "err\n")
    # Under TCG, IPI shorthand broadcasts would start hot-added vCPUs that were never
    # brought up at the reset vector (qemu_args.GuestKernelOptions): every kernel obeys.
    expected = "disabled" if guest.accel.name == "tcg" else "enabled"
    assert f"IPI shorthand broadcast: {expected}" in guest.run("dmesg", check=True).stdout
    # Under TCG QEMU runs without transparent huge pages (guest.host_memory), and says so.
    huge = "0" if guest.accel.name == "tcg" else "1"
    status = Path(f"/proc/{guest.pid}/status").read_text()
    assert f"THP_enabled:\t{huge}" in status or "THP_enabled" not in status
    note = (guest.workdir / "qemu-cmdline.txt").read_text().splitlines()[-1]
    assert note.startswith("# transparent huge pages " + ("off" if huge == "0" else "on"))


@pytest.mark.profile("trixie")
@pytest.mark.parametrize("mode", [
    pytest.param("multi", marks=pytest.mark.kh(tcg_threads="multi")),
    pytest.param("single", marks=pytest.mark.kh(tcg_threads="single")),
])
def test_tcg_runs_the_vcpus_on_the_threads_asked_for(make_guest, kh_accel: str,
                                                     mode: str) -> None:
    if kh_accel == "kvm":
        pytest.skip("KVM has no TCG threads")
    guest = make_guest("trixie")
    # QEMU's own account: one host thread per vCPU, or one thread for them all.
    threads = {cpu["thread-id"] for cpu in guest.qmp.execute("query-cpus-fast")}
    assert len(threads) == (1 if mode == "single" else guest.config.cpus)
    argv = (guest.workdir / "qemu-cmdline.txt").read_text().splitlines()
    assert f"-accel tcg,thread={mode} " in argv[0]
    assert argv[1] == f"# TCG threads {mode}: tcg_threads={mode}"
    readiness = json.loads((guest.workdir / "readiness.json").read_text())
    assert readiness["tcg_threads"]["mode"] == mode
    assert guest.run("nproc", check=True).stdout.strip() == str(guest.config.cpus)


@pytest.mark.profile("trixie")
def test_classic_kexec_load_with_hotplug(make_guest) -> None:
    # Also the bzImage entry, as a bootloader would start the kernel (its own decompressor).
    guest = make_guest("trixie", kexec="classic", kernel_entry="bzimage")
    assert "/vmlinuz " in (guest.workdir / "qemu-cmdline.txt").read_text()
    assert guest.readiness.get("kdump_syscall") == "classic --hotplug"
    assert guest.readiness.kdump_loaded
    # kexec_load --hotplug images are kernel-updatable too: crash_hotplug reads 1.
    assert guest.readiness.get("crash_hotplug_memory") == "1"


@pytest.mark.profile("trixie")
def test_too_little_memory_for_crashkernel_is_a_clear_kdump_load_error(make_guest) -> None:
    with pytest.raises(KdumpLoadError, match="no crashkernel region is reserved"):
        make_guest("trixie", memory=512 << 20, crashkernel="768M")


@pytest.mark.profile("trixie")
def test_no_qemu_survives_sigkill_of_its_runner(guest_image, tmp_path: Path) -> None:
    """Even ``kill -9`` of the process that owns a guest leaves no QEMU behind."""
    image = guest_image("trixie")
    script = tmp_path / "owner.py"
    script.write_text(textwrap.dedent(f"""
        import sys, time
        from pathlib import Path
        from harness.images import build_image
        from harness.guest import Guest, GuestConfig
        image = build_image("trixie")
        g = Guest(image, GuestConfig(kexec="none", accel="tcg"), Path({str(tmp_path / "g")!r}))
        g.launch()
        print(g.pid, flush=True)
        time.sleep(600)
    """))
    owner = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True)
    try:
        assert owner.stdout is not None
        qemu_pid = int(owner.stdout.readline())
        assert image.kernel_path.exists()
        os.kill(qemu_pid, 0)   # running
        owner.send_signal(signal.SIGKILL)
        owner.wait(10)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                os.kill(qemu_pid, 0)
            except ProcessLookupError:
                break
            # A zombie (reparented, not yet reaped) counts as gone.
            stat = Path(f"/proc/{qemu_pid}/stat")
            if stat.exists() and stat.read_text().split(") ", 1)[1].startswith("Z"):
                break
            time.sleep(0.1)
        else:
            os.kill(qemu_pid, signal.SIGKILL)
            pytest.fail(f"QEMU {qemu_pid} outlived its SIGKILLed runner")
        # Its socket directory outlives it, until a harness starts its next guest.
        left = list(Path(tempfile.gettempdir()).glob(f"kh-{owner.pid}-*"))
        assert left, "the killed runner's socket directory"
        assert set(sweep_stale()) >= set(left)
        assert not any(d.exists() for d in left)
    finally:
        if owner.poll() is None:
            owner.kill()


def test_guest_config_rejects_bad_values() -> None:
    from harness.errors import UsageError

    for bad in (dict(kexec="sideways"), dict(capture_mode="zip"), dict(firmware="uefi"),
                dict(memory=256 << 20), dict(kernel_entry="efi"), dict(boot_retries=-1)):
        with pytest.raises(UsageError):
            GuestConfig(**bad).validate()  # type: ignore[arg-type]
