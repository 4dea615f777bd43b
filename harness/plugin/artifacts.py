"""Each guest test's evidence directory: created on first use, its path printed when the
test fails, kept for failed tests (``--kh-keep``), with ``test-verdict.json`` saying how
the test ended (a run's own ``verdict.json`` is left alone)."""

from __future__ import annotations

import json
import re
import shutil
import time
from pathlib import Path
from typing import Any

import pytest

from ..settings import Keep
from .options import session_settings

_ARTIFACT_DIR = pytest.StashKey[Path]()
REPORTS = pytest.StashKey[dict[str, pytest.TestReport]]()


def artifact_dir_for(item: pytest.Item) -> Path:
    """The item's evidence directory (created on first use)."""
    if _ARTIFACT_DIR not in item.stash:
        name = re.sub(r"[^A-Za-z0-9_.=-]+", "_", item.nodeid)[-150:]
        path = session_settings(item.config).artifacts / name
        if path.exists():
            shutil.rmtree(path)
        path.mkdir(parents=True)
        item.stash[_ARTIFACT_DIR] = path
    return item.stash[_ARTIFACT_DIR]


def evidence_of(item: pytest.Item) -> Path | None:
    return item.stash.get(_ARTIFACT_DIR, None)


def finish(item: pytest.Item) -> None:
    """Write test-verdict.json, then keep or drop the directory as ``--kh-keep`` says."""
    path = evidence_of(item)
    if path is None:
        return
    reports = item.stash.get(REPORTS, {})
    failed = any(r.failed for r in reports.values())
    outcome = "failed" if failed else ("skipped" if any(r.skipped for r in reports.values())
                                       else "passed")
    message = next((str(r.longrepr)[-4000:] for r in reports.values() if r.failed), None)
    verdict: dict[str, Any] = {"test": item.nodeid, "outcome": outcome, "message": message,
                               "finished_at": time.time()}
    try:
        (path / "test-verdict.json").write_text(json.dumps(verdict, indent=2) + "\n")
    except OSError:
        pass
    keep = session_settings(item.config).keep
    if keep is Keep.NEVER or (keep is Keep.FAILED and not failed):
        shutil.rmtree(path, ignore_errors=True)
