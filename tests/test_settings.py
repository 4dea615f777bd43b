"""The one configuration resolver: precedence, sources, refusals naming their source."""

from __future__ import annotations

from pathlib import Path

import pytest

from harness import settings
from harness.errors import UsageError
from harness.model import Accel
from harness.settings import LockPolicy, Source, resolve


@pytest.mark.parametrize(("kwargs", "value", "source", "where"), [
    (dict(marker="kvm", cli="tcg", env={"KDUMP_HARNESS_ACCEL": "tcg"}, ini="tcg"),
     Accel.KVM, Source.MARKER, "marker kh(accel=...)"),
    (dict(cli="auto", env={"KDUMP_HARNESS_ACCEL": "tcg"}, ini="kvm"),
     Accel.AUTO, Source.COMMAND_LINE, "--kh-accel"),
    (dict(env={"KDUMP_HARNESS_ACCEL": "tcg"}, ini="kvm"), Accel.TCG, Source.ENVIRONMENT,
     "KDUMP_HARNESS_ACCEL"),
    (dict(env={}, ini="kvm"), Accel.KVM, Source.INI, "ini kh_accel"),
    (dict(env={}, ini=""), Accel.AUTO, Source.DEFAULT, "the default of accel"),
])
def test_precedence(kwargs: dict[str, object], value: Accel, source: Source,
                    where: str) -> None:
    got = resolve("accel", **kwargs)  # type: ignore[arg-type]
    assert (got.value, got.source, got.where) == (value, source, where)


@pytest.mark.parametrize(("name", "raw", "message"), [
    ("accel", "hvf", "KDUMP_HARNESS_ACCEL='hvf': expected one of auto, kvm, tcg"),
    ("timeout_scale", "0", "KDUMP_HARNESS_TIMEOUT_SCALE='0': must be positive"),
    ("lock", "loose", "KDUMP_HARNESS_LOCK='loose': expected one of prefer, strict"),
    ("huge_pages", "madvise", "KDUMP_HARNESS_HUGE_PAGES='madvise': expected one of auto, on, "
                              "off"),
])
def test_bad_values_name_their_source(name: str, raw: str, message: str) -> None:
    env = {settings.SETTINGS[name].env: raw}
    with pytest.raises(UsageError, match=message.replace("(", r"\(").replace(")", r"\)")):
        resolve(name, env=env)


def test_unknown_profiles_are_refused_naming_the_source() -> None:
    chosen = resolve("profiles", env={"KDUMP_HARNESS_PROFILES": "trixie,jessie"})
    with pytest.raises(UsageError, match=r"KDUMP_HARNESS_PROFILES: unknown profile\(s\) "
                                         r"jessie \(profiles.toml has bookworm, trixie"):
        settings.check_profiles(chosen, ("bookworm", "trixie", "sid"))


def test_the_command_line_spelling_is_named() -> None:
    with pytest.raises(UsageError, match="--accel='hvf'"):
        resolve("accel", cli="hvf", env={}, cli_spelling="--accel")


def test_process_settings_and_a_scoped_override(tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KDUMP_HARNESS_CACHE", str(tmp_path))
    monkeypatch.setenv("KDUMP_HARNESS_LOCK", "strict")
    before = settings.current()
    with settings.configured() as now:
        assert settings.current() is now
        assert now.cache_root == tmp_path and now.lock is LockPolicy.STRICT
        assert now.source("lock").source is Source.ENVIRONMENT
    assert settings.current() is before
