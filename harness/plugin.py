"""pytest plugin (``pytest11`` entry point ``kdump_harness``).

Options live in one group; each has one description constant reused for the command-line
flag and the ini key.  Precedence: command line > environment > ini > default.  Every test
that uses a guest gets its own artifact directory; it is kept when the test fails (and
always with ``--kh-keep=always``), its path is printed in the failure report, and a
``test-verdict.json`` records how the test ended (a run's own ``verdict.json`` is
left alone).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import time
from collections.abc import Generator
from pathlib import Path
from typing import Any

import pytest

from .errors import UsageError

ARTIFACTS_HELP = ("directory for per-test evidence (env KDUMP_HARNESS_ARTIFACTS; "
                  "default ./artifacts)")
KEEP_HELP = "keep artifact directories: failed (default), always or never"
ACCEL_HELP = "accelerator for guests: auto (probe KVM, fall back to TCG), kvm or tcg"
PROFILES_HELP = "comma-separated guest profiles to test (default: all)"

KEEP_CHOICES = ("failed", "always", "never")


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("kdump-harness", "kdump-hotplug harness")
    group.addoption("--kh-artifacts", dest="kh_artifacts", default=None, help=ARTIFACTS_HELP)
    group.addoption("--kh-keep", dest="kh_keep", default=None, help=KEEP_HELP)
    group.addoption("--kh-accel", dest="kh_accel", default=None, help=ACCEL_HELP)
    group.addoption("--kh-profiles", dest="kh_profiles", default=None, help=PROFILES_HELP)
    parser.addini("kh_artifacts", ARTIFACTS_HELP, default="artifacts")
    parser.addini("kh_keep", KEEP_HELP, default="failed")
    parser.addini("kh_accel", ACCEL_HELP, default="auto")
    parser.addini("kh_profiles", PROFILES_HELP, default="")


def _setting(config: pytest.Config, name: str, env: str) -> tuple[str, str]:
    """The value of setting ``name`` and where it came from."""
    value = config.getoption(f"kh_{name}")
    if value is not None:
        return str(value), f"--kh-{name}"
    if env in os.environ:
        return os.environ[env], env
    return str(config.getini(f"kh_{name}")), f"ini kh_{name}"


class HarnessSettings:
    def __init__(self, config: pytest.Config) -> None:
        artifacts, _ = _setting(config, "artifacts", "KDUMP_HARNESS_ARTIFACTS")
        self.artifacts = Path(artifacts)
        if not self.artifacts.is_absolute():
            self.artifacts = Path(str(config.rootpath)) / self.artifacts
        self.keep, where = _setting(config, "keep", "KDUMP_HARNESS_KEEP")
        if self.keep not in KEEP_CHOICES:
            raise UsageError(f"{where}={self.keep!r}: expected one of {', '.join(KEEP_CHOICES)}")
        self.accel, where = _setting(config, "accel", "KDUMP_HARNESS_ACCEL")
        if self.accel not in ("auto", "kvm", "tcg"):
            raise UsageError(f"{where}={self.accel!r}: expected auto, kvm or tcg")
        profiles, where = _setting(config, "profiles", "KDUMP_HARNESS_PROFILES")
        self.profiles = tuple(p.strip() for p in profiles.split(",") if p.strip())
        unknown = set(self.profiles) - {"bookworm", "trixie", "sid"}
        if unknown:
            raise UsageError(f"{where}: unknown profile(s) {', '.join(sorted(unknown))}")


_SETTINGS = pytest.StashKey[HarnessSettings]()
_ARTIFACT_DIR = pytest.StashKey[Path]()
_REPORTS = pytest.StashKey[dict[str, pytest.TestReport]]()


def settings(config: pytest.Config) -> HarnessSettings:
    return config.stash[_SETTINGS]


def pytest_configure(config: pytest.Config) -> None:
    try:
        config.stash[_SETTINGS] = HarnessSettings(config)
    except UsageError as exc:
        raise pytest.UsageError(str(exc)) from None
    config.addinivalue_line("markers", "guest: boots real QEMU guests (slow under TCG)")
    config.addinivalue_line("markers", "profile(name): the guest profile the test needs")


def pytest_report_header(config: pytest.Config) -> list[str]:
    s = settings(config)
    line = f"kdump-harness: accel={s.accel} artifacts={s.artifacts} keep={s.keep}"
    if s.profiles:
        line += f" profiles={','.join(s.profiles)}"
    return [line]


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    wanted = settings(config).profiles
    if not wanted:
        return
    for item in items:
        marker = item.get_closest_marker("profile")
        if marker and marker.args and marker.args[0] not in wanted:
            item.add_marker(pytest.mark.skip(
                reason=f"profile {marker.args[0]} not selected (use --kh-profiles to add it)"))


def artifact_dir_for(item: pytest.Item) -> Path:
    """The item's evidence directory (created on first use)."""
    if _ARTIFACT_DIR not in item.stash:
        name = re.sub(r"[^A-Za-z0-9_.=-]+", "_", item.nodeid)[-150:]
        path = settings(item.config).artifacts / name
        if path.exists():
            shutil.rmtree(path)
        path.mkdir(parents=True)
        item.stash[_ARTIFACT_DIR] = path
    return item.stash[_ARTIFACT_DIR]


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    report = yield
    item.stash.setdefault(_REPORTS, {})[report.when] = report
    if report.failed and _ARTIFACT_DIR in item.stash:
        report.sections.append(("kdump-harness evidence", str(item.stash[_ARTIFACT_DIR])))
    return report


def pytest_runtest_teardown(item: pytest.Item) -> None:
    if _ARTIFACT_DIR not in item.stash:
        return
    path = item.stash[_ARTIFACT_DIR]
    reports = item.stash.get(_REPORTS, {})
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
    keep = settings(item.config).keep
    if keep == "never" or (keep == "failed" and not failed):
        shutil.rmtree(path, ignore_errors=True)


def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: pytest.Config) -> None:
    s = settings(config)
    if s.artifacts.exists() and any(s.artifacts.iterdir()):
        terminalreporter.write_line(f"kdump-harness: evidence of kept tests under {s.artifacts}")


# Fixtures live in their own module; importing them here registers them with pytest.
from .fixtures import *  # noqa: E402, F403
