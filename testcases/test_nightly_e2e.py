"""The nightly path end to end with real guests: ``ci/nightly.py`` runs a matrix shard
(``kdump-harness matrix run``) and reports on it (``kdump-harness report``), as the
nightly workflow's shard job does."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.guest, pytest.mark.profile("trixie")]

ROOT = Path(__file__).resolve().parents[1]


def test_a_nightly_shard_runs_its_cells_and_reports_them(
        request: pytest.FixtureRequest, artifact_dir: Path) -> None:
    accel = request.getfixturevalue("kh_accel")
    results = artifact_dir / "nightly"
    request.getfixturevalue("record_property")("evidence", str(results))
    env = {**os.environ, "KDUMP_HARNESS_ACCEL": accel,
           "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    proc = subprocess.run(
        [sys.executable, str(ROOT / "ci" / "nightly.py"), "--select", "smoke", "--snapshot",
         "--iterations", "2", "--jobs", "2", "--results", str(results)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=600, check=False)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    lines = [json.loads(x) for x in (results / "results.jsonl").read_text().splitlines()]
    assert [x["iteration"] for x in sorted(lines, key=lambda x: x["iteration"])] == [0, 1]
    for x in lines:
        assert x["cell"] == "trixie-burst-16dimm-6cpu-sysrq-file"
        assert x["result"] == x["expected"] == "accurate"
        assert x["campaign"].startswith("nightly-") and x["config"]["shape"] == "burst-16dimm-6cpu"
    plan = json.loads((results / "matrix-plan.json").read_text())
    assert plan["campaign"] == lines[0]["campaign"]
    html = (results / "report.html").read_text()
    assert "trixie-burst-16dimm-6cpu-sysrq-file" in html and "<svg" in html
    summary = (results / "summary.md").read_text()
    assert "100.0%" in summary and "0 new" in summary.replace("**", "")
