"""``kdump-harness repro`` end to end with real guests: lines, evidence, exit statuses."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from harness.cli import main

pytestmark = [pytest.mark.guest, pytest.mark.profile("trixie")]


def repro(request: pytest.FixtureRequest, results: Path, *args: str,
          accel: str | None = None) -> int:
    accel = accel or request.getfixturevalue("kh_accel")
    request.getfixturevalue("record_property")("evidence", str(results))
    return main(["repro", "--results", str(results), "--no-progress", "--accel", accel,
                 "--profile", "trixie", *args])


def result_lines(results: Path) -> list[dict]:  # type: ignore[type-arg]
    return [json.loads(x) for x in (results / "results.jsonl").read_text().splitlines()]


def test_repro_crash_iterations_in_parallel_leave_lines_not_evidence(
        request: pytest.FixtureRequest, artifact_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    status = repro(request, artifact_dir, "-n", "2", "--jobs", "2", "--snapshot", "--json",
                   "--seed", "40", "--dimms", "4x256M", "--add-cpus", "1")
    out = capsys.readouterr()
    assert status == 0, out.err
    printed = [json.loads(x) for x in out.out.splitlines() if x.startswith("{")]
    lines = result_lines(artifact_dir)
    assert sorted(x["seed"] for x in lines) == [40, 41] == sorted(x["seed"] for x in printed)
    for x in lines:
        assert x["result"] == "accurate" and x["passed"] and x["kind"] == "crash"
        assert x["snapshot"] and x["times"]["restore"] is not None
        assert x["evidence"] is None            # passing iterations keep no evidence
        assert x["replay"].endswith(f"--dimms 4x256M --add-cpus 1 --seed {x['seed']}")
        assert x["config"]["trigger"] == "sysrq" and x["config"]["snapshot"] == "on"
    assert "accurate" in out.err and "100.0%" in out.err


def test_repro_until_fail_stops_and_keeps_the_evidence(
        request: pytest.FixtureRequest, artifact_dir: Path) -> None:
    # An accurate kernel with "stale" expected: the first iteration is not as expected.
    status = repro(request, artifact_dir, "-n", "3", "--until-fail", "--snapshot",
                   "--seed", "7", "--dimms", "2x256M", "--add-cpus", "0", "--expect", "stale")
    assert status == 1
    lines = result_lines(artifact_dir)
    assert len(lines) == 1, "stopped at the first unexpected result"
    first = lines[0]
    assert (first["result"], first["expected"], first["seed"]) == ("accurate", "stale", 7)
    evidence = artifact_dir / first["evidence"]
    assert json.loads((evidence / "verdict.json").read_text())["result"] == "accurate"
    assert (evidence / "console.log").exists()


def test_repro_audit_serves_many_swarms_from_one_guest(
        request: pytest.FixtureRequest, artifact_dir: Path) -> None:
    status = repro(request, artifact_dir, "--audit", "-n", "4", "--snapshot", "--seed", "1",
                   "--dimms", "2x256M", "--add-cpus", "2")
    assert status == 0
    lines = result_lines(artifact_dir)
    assert [x["result"] for x in lines] == ["accurate"] * 4
    assert all(x["kind"] == "audit" and x["times"]["audit"] for x in lines)
    booted = [x["iteration"] for x in lines if x["times"].get("boot_to_kdump_ready")]
    # 2 boot vCPUs + 2 per swarm: under TCG the fourth swarm would be QEMU's ninth vCPU
    # thread (maxcpus 8), so a fresh guest takes it; under KVM one guest serves all four.
    accel = lines[0]["accel"]
    assert booted == ([0, 3] if accel == "tcg" else [0]), booted
    # Retired guests leave nothing behind when every swarm on them was as expected.
    assert not list((artifact_dir / "guests").glob("*/*.img"))


def test_repro_says_125_when_the_harness_cannot_test(
        request: pytest.FixtureRequest, artifact_dir: Path, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    # No QEMU on the PATH: the image is cached, every iteration is a harness error.
    monkeypatch.setenv("PATH", str(tmp_path))
    status = repro(request, artifact_dir, "-n", "2", "--seed", "3", "--dimms", "2x256M")
    assert status == 125
    lines = result_lines(artifact_dir)
    assert [x["result"] for x in lines] == ["harness_error"] * 2
    assert all("qemu-system-x86_64 not found" in x["reason"] for x in lines)
