"""``kdump-harness matrix list|run`` without QEMU: the executor and image builds are faked."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from harness.campaign.executor import CampaignOutcome
from harness.campaign.iteration import Task
from harness.cli import main
from harness.matrix.model import HostFacts

ROOT = Path(__file__).resolve().parents[1]
MATRIX = str(ROOT / "ci" / "matrix.toml")


@pytest.fixture(autouse=True)
def old_qemu(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("harness.matrix.plan.host_facts", lambda: HostFacts(qemu=(7, 2, 22)))


def test_list_shows_cells_expectations_and_exclusions_with_reasons(
        capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["matrix", "list", "--definition", MATRIX]) == 0
    out = capsys.readouterr().out
    assert re.search(r"\n  trixie-unplug-half-dimms-sysrq-file +stale +known ", out)
    assert "excluded (" in out and "kexec-tools 2.0.25 (bookworm) has no --hotplug" in out
    assert "    - bookworm-burst-16dimm-6cpu-sysrq-classic" in out
    assert "skipped on this host (" in out and "this host's QEMU is 7.2.22" in out


def test_list_of_a_shard_as_json(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["matrix", "list", "--definition", MATRIX, "--select", "quick",
                 "--shard", "1/2", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["shard"] == "1/2" and 1 <= len(data["cells"]) <= 5
    assert all(c["argv"][:2] == ["--profile", "trixie"] for c in data["cells"])


@pytest.mark.parametrize(("argv", "message"), [
    (["--shard", "5/4"], "--shard 5/4"),
    (["--select", "nope"], "no such selection"),
    (["--iterations", "0"], "--iterations 0"),
    (["--definition", "/nonexistent.toml"], "cannot read the matrix definition"),
])
def test_bad_options_are_refused_before_anything(argv: list[str], message: str,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["matrix", "run", "--definition", MATRIX, *argv]) == 2
    assert message in capsys.readouterr().err


def test_dry_run_starts_nothing(monkeypatch: pytest.MonkeyPatch,
                                capsys: pytest.CaptureFixture[str]) -> None:
    def refuse(*_: Any, **__: Any) -> None:
        raise AssertionError("a dry run started something")

    monkeypatch.setattr("harness.campaign.executor.run_campaign", refuse)
    monkeypatch.setattr("harness.campaign.prepare.prepare", refuse)
    assert main(["matrix", "run", "--definition", MATRIX, "--select", "smoke",
                 "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "run --profile trixie --dimms 16x256M --add-cpus 6 --trigger sysrq" in out
    assert "1 iteration(s) would run; nothing started" in out


def test_run_hands_the_executor_one_task_per_iteration(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    seen: dict[str, Any] = {"prepared": []}

    def fake_campaign(tasks: list[Task], options: Any, **_: Any) -> CampaignOutcome:
        seen["tasks"], seen["options"] = tasks, options
        return CampaignOutcome()          # nothing judged, nothing failed

    monkeypatch.setattr("harness.campaign.executor.run_campaign", fake_campaign)
    monkeypatch.setattr("harness.campaign.prepare.prepare",
                        lambda recipe, results, progress: seen["prepared"].append(recipe.name))
    status = main(["matrix", "run", "--definition", MATRIX, "--select", "quick",
                   "--shard", "1/1", "--iterations", "2", "--jobs", "2", "--snapshot",
                   "--results", str(tmp_path), "--no-progress"])
    assert status == 0
    tasks, options = seen["tasks"], seen["options"]
    assert options.campaign.startswith("nightly-") and options.campaign.endswith("-shard1of1")
    assert (options.jobs, options.results, options.progress) == (2, tmp_path, False)
    assert len(tasks) == 2 * len({t.recipe.name for t in tasks}) >= 4
    assert [t.iteration for t in tasks if t.recipe.name == tasks[0].recipe.name] == [0, 1]
    for task in tasks:
        config = task.recipe.dimensions
        assert config["profile"] == "trixie" and task.recipe.argv[-1] == "--snapshot"
        assert task.recipe.name.startswith(f"trixie-{config['shape']}-{config['trigger']}")
        # A seeded shape's iteration i runs seed 7+i; an unseeded one keeps its order.
        assert task.seed == (7 + task.iteration if config["shape"] == "seeded-shuffle"
                             else None)
    # With --snapshot every distinct guest is prepared once, up front.
    assert sorted(seen["prepared"]) == sorted({t.recipe.name for t in tasks})
    plan = json.loads((tmp_path / "matrix-plan.json").read_text())
    assert len(plan["cells"]) == len(tasks) and plan["shard"] == "1/1"


def test_a_profile_whose_image_fails_is_not_tested_and_says_so(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    from harness.errors import ImageBuildError

    def fail(recipe: Any, results: Path, progress: bool) -> None:
        raise ImageBuildError("the archive is unreachable")

    monkeypatch.setattr("harness.campaign.prepare.prepare", fail)
    monkeypatch.setattr("harness.campaign.executor.run_campaign",
                        lambda tasks, options, **_: CampaignOutcome(planned=len(tasks)))
    status = main(["matrix", "run", "--definition", MATRIX, "--select", "smoke",
                   "--results", str(tmp_path), "--no-progress"])
    assert status == 125
    assert "cannot test trixie: the archive is unreachable" in capsys.readouterr().err
