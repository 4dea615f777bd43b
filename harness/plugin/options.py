"""The plugin's settings: one option group, resolved through ``harness.settings``.

Each option has one help text (from ``settings.SETTINGS``), reused for the command-line
flag ``--kh-<name>`` and the ini key ``kh_<name>``.  Session-wide values resolve as
command line > environment > ini > default; per test, a ``@pytest.mark.kh(name=value)``
marker comes first (``for_item``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from .. import settings as settings_mod
from ..errors import UsageError
from ..images.profiles import load_profiles
from ..settings import Keep, Setting

#: Settings the plugin offers as --kh-<name> options and kh_<name> ini keys.
OPTIONS = ("artifacts", "keep", "accel", "profiles", "timeout_scale", "kernel", "modules",
           "kernel_config", "mode", "snapshot", "cache", "mirror", "lock", "huge_pages",
           "tcg_threads")
#: Settings a test may override with ``@pytest.mark.kh(...)``.
PER_TEST = ("accel", "timeout_scale", "mode", "snapshot", "tcg_threads")
#: Switches: the bare flag means on (``--kh-snapshot``), ``--kh-snapshot=off`` too.
SWITCHES = ("snapshot",)


def add_options(parser: pytest.Parser) -> None:
    group = parser.getgroup("kdump-harness", "kdump-hotplug harness")
    for name in OPTIONS:
        spec = settings_mod.SETTINGS[name]
        flag = f"--kh-{name.replace('_', '-')}"
        text = f"{spec.help} (env {spec.env}; ini kh_{name})"
        if name in SWITCHES:
            group.addoption(flag, dest=f"kh_{name}", default=None, nargs="?", const="on",
                            help=text)
        else:
            group.addoption(flag, dest=f"kh_{name}", default=None, help=text)
        parser.addini(f"kh_{name}", spec.help, default="")


def _resolve(config: pytest.Config, name: str, marker: str | None = None) -> Setting:
    ini = str(config.getini(f"kh_{name}") or "") or None
    return settings_mod.resolve(name, marker=marker, cli=config.getoption(f"kh_{name}"),
                                ini=ini)


@dataclass(frozen=True)
class PluginSettings:
    """The session's resolved settings, each knowing where it came from."""

    values: dict[str, Setting]
    rootpath: Path

    @classmethod
    def from_config(cls, config: pytest.Config) -> PluginSettings:
        try:
            values = {name: _resolve(config, name) for name in OPTIONS}
            known = tuple(load_profiles().profiles)
            settings_mod.check_profiles(values["profiles"], known)
        except UsageError as exc:
            raise pytest.UsageError(str(exc)) from None
        return cls(values, Path(str(config.rootpath)))

    def __getitem__(self, name: str) -> Any:
        return self.values[name].value

    @property
    def artifacts(self) -> Path:
        path = Path(self["artifacts"])
        return path if path.is_absolute() else self.rootpath / path

    @property
    def keep(self) -> Keep:
        return Keep(self["keep"])

    @property
    def accel(self) -> str:
        return str(self["accel"])

    @property
    def cache_root(self) -> Path:
        return self.process_settings().cache_root

    @property
    def profiles(self) -> tuple[str, ...]:
        return tuple(self["profiles"])

    def process_settings(self) -> settings_mod.Settings:
        """What lower layers see through ``harness.settings.current()``."""
        base = settings_mod.from_sources()      # what the plugin has no option for
        return settings_mod.Settings({**base.values, **self.values})


_SETTINGS = pytest.StashKey[PluginSettings]()


def configure(config: pytest.Config) -> PluginSettings:
    resolved = PluginSettings.from_config(config)
    config.stash[_SETTINGS] = resolved
    settings_mod.configure(resolved.process_settings())
    return resolved


def session_settings(config: pytest.Config) -> PluginSettings:
    return config.stash[_SETTINGS]


def for_item(item: pytest.Item, name: str) -> Setting:
    """Setting ``name`` for one test: its ``kh`` marker first, then the session's."""
    marker = item.get_closest_marker("kh")
    raw = marker.kwargs.get(name) if marker is not None else None
    if raw is None:
        return session_settings(item.config).values[name]
    if name not in PER_TEST:
        raise pytest.UsageError(f"{item.nodeid}: marker kh({name}=...) is not per-test "
                                f"(per-test: {', '.join(PER_TEST)})")
    try:
        return _resolve(item.config, name, marker=str(raw))
    except UsageError as exc:
        raise pytest.UsageError(f"{item.nodeid}: {exc}") from None
