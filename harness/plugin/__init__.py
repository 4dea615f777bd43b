"""pytest plugin (``pytest11`` entry point ``kdump_harness``).

Options live in one group (``options``), resolved by the harness's one configuration
resolver with the precedence marker > command line > environment > ini > default.  Every
test that uses a guest gets its own evidence directory (``artifacts``); it is kept when
the test fails (and always with ``--kh-keep=always``), its path is printed in the failure
report.  The fixtures (``fixtures``) boot guests from the selected profiles; the
``kdump`` fixture is the scenario API (``scenario``); every guest test's JUnit XML
properties are recorded by ``properties``; the report header is ``header``'s.
"""

from __future__ import annotations

from collections.abc import Generator
from typing import Any

import pytest

from .artifacts import REPORTS, artifact_dir_for, evidence_of, finish
from .header import kernel_lines, kvm_probe_line, qemu_line, seen
from .options import add_options, configure, session_settings

#: The plugin's markers, registered in every project that uses it.
MARKERS = (
    "guest: boots real QEMU guests (slow under TCG)",
    "profile(name): the guest profile the test needs (--kh-profiles deselects others)",
    "kernel(spec): skip unless the image's kernel release matches, e.g. kernel('>=6.6')",
    "kh(accel=..., timeout_scale=..., mode=..., snapshot=...): this test's own settings "
    "(beat the command line, environment, ini)",
    "slow: a long scenario: not in the default run; run with -m slow or the nightly matrix",
    "seed000: kexec_trylock() failing under hot-plug (the kexec lock as a mutex, 2023)",
    "seed001: the kernel rewriting the elfcorehdr on CPU and memory hot-plug (2022)",
    "seed002: kmsg_dump and crash_kexec_post_notifiers in the kdump path (2011)",
    "seed003: CMA-backed kexec_file segments across kdump reloads (2025)",
    "seed004: several CPUs panicking at once (2011)",
)


def pytest_addoption(parser: pytest.Parser) -> None:
    add_options(parser)


def pytest_configure(config: pytest.Config) -> None:
    configure(config)
    for line in MARKERS:
        config.addinivalue_line("markers", line)


def pytest_report_header(config: pytest.Config) -> list[str]:
    s = session_settings(config)
    line = f"kdump-harness: accel={s.accel} artifacts={s.artifacts} keep={s.keep.value}"
    if s.profiles:
        line += f" profiles={','.join(s.profiles)}"
    from ..images.profiles import load_profiles

    profiles = s.profiles or tuple(load_profiles().profiles)
    return [line, f"kdump-harness: {qemu_line()}; {kvm_probe_line(s.cache_root)}",
            "kdump-harness: kernels: " + "; ".join(kernel_lines(profiles))]


#: Every test's JUnit properties, for the summary (on the controller too: xdist ships each
#: worker's reports, user_properties included).
_ALL_PROPERTIES: list[tuple[str, object]] = []


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if report.when == "call" and report.user_properties:
        _ALL_PROPERTIES.extend(report.user_properties)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    wanted = session_settings(config).profiles
    if not wanted:
        return
    for item in items:
        marker = item.get_closest_marker("profile")
        if marker and marker.args and marker.args[0] not in wanted:
            item.add_marker(pytest.mark.skip(
                reason=f"profile {marker.args[0]} not selected (use --kh-profiles to add it)"))


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    report = yield
    item.stash.setdefault(REPORTS, {})[report.when] = report
    evidence = evidence_of(item)
    if report.failed and evidence is not None:
        report.sections.append(("kdump-harness evidence", str(evidence)))
    return report


def pytest_runtest_teardown(item: pytest.Item) -> None:
    finish(item)


def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: pytest.Config) -> None:
    accels, kernels = seen(_ALL_PROPERTIES, "accel"), seen(_ALL_PROPERTIES, "kernel_release")
    if accels or kernels:
        ran = f"guests ran under {', '.join(accels)}; " if accels else "no guest booted; "
        terminalreporter.write_line(f"kdump-harness: {ran}kernels: {', '.join(kernels) or '-'}")
    s = session_settings(config)
    if s.artifacts.exists() and any(s.artifacts.iterdir()):
        terminalreporter.write_line(f"kdump-harness: evidence of kept tests under {s.artifacts}")


# Fixtures live in their own module; importing them here registers them with pytest.
from .fixtures import *  # noqa: E402, F403

__all__ = ["artifact_dir_for"]
