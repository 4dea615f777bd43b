"""Catalogue scenario 12 and the plugin as its users meet it.

Your own kernel runs the DIMM burst through the API; the README's example test, run by a
separate pytest exactly as a reader would, passes and leaves its JUnit properties; and
``kill -9`` of that pytest leaves no QEMU behind.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from kernel_tree import debian_kernel_as_build_tree

from harness.plugin.scenario import OwnKernel, Scenario
from harness.results import Result

pytestmark = pytest.mark.guest

README = Path(__file__).resolve().parent.parent / "README.md"


def readme_example() -> str:
    """The test the README offers for copying, as printed there."""
    m = re.search(r"<!-- example: test_mine.py -->\n```python\n(.*?)```\n<!-- /example -->",
                  README.read_text(), re.S)
    assert m, "the README lost its example test"
    return m.group(1)


def pytest_command(where: Path, accel: str, *args: str) -> list[str]:
    """A separate pytest in ``where`` (its own rootdir: no ini, the installed plugin)."""
    return [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "--rootdir", str(where),
            "--kh-accel", accel, "--kh-artifacts", str(where / "artifacts"), *args]


# 12. Your own kernel: a kernel passed by file runs scenario 1.
@pytest.mark.seed001
@pytest.mark.profile("trixie")
def test_your_own_kernel_runs_the_dimm_burst(kdump: Scenario, guest_image,
                                             tmp_path: Path) -> None:
    tree = debian_kernel_as_build_tree(guest_image("trixie"), tmp_path)
    mine = OwnKernel(tree.bzimage, tree.modules)
    image = guest_image("trixie", kernel=mine)
    try:
        job = kdump.run("trixie", kernel=mine, dimms="8x256M", add_cpus=2)
        assert job.result is Result.ACCURATE, job.reason
        assert job.kernel_release == tree.release
        assert image.custom_kernel
        assert image.config_source == str(tree.bzimage.parents[3] / ".config")
        assert image.module_groups["net"], "virtio_net and its dependencies come from the tree"
    finally:
        # The tree is this test's own (tmp_path), so is its image: ~110 MiB in the user's
        # cache every run otherwise, and a snapshot of it under --kh-snapshot.
        snapshots = image.directory.parent.parent / "snapshots"
        for directory in [image.directory, *snapshots.glob(f"{image.directory.name}-*")]:
            shutil.rmtree(directory, ignore_errors=True)


@pytest.mark.profile("trixie")
def test_the_readme_example_passes_and_leaves_its_junit_properties(
        kh_accel: str, tmp_path: Path) -> None:
    (tmp_path / "test_mine.py").write_text(readme_example())
    junit = tmp_path / "junit.xml"
    done = subprocess.run(pytest_command(tmp_path, kh_accel, f"--junitxml={junit}",
                                         str(tmp_path / "test_mine.py")),
                          cwd=tmp_path, capture_output=True, text=True, timeout=600,
                          check=False)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]
    assert re.search(r"^kdump-harness: QEMU \S+", done.stdout, re.M), done.stdout[:2000]
    (case,) = ET.parse(junit).getroot().iter("testcase")
    props = {p.get("name"): p.get("value") for p in case.iter("property")}
    assert props["accel"] in ("tcg", "kvm") and props["capture"] == "captured"
    assert props["result"] == props["expected"] == "accurate"
    assert props["kernel_release"].startswith("6.12.")
    assert Path(props["evidence"]).is_relative_to(tmp_path / "artifacts")
    assert float(props["time.boot_to_kdump_ready"]) > 0 and float(props["time.total"]) > 0
    assert props["trylock_failures"] == "0" and props["lock_holder"] == "none"


@pytest.mark.profile("trixie")
def test_no_qemu_survives_kill_9_of_pytest(kh_accel: str, tmp_path: Path) -> None:
    (tmp_path / "test_hold.py").write_text(
        "import time\n\n"
        "def test_hold(kdump):\n"
        "    guest = kdump.boot('trixie', kexec='none')\n"
        "    print('QEMU', guest.guest.pid, flush=True)\n"
        "    time.sleep(600)\n")
    runner = subprocess.Popen(pytest_command(tmp_path, kh_accel, "-s", "-q",
                                             str(tmp_path / "test_hold.py")),
                              cwd=tmp_path, stdout=subprocess.PIPE, text=True)
    try:
        assert runner.stdout is not None
        line = ""
        for line in runner.stdout:
            if line.startswith("QEMU "):
                break
        qemu = int(line.split()[1])
        os.kill(qemu, 0)
        runner.send_signal(signal.SIGKILL)
        runner.wait(10)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and alive(qemu):
            time.sleep(0.1)
        if alive(qemu):
            os.kill(qemu, signal.SIGKILL)
            pytest.fail(f"QEMU {qemu} outlived its SIGKILLed pytest")
    finally:
        if runner.poll() is None:
            runner.kill()


def alive(pid: int) -> bool:
    """Running, and not a zombie waiting to be reaped."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    stat = Path(f"/proc/{pid}/stat")
    return not (stat.exists() and stat.read_text().split(") ", 1)[1].startswith("Z"))
