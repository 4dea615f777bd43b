"""The GitHub workflows, linted offline: the vendored workflow schema (check-jsonschema),
then what the schema cannot know: the scripts they call exist and run, actions are
pinned, the shard matrix and --shard i/N agree, the options parse, no mirror host names."""

from __future__ import annotations

import fnmatch
import os
import re
import shlex
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from ruamel.yaml import YAML

from harness.cli import build_parser
from harness.settings import SETTINGS

ROOT = Path(__file__).resolve().parents[1]
WORKFLOWS = sorted((ROOT / ".github" / "workflows").glob("*.yml"))
EXPR = re.compile(r"\$\{\{\s*(.*?)\s*\}\}")


def load(path: Path) -> dict[str, Any]:
    data: dict[str, Any] = YAML(typ="safe").load(path.read_text())
    return data


def steps(workflow: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    for name, job in workflow["jobs"].items():
        for step in job.get("steps", []):
            yield name, step


def job_with_step(workflow: dict[str, Any], needle: str) -> tuple[dict[str, Any],
                                                                  dict[str, Any]]:
    for job in workflow["jobs"].values():
        for step in job.get("steps", []):
            if needle in step.get("run", ""):
                return job, step
    raise AssertionError(f"no step runs {needle!r}")


def test_there_are_the_two_workflows() -> None:
    assert [p.name for p in WORKFLOWS] == ["ci.yml", "nightly.yml"]


def test_workflows_match_the_github_workflow_schema() -> None:
    tool = Path(sys.executable).parent / "check-jsonschema"
    done = subprocess.run([str(tool), "--builtin-schema", "vendor.github-workflows",
                           *map(str, WORKFLOWS)], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stdout + done.stderr


#: A ci/ path: after an interpreter (run by it), in command position (run itself: must be
#: executable), or an argument (a data file: must exist).
CI_PATH = re.compile(r"(?P<lead>^|[;&|]\s*|(?P<interp>bash|sh|python3?)\s+|\s)"
                     r"(?P<path>\.?ci/[\w.-]+)", re.M)


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.name)
def test_every_ci_script_a_step_names_exists_and_runs(path: Path) -> None:
    scripts = 0
    for _, step in steps(load(path)):
        for match in CI_PATH.finditer(step.get("run", "")):
            target = ROOT / match["path"]
            assert target.is_file(), f"{path.name}: {match['path']} does not exist"
            if match["interp"]:
                scripts += 1
            elif not match["lead"].isspace() or not match["lead"]:
                assert os.access(target, os.X_OK), f"{match['path']} is not executable"
                scripts += 1
    assert scripts, f"{path.name} calls none of the ci/ scripts a person runs"


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.name)
def test_actions_are_pinned_to_a_major_version(path: Path) -> None:
    for _, step in steps(load(path)):
        if "uses" in step:
            assert re.fullmatch(r"[\w-]+/[\w-]+(/[\w-]+)*@v\d+", step["uses"]), step["uses"]


def test_no_mirror_host_names_in_the_ci_files() -> None:
    host = re.compile(r"\b(?:[a-z0-9-]+\.)+(?:org|com|net|edu|de|uk|fr|jp|cn|ru)\b", re.I)
    files = [*WORKFLOWS, ROOT / "ci" / "matrix.toml", ROOT / "ci" / "nightly.py",
             ROOT / "harness" / "cli" / "matrix.py", *(ROOT / "harness" / "matrix").glob("*.py")]
    for path in files:
        text = path.read_text()
        assert "://" not in text, f"{path}: a URL"
        assert not host.findall(text), f"{path}: {host.findall(text)}"


def _run_step(script: str, env: dict[str, str], tmp_path: Path) -> tuple[int, dict[str, str]]:
    out = tmp_path / "github_output"
    out.write_text("")
    done = subprocess.run(["bash", "-e", "-c", script], env={**os.environ, **env,
                                                            "GITHUB_OUTPUT": str(out)},
                          capture_output=True, text=True, check=False)
    values = dict(line.split("=", 1) for line in out.read_text().splitlines() if "=" in line)
    return done.returncode, values


def test_the_shard_matrix_and_the_shard_option_agree(tmp_path: Path) -> None:
    wf = load(ROOT / ".github" / "workflows" / "nightly.yml")
    job, step = job_with_step(wf, "ci/nightly.py")
    source = EXPR.fullmatch(job["strategy"]["matrix"]["shard"])
    assert source, "the shard list comes from the plan job"
    plan_name, output = re.fullmatch(r"fromJSON\(needs\.(\w+)\.outputs\.(\w+)\)",
                                     source[1]).groups()           # type: ignore[union-attr]
    plan = wf["jobs"][plan_name]
    assert plan_name in job["needs"]
    # --shard "$SHARD" with SHARD = <the matrix's shard>/<the plan's count>.
    assert '--shard "$SHARD"' in step["run"]
    index, count = step["env"]["SHARD"].split("/")
    assert EXPR.fullmatch(index)[1] == "matrix.shard"              # type: ignore[index]
    count_output = re.fullmatch(rf"needs\.{plan_name}\.outputs\.(\w+)",
                                EXPR.fullmatch(count)[1])[1]       # type: ignore[index]
    # Run the plan job's step as GitHub would, for a few inputs.
    (pstep,) = [s for s in plan["steps"] if s.get("id")]
    for key in (output, count_output):
        assert plan["outputs"][key] == f"${{{{ steps.{pstep['id']}.outputs.{key} }}}}"
    for n in (1, 3, 4, 20):
        status, values = _run_step(pstep["run"], {"SHARDS": str(n)}, tmp_path)
        assert status == 0 and values[count_output] == str(n)
        assert values[output] == "[" + ",".join(map(str, range(1, n + 1))) + "]"
    for bad in ("0", "21", "x", ""):
        assert _run_step(pstep["run"], {"SHARDS": bad}, tmp_path)[0] != 0


def _words(command: str, env: dict[str, str]) -> list[str]:
    """A step's command split into words, its $VARs replaced by sample values."""
    text = command.replace("\\\n", " ")
    for name, value in env.items():
        text = text.replace(f'"${name}"', shlex.quote(value)).replace(f"${name}", value)
    return shlex.split(text.replace('"${baseline[@]}"', "--baseline history"))


def test_the_shard_step_is_a_valid_nightly_py_command_line() -> None:
    import importlib.util

    spec = importlib.util.spec_from_file_location("nightly_wf", ROOT / "ci" / "nightly.py")
    assert spec is not None and spec.loader is not None
    nightly = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(nightly)
    _, step = job_with_step(load(ROOT / ".github" / "workflows" / "nightly.yml"),
                            "ci/nightly.py")
    words = _words(step["run"], {"SHARD": "2/4", "ITERATIONS": "1", "SELECTION": "nightly",
                                 "RESULTS": "results/shard-2"})
    assert words[:2] == ["python3", "ci/nightly.py"]
    args = nightly.parse_args(words[2:])
    assert (args.shard, args.select, str(args.results)) == ("2/4", ["nightly"],
                                                            "results/shard-2")


def test_the_report_step_uses_options_the_report_command_has() -> None:
    wf = load(ROOT / ".github" / "workflows" / "nightly.yml")
    job, step = job_with_step(wf, "kdump-harness report")
    line = next(x for x in step["run"].replace("\\\n", " ").splitlines()
                if "kdump-harness report" in x)
    words = _words(line, {})
    args = build_parser().parse_args(words[1:])
    assert args.command == "report" and str(args.known_failures) == "ci/known-failures.toml"
    assert (ROOT / "ci" / "known-failures.toml").is_file()
    assert {"--markdown", "--kcidb", "-o"} <= set(words)
    assert "GITHUB_STEP_SUMMARY" in step["run"]
    # It reads what the shards upload.
    download = next(s for s in job["steps"] if "download-artifact" in s.get("uses", ""))
    shard_job, _ = job_with_step(wf, "ci/nightly.py")
    upload = next(s for s in shard_job["steps"] if "upload-artifact" in s.get("uses", ""))
    assert fnmatch.fnmatch(upload["with"]["name"].replace("${{ matrix.shard }}", "3"),
                           download["with"]["pattern"])
    assert upload.get("if") == "always()"


def test_ci_runs_the_readme_command_caches_images_and_keeps_evidence() -> None:
    wf = load(ROOT / ".github" / "workflows" / "ci.yml")
    assert {"pull_request", "push"} <= set(wf["on"])
    job, _ = job_with_step(wf, "bash .ci/run")
    uses = {s.get("uses", "").split("@")[0]: s for s in job["steps"]}
    cache = uses["actions/cache"]["with"]
    assert cache["path"] == "~/.cache/kdump-harness"
    assert "hashFiles('guest-images/**')" in cache["key"]
    upload = uses["actions/upload-artifact"]
    assert upload["if"] == "failure()"
    assert upload["with"]["path"].rstrip("/") == str(SETTINGS["artifacts"].default)
    assert ".venv/bin/python -m pytest -n auto" in (ROOT / ".ci" / "run").read_text()


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.name)
def test_guest_jobs_make_kvm_usable_before_setting_up(path: Path) -> None:
    for name, job in load(path)["jobs"].items():
        runs = [s.get("run", "") for s in job.get("steps", [])]
        boots = any(".ci/run" in r or "ci/nightly.py" in r for r in runs)
        if boots:
            kvm = next(i for i, r in enumerate(runs) if "/dev/kvm" in r and "udevadm" in r)
            guests = next(i for i, r in enumerate(runs) if ".ci/run" in r or "nightly.py" in r)
            assert kvm < guests, f"{path.name}:{name}"
