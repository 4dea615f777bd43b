"""The scenario API's pure parts (no QEMU): the kernel marker's comparison, OwnKernel's
checks, the markers the plugin registers, and the kernel marker's skip reason."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest

from harness.api import JobResult
from harness.crash import CaptureResult, LockEvidence, LockHolder, Outcome
from harness.errors import UsageError
from harness.plugin.properties import record_lock, record_verdict
from harness.plugin.scenario import OwnKernel, Scenario, kernel_matches
from harness.results import Result

pytest_plugins = ["pytester"]


@pytest.mark.parametrize(("spec", "release", "matches"), [
    (">=6.6", "6.12.117+deb13-cloud-amd64", True),
    (">=6.6", "6.1.0-50-cloud-amd64", False),
    ("<7.0", "6.12.117+deb13-cloud-amd64", True),
    ("7.2", "7.2.13+deb14-cloud-amd64", True),
    ("==6.12", "6.12.0", True),
    ("> 6.12", "6.12.9", False),
])
def test_kernel_specs_compare_major_and_minor(spec: str, release: str, matches: bool) -> None:
    assert kernel_matches(spec, release) is matches


@pytest.mark.parametrize("spec", ["6", ">=six.6", "~6.6", ""])
def test_bad_kernel_specs_are_refused(spec: str) -> None:
    with pytest.raises(UsageError, match=r"expected e\.g\. '>=6\.6'"):
        kernel_matches(spec, "6.12.1")


def test_own_kernel_refuses_paths_that_do_not_exist(tmp_path: Path) -> None:
    bzimage = tmp_path / "bzImage"
    bzimage.write_bytes(b"MZ")
    assert OwnKernel(bzimage).modules is None
    with pytest.raises(UsageError, match=r"OwnKernel\(modules='.*/nope'\)"):
        OwnKernel(bzimage, modules=tmp_path / "nope")


def test_the_lock_holder_goes_into_the_junit_properties() -> None:
    capture = CaptureResult(Outcome.KDUMP_DID_NOT_OCCUR, "no dump", "sysrq", "headers",
                            lock_at_panic=LockEvidence(
                                LockHolder.NONE, "console replay", sections=3,
                                caught_in="cpu 1: crash_handle_hotplug_event+0x8c/0x150",
                                caught_holder=LockHolder.HOTPLUG_HANDLER))
    recorded: list[tuple[str, object]] = []
    record_lock(lambda name, value: recorded.append((name, value)), capture)
    assert recorded == [("lock_holder", "none"),
                        ("lock_caught", "cpu 1: crash_handle_hotplug_event+0x8c/0x150")]


def test_a_verdict_json_goes_into_the_junit_properties() -> None:
    """What ``kdump-harness run`` wrote, as tests of the command line record it."""
    capture = CaptureResult(Outcome.KDUMP_DID_NOT_OCCUR, "no dump", "sysrq", "headers",
                            lock_at_panic=LockEvidence(LockHolder.KEXEC_FILE_LOAD, "dmesg"))
    job = JobResult(result=Result.KDUMP_DID_NOT_OCCUR, expected=Result.ACCURATE,
                    reason="no dump", accel="tcg", kernel_release="6.12.117",
                    times={"panic": 0.0894, "verify": None}, capture=capture)
    recorded: list[tuple[str, object]] = []
    record_verdict(lambda name, value: recorded.append((name, value)),
                   json.loads(json.dumps(job.to_json_dict())))
    assert recorded == [("kernel_release", "6.12.117"), ("accel", "tcg"),
                        ("result", "kdump_did_not_occur"), ("expected", "accurate"),
                        ("family", "kernel"), ("time.panic", 0.089),
                        ("lock_holder", "kexec_file_load")]


def test_the_kernel_marker_skips_with_the_reason(tmp_path: Path) -> None:
    marker = pytest.mark.kernel(">=6.6").mark
    node = SimpleNamespace(get_closest_marker=lambda name: marker if name == "kernel" else None,
                           user_properties=[])
    image = SimpleNamespace(kernel_release="6.1.0-50-cloud-amd64")
    scenario = Scenario(SimpleNamespace(node=node),  # type: ignore[arg-type]
                        lambda profile, kernel=None: image, tmp_path, "tcg", "headers")
    with pytest.raises(pytest.skip.Exception, match=r"needs kernel >=6\.6; bookworm runs 6\.1\.0"):
        scenario._image("bookworm", None)
    assert ("evidence", str(tmp_path)) in node.user_properties


def test_the_plugin_registers_its_markers(pytester: pytest.Pytester) -> None:
    pytester.makepyfile("def test_x(): pass")
    result = pytester.runpytest("-p", "no:cacheprovider", "--markers")
    result.stdout.fnmatch_lines(["@pytest.mark.kernel(spec)*", "@pytest.mark.slow*",
                                 "@pytest.mark.seed000*", "@pytest.mark.seed004*"])


def test_a_scenarios_job_records_through_the_same_code_with_its_own_expectation() -> None:
    """``kdump.run``'s job (a JobResult, not JSON) and a test that judges it itself."""
    capture = CaptureResult(Outcome.KDUMP_DID_NOT_OCCUR, "no dump", "sysrq", "headers",
                            lock_at_panic=LockEvidence(
                                LockHolder.NONE, "console replay",
                                caught_in="cpu 0: crash_handle_hotplug_event+0x8c/0x150",
                                caught_holder=LockHolder.HOTPLUG_HANDLER))
    job = JobResult(result=Result.KDUMP_DID_NOT_OCCUR, expected=Result.ACCURATE,
                    reason="no dump", accel="tcg", kernel_release="6.12.117",
                    times={"restore": 0.1104},
                    capture=capture, snapshot="/cache/snapshots/trixie-cloud-ab-cd")
    recorded: list[tuple[str, object]] = []
    record_verdict(lambda name, value: recorded.append((name, value)), job.to_json_dict(),
                   expected="any")
    assert recorded == [("kernel_release", "6.12.117"), ("accel", "tcg"),
                        ("result", "kdump_did_not_occur"), ("expected", "any"),
                        ("family", "kernel"), ("time.restore", 0.11),
                        ("snapshot", "trixie-cloud-ab-cd"), ("lock_holder", "none"),
                        ("lock_caught", "cpu 0: crash_handle_hotplug_event+0x8c/0x150")]
