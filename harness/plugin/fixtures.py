"""Fixtures: guest images (built once across xdist workers) and a guest factory."""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from .. import settings as settings_mod
from ..api import Guest, GuestConfig
from .artifacts import artifact_dir_for
from .options import for_item
from .properties import record_guest, recorder
from .scenario import OwnKernel, Scenario, image_for

__all__ = ["artifact_dir", "guest_image", "kdump", "kh_accel", "make_guest"]


@pytest.fixture
def artifact_dir(request: pytest.FixtureRequest) -> Path:
    """This test's evidence directory: kept on failure, its path printed in the report."""
    return artifact_dir_for(request.node)


@pytest.fixture
def kh_accel(request: pytest.FixtureRequest) -> str:
    """The accelerator this test's guests use (marker > command line > environment > ini),
    e.g. to pass on as ``kdump-harness run --accel``."""
    return str(for_item(request.node, "accel").value)


@pytest.fixture(scope="session")
def guest_image() -> Callable[..., Any]:
    """``guest_image(profile, flavour="cloud")``: a built image, from the cache when possible.

    The builder takes a per-image file lock, so xdist workers asking at once build it once.
    """
    cache: dict[tuple[str, str, OwnKernel | Path | None], Any] = {}

    def get(profile: str = "trixie", flavour: str = "cloud", *,
            kernel: OwnKernel | Path | None = None) -> Any:
        """The profile's Debian kernel; ``kernel=`` your own bzImage with the profile's
        userspace (``kdump`` scenarios also take ``--kh-kernel``)."""
        key = (profile, flavour, kernel)
        if key not in cache:
            cache[key] = image_for(profile, flavour, kernel=kernel)
            if cache[key].lock_drift:
                warnings.warn(cache[key].drift_summary(), stacklevel=2)
        return cache[key]

    return get


#: Per-test settings that lower layers read from the process's settings while a test's
#: guests start (the rest reach them through ``GuestConfig``).
_PROCESS_WIDE_PER_TEST = ("timeout_scale", "tcg_threads")


def _test_settings(request: pytest.FixtureRequest) -> settings_mod.Settings:
    """The process's settings with this test's own values (a ``kh`` marker first)."""
    return settings_mod.Settings({**settings_mod.current().values, **{
        name: for_item(request.node, name) for name in _PROCESS_WIDE_PER_TEST}})


@pytest.fixture
def kdump(request: pytest.FixtureRequest, guest_image: Callable[..., Any],
          artifact_dir: Path) -> Iterator[Scenario]:
    """The scenario API (``harness.plugin.scenario``): ``kdump.boot(profile)`` ->
    ``.swarm(...)`` -> ``.panic(...)`` -> ``.verify()``, or ``kdump.run(...)`` for the whole
    job.  Guests run with this test's settings (a ``kh`` marker first) and are torn down
    after; results go into the JUnit XML."""
    def image(profile: str, kernel: OwnKernel | Path | None = None) -> Any:
        return guest_image(profile, kernel=kernel)

    scenario = Scenario(request, image, artifact_dir,
                        accel=str(for_item(request.node, "accel").value),
                        mode=str(for_item(request.node, "mode").value),
                        snapshot=bool(for_item(request.node, "snapshot").value))
    try:
        with settings_mod.configured(_test_settings(request)):
            yield scenario
    finally:
        scenario.close()


@pytest.fixture
def make_guest(request: pytest.FixtureRequest, guest_image: Callable[..., Any],
               artifact_dir: Path) -> Iterator[Callable[..., Guest]]:
    """``make_guest(profile="trixie", **GuestConfig fields)``: a booted guest, torn down after.

    Several guests in one test get numbered subdirectories of the artifact directory.
    """
    guests: list[Guest] = []
    record = recorder(request.node)
    record("evidence", str(artifact_dir))
    # Per test: a kh(...) marker beats the command line, the environment and the ini.
    accel = for_item(request.node, "accel")
    scoped = _test_settings(request)

    def make(profile: str = "trixie", flavour: str = "cloud", **config: Any) -> Guest:
        config.setdefault("accel", accel.value)
        workdir = artifact_dir if not guests else artifact_dir / f"guest{len(guests)}"
        guest = Guest(guest_image(profile, flavour), GuestConfig(**config), workdir)
        guests.append(guest)
        with settings_mod.configured(scoped):     # its deadlines, scaled; its TCG threads
            guest.launch()
        record_guest(record, guest)
        for fault in guest.boot_faults:
            warnings.warn(f"{workdir}: {fault}", stacklevel=2)
        return guest

    try:
        yield make
    finally:
        for guest in guests:
            guest.shutdown()
