"""The job: its pre-panic topology pair (a settled swarm's own final pair, else a fresh one),
and what verdict.json says of the TCG threads."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fake_machine import guest

from harness.guest.tcg_threads import TcgThreadsChoice
from harness.hotplug import SwarmSpec, build_plan
from harness.job import JobResult, JobSpec, _swarm_and_snapshot
from harness.results import Result
from harness.units import MiB


def _counting(tmp_path: Path) -> tuple[Any, list[str]]:
    g = guest(tmp_path)
    observations: list[str] = []
    run = g.machine.run

    def counted(command: str) -> tuple[int, str]:
        if command.startswith("r() {"):     # topology.observe's one command
            observations.append(command)
        return run(command)

    g.machine.run = counted
    return g, observations


def _job(tmp_path: Path) -> JobResult:
    return JobResult(result=Result.HARNESS_ERROR, expected=Result.ACCURATE, reason="",
                     run_dir=tmp_path)


def test_a_settled_swarm_gives_its_final_pair(tmp_path: Path) -> None:
    g, observations = _counting(tmp_path)
    job = _job(tmp_path)
    spec = JobSpec(plan=build_plan(SwarmSpec(dimms=(256 * MiB,) * 2, cpus=1)))
    expected, observed = _swarm_and_snapshot(g, spec, tmp_path, job)
    assert job.swarm is not None and job.swarm.settled
    assert (expected, observed) == (job.swarm.expected, job.swarm.observed)
    # Baseline and settle polls skip the crash_hotplug files; only the final look reads
    # them, and no second look follows it (it cost a guest command, ~0.1 s under TCG).
    assert sum("crash_hotplug" in o for o in observations) == 1
    assert "crash_hotplug" in observations[-1]
    assert (tmp_path / "topology-observed.json").exists()


def test_a_swarm_stopped_early_is_looked_at_again(tmp_path: Path) -> None:
    g, observations = _counting(tmp_path)
    job = _job(tmp_path)
    spec = JobSpec(plan=build_plan(SwarmSpec(dimms=(256 * MiB,) * 2, cpus=1)), panic_after=1)
    _, observed = _swarm_and_snapshot(g, spec, tmp_path, job)
    assert job.swarm is not None and job.swarm.stopped_early
    assert observed is not job.swarm.observed
    assert observations, "a fresh observation of the guest"


def test_no_swarm_is_looked_at(tmp_path: Path) -> None:
    g, observations = _counting(tmp_path)
    job = _job(tmp_path)
    _swarm_and_snapshot(g, JobSpec(plan=build_plan(SwarmSpec())), tmp_path, job)
    assert job.swarm is None and len(observations) == 1


def test_verdict_json_gives_the_tcg_thread_mode_and_why_as_readiness_json_does(
        tmp_path: Path) -> None:
    job = _job(tmp_path)
    assert job.to_json_dict()["tcg_threads"] is None       # KVM, or the guest never started
    job.tcg_threads = TcgThreadsChoice("single", "tcg_threads=single")
    assert job.to_json_dict()["tcg_threads"] == {"mode": "single",
                                                 "reason": "tcg_threads=single"}
