"""One configuration resolver for both faces (the command line and the pytest plugin).

Each setting is declared once (``SETTINGS``): its name, its environment variable, its ini
key, how to parse it and its default.  ``resolve`` picks the first value present in
precedence order, **marker > command line > environment > ini > default**, and keeps
where it came from, so a bad value is refused naming its source (``--kh-accel``,
``KDUMP_HARNESS_ACCEL``, ``ini kh_accel``, ``@pytest.mark.kh(accel=...)``).

This is the only module that reads ``os.environ`` for the harness.  Lower layers ask
``current()`` (the process's settings: environment over defaults, unless a face passed
its own command line to ``configure``) instead of the environment.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

from .errors import UsageError
from .model import Accel, CaptureMode


class Source(StrEnum):
    """Where a value came from, strongest first."""

    MARKER = "marker"
    COMMAND_LINE = "command line"
    ENVIRONMENT = "environment"
    INI = "ini"
    DEFAULT = "default"


class LockPolicy(StrEnum):
    """What to do when the archive no longer has a version packages.lock.json pins."""

    PREFER = "prefer"        # build from the suite's current version and say so
    STRICT = "strict"        # refuse


class HugePages(StrEnum):
    """Transparent huge pages for QEMU (``guest.host_memory``)."""

    AUTO = "auto"            # off under TCG, the host's policy under KVM
    ON = "on"
    OFF = "off"


class TcgThreads(StrEnum):
    """One host thread per vCPU or one for all of a guest's vCPUs (``guest.tcg_threads``)."""

    AUTO = "auto"            # multi while the host's cores fit the guests' vCPUs
    MULTI = "multi"
    SINGLE = "single"


class Keep(StrEnum):
    """Which tests' evidence directories the plugin keeps."""

    FAILED = "failed"
    ALWAYS = "always"
    NEVER = "never"


def _positive_float(text: str) -> float:
    value = float(text)
    if value <= 0:
        raise ValueError("must be positive")
    return value


def _count(text: str) -> int:
    value = int(text)
    if value < 0:
        raise ValueError("must be 0 or more")
    return value


def _choice(enum: type[StrEnum]) -> Callable[[str], Any]:
    def parse(text: str) -> Any:
        try:
            return enum(text)
        except ValueError:
            raise ValueError(f"expected one of {', '.join(e.value for e in enum)}") from None
    return parse


def _profiles(text: str) -> tuple[str, ...]:
    """Profile names; which exist is profiles.toml's to say (``check_profiles``)."""
    return tuple(p.strip() for p in text.split(",") if p.strip())


def check_profiles(setting: Setting, known: tuple[str, ...]) -> None:
    """Refuse profile names profiles.toml does not define, naming the setting's source."""
    unknown = [n for n in setting.value if n not in known]
    if unknown:
        raise UsageError(f"{setting.where}: unknown profile(s) {', '.join(unknown)} "
                         f"(profiles.toml has {', '.join(known)})")


def _switch(text: str) -> bool:
    """on/off (also yes/no, true/false, 1/0)."""
    word = text.strip().lower()
    if word in ("on", "yes", "true", "1"):
        return True
    if word in ("off", "no", "false", "0"):
        return False
    raise ValueError("expected on or off")


def _optional_path(text: str) -> Path | None:
    return Path(text).expanduser() if text else None


@dataclass(frozen=True)
class SettingSpec:
    """One setting: its name (``kh_<name>`` in ini files, ``--kh-<name>`` in pytest),
    its environment variable, how to parse it, its default (text, parsed too)."""

    name: str
    env: str
    parse: Callable[[str], Any]
    default: str
    help: str


SETTINGS: dict[str, SettingSpec] = {s.name: s for s in (
    SettingSpec("accel", "KDUMP_HARNESS_ACCEL", _choice(Accel), "auto",
                "accelerator for guests: auto (probe KVM, fall back to TCG), kvm or tcg"),
    SettingSpec("timeout_scale", "KDUMP_HARNESS_TIMEOUT_SCALE", _positive_float, "1",
                "stretch every deadline by this factor on a slow host (e.g. 1.5)"),
    SettingSpec("cache", "KDUMP_HARNESS_CACHE", _optional_path, "",
                "cache of packages and images (default $XDG_CACHE_HOME/kdump-harness)"),
    SettingSpec("mirror", "KDUMP_HARNESS_MIRROR", str, "",
                "Debian mirror URI (default: the host's apt configuration)"),
    SettingSpec("lock", "KDUMP_HARNESS_LOCK", _choice(LockPolicy), "prefer",
                "prefer: build from the suite's current versions when the archive dropped "
                "a pinned one (and say so); strict: refuse"),
    SettingSpec("guest_images", "KDUMP_HARNESS_GUEST_IMAGES", _optional_path, "",
                "another guest-images/ directory (profiles, lock file, rootfs)"),
    SettingSpec("kernel", "KDUMP_HARNESS_KERNEL", _optional_path, "",
                "your own bzImage: the scenarios boot it with the profile's userspace"),
    SettingSpec("modules", "KDUMP_HARNESS_MODULES", _optional_path, "",
                "the INSTALL_MOD_PATH of your kernel's make modules_install"),
    SettingSpec("kernel_config", "KDUMP_HARNESS_KERNEL_CONFIG", _optional_path, "",
                "your kernel's .config (default: found beside the bzImage's build tree)"),
    SettingSpec("mode", "KDUMP_HARNESS_MODE", _choice(CaptureMode), "headers",
                "what the capture kernel saves in the scenarios: headers, elf, compressed, "
                "full"),
    SettingSpec("snapshot", "KDUMP_HARNESS_SNAPSHOT", _switch, "off",
                "start scenario guests from a cached snapshot of the kdump-ready guest "
                "(on/off): ~0.2 s instead of a boot; made on first use"),
    SettingSpec("huge_pages", "KDUMP_HARNESS_HUGE_PAGES", _choice(HugePages), "auto",
                "transparent huge pages for QEMU: auto (off under TCG, where a fresh huge "
                "page is slow on VM hosts that report free memory; on under KVM), on, off"),
    SettingSpec("tcg_threads", "KDUMP_HARNESS_TCG_THREADS", _choice(TcgThreads), "auto",
                "TCG's vCPU threads: auto (multi-threaded while the other guests' vCPUs and "
                "this one's fit the host's cores, else round-robin on one thread), multi, "
                "single"),
    SettingSpec("guests_at_once", "KDUMP_HARNESS_GUESTS_AT_ONCE", _count, "0",
                "guests the caller runs on this host at once, for tcg_threads=auto between "
                "their runs (0: not said; pytest-xdist's worker count, else only the QEMUs "
                "running)"),
    SettingSpec("artifacts", "KDUMP_HARNESS_ARTIFACTS", Path, "artifacts",
                "directory for per-test evidence"),
    SettingSpec("keep", "KDUMP_HARNESS_KEEP", _choice(Keep), "failed",
                "keep artifact directories: failed, always or never"),
    SettingSpec("profiles", "KDUMP_HARNESS_PROFILES", _profiles, "",
                "comma-separated guest profiles to test (default: all)"),
)}


@dataclass(frozen=True)
class Setting:
    """A resolved value and where it came from (``where``: the exact option or name)."""

    name: str
    value: Any
    source: Source
    where: str


def resolve(name: str, *, marker: str | None = None, cli: str | None = None,
            env: Mapping[str, str] | None = None, ini: str | None = None,
            cli_spelling: str | None = None) -> Setting:
    """The value of setting ``name``: the first of marker, command line, environment,
    ini and default that is given, parsed; ``UsageError`` names its source if it is bad."""
    spec = SETTINGS[name]
    env = os.environ if env is None else env
    candidates = (
        (marker, Source.MARKER, f"marker kh({name}=...)"),
        (cli, Source.COMMAND_LINE, cli_spelling or f"--kh-{name.replace('_', '-')}"),
        (env.get(spec.env), Source.ENVIRONMENT, spec.env),
        (ini, Source.INI, f"ini kh_{name}"),
        (spec.default, Source.DEFAULT, f"the default of {name}"),
    )
    for raw, source, where in candidates:
        if raw is None or (source is Source.INI and raw == ""):
            continue
        try:
            value = spec.parse(raw)
        except ValueError as exc:
            raise UsageError(f"{where}={raw!r}: {exc}") from None
        return Setting(name, value, source, where)
    raise AssertionError("the default is always given")  # pragma: no cover


@dataclass(frozen=True)
class Settings:
    """The resolved settings of this process (see ``current``)."""

    values: Mapping[str, Setting] = field(default_factory=dict)

    def __getitem__(self, name: str) -> Any:
        return self.values[name].value

    def source(self, name: str) -> Setting:
        return self.values[name]

    @property
    def accel(self) -> Accel:
        return Accel(self["accel"])

    @property
    def timeout_scale(self) -> float:
        return float(self["timeout_scale"])

    @property
    def huge_pages(self) -> HugePages:
        return HugePages(self["huge_pages"])

    @property
    def tcg_threads(self) -> TcgThreads:
        return TcgThreads(self["tcg_threads"])

    @property
    def guests_at_once(self) -> int:
        """What the caller said, else pytest-xdist's worker count (each worker runs its own
        guests), else 0."""
        said = int(self["guests_at_once"])
        workers = self._env("PYTEST_XDIST_WORKER_COUNT") or ""
        return said or (int(workers) if workers.isdigit() else 0)

    @property
    def cache_root(self) -> Path:
        chosen: Path | None = self["cache"]
        if chosen is not None:
            return chosen
        xdg = self._env("XDG_CACHE_HOME")
        return (Path(xdg) if xdg else Path.home() / ".cache") / "kdump-harness"

    @property
    def mirror(self) -> str | None:
        return str(self["mirror"]) or None

    @property
    def lock(self) -> LockPolicy:
        return LockPolicy(self["lock"])

    @property
    def guest_images(self) -> Path | None:
        value: Path | None = self["guest_images"]
        return value

    @staticmethod
    def _env(name: str) -> str | None:
        # The XDG base directory is the host's, not a harness setting: read it here too.
        return os.environ.get(name) or None


def from_sources(*, cli: Mapping[str, str | None] | None = None,
                 env: Mapping[str, str] | None = None,
                 ini: Mapping[str, str | None] | None = None,
                 names: tuple[str, ...] | None = None) -> Settings:
    """Resolve every setting (or ``names``) from a face's command line, the environment
    and its ini file."""
    cli, ini = cli or {}, ini or {}
    chosen = names or tuple(n for n in SETTINGS if n != "profiles")
    return Settings({n: resolve(n, cli=cli.get(n), env=env, ini=ini.get(n)) for n in chosen})


#: The process's settings (a one-slot holder rather than a rebound global).
_CURRENT: list[Settings] = []


def current() -> Settings:
    """This process's settings: what a face configured, else environment over defaults."""
    if not _CURRENT:
        _CURRENT.append(from_sources())
    return _CURRENT[0]


def default_for_process(name: str, value: str) -> None:
    """Give this process's environment a value for setting ``name`` unless it has one (a
    worker process of ours, told by its parent; later resolutions see it)."""
    os.environ.setdefault(SETTINGS[name].env, value)


def child_environment(**defaults: str) -> dict[str, str]:
    """This process's environment for a child process of ours, with a value for each
    setting in ``defaults`` that the environment does not already give."""
    return {SETTINGS[name].env: value for name, value in defaults.items()} | dict(os.environ)


def configure(settings: Settings) -> None:
    """Make ``settings`` the process's (the command line and the plugin call this once)."""
    _CURRENT[:] = [settings]


@contextmanager
def configured(settings: Settings | None = None) -> Iterator[Settings]:
    """``settings`` (default: resolved again from the environment now) for the duration of
    a block, then the previous ones again (tests; a run with its own settings)."""
    saved = list(_CURRENT)
    chosen = settings if settings is not None else from_sources()
    configure(chosen)
    try:
        yield chosen
    finally:
        _CURRENT[:] = saved
