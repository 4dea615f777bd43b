"""Debian packages through ``apt-get``, in a private state directory.

Nothing is ever installed on the host: apt runs with its own ``Dir::Etc``, ``Dir::State``,
``Dir::Cache`` and an empty dpkg status file, so the host's package database and lists are
neither read nor touched, and guest suites (trixie, sid) never reach the host's sources.
The mirror comes from the host's apt configuration (or ``--mirror``); it is never written into
the code. The host's apt.conf.d is still read by apt, which is what we want (proxies).
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import re
import shutil
import subprocess
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from ..errors import HostError, ImageBuildError, UsageError

DEBIAN_KEYRING = Path("/usr/share/keyrings/debian-archive-keyring.gpg")
ARCHITECTURE = "amd64"

#: Suite names that identify a Debian archive entry (security and other add-on
#: archives are rejected because they carry only a few packages).
DEBIAN_SUITES = frozenset({
    "buster", "bullseye", "bookworm", "trixie", "forky", "duke", "sid",
    "oldoldstable", "oldstable", "stable", "testing", "unstable", "experimental",
})


@dataclass(frozen=True)
class SourceEntry:
    """One ``deb`` source: a URI with its suites and components."""

    uri: str
    suites: tuple[str, ...]
    components: tuple[str, ...]
    origin: str  # file it came from, for messages


def _strip_comment(line: str) -> str:
    return line.split("#", 1)[0].strip()


def parse_one_line_sources(text: str, origin: str = "sources.list") -> list[SourceEntry]:
    """Parse the one-line format: ``deb [opt=val ...] URI SUITE [COMPONENT...]``."""
    entries = []
    for raw in text.splitlines():
        line = _strip_comment(raw)
        if not line:
            continue
        line = re.sub(r"\[[^\]]*\]", " ", line)  # options such as [signed-by=... arch=...]
        words = line.split()
        if len(words) < 3 or words[0] != "deb":
            continue
        entries.append(SourceEntry(words[1], (words[2],), tuple(words[3:]), origin))
    return entries


def parse_deb822_sources(text: str, origin: str = "debian.sources") -> list[SourceEntry]:
    """Parse the deb822 format (``Types:``, ``URIs:``, ``Suites:``, ``Components:``)."""
    entries = []
    for stanza in _deb822_stanzas(text):
        fields = {k.lower(): v for k, v in stanza.items()}
        if "deb" not in fields.get("types", "").split():
            continue
        if fields.get("enabled", "yes").strip().lower() == "no":
            continue
        suites = tuple(fields.get("suites", "").split())
        components = tuple(fields.get("components", "").split())
        for uri in fields.get("uris", "").split():
            entries.append(SourceEntry(uri, suites, components, origin))
    return entries


def _deb822_stanzas(text: str) -> Iterator[dict[str, str]]:
    """Stanzas of a deb822 file; comment lines are dropped, continuation lines joined."""
    stanza: dict[str, str] = {}
    last: str | None = None
    for raw in text.splitlines() + [""]:
        if raw.startswith("#"):
            continue
        if not raw.strip():
            if stanza:
                yield stanza
            stanza, last = {}, None
        elif raw[0] in " \t" and last is not None:
            stanza[last] += "\n" + raw.strip()
        elif ":" in raw:
            key, value = raw.split(":", 1)
            last = key.strip()
            stanza[last] = value.strip()


def is_debian_archive(entry: SourceEntry) -> bool:
    """A URI serving Debian's main archive (not security, not a third-party repository)."""
    if not entry.uri.startswith(("http://", "https://", "ftp://", "file:", "mirror+")):
        return False
    for suite in entry.suites:
        base, _, suffix = suite.partition("-")
        if base in DEBIAN_SUITES and suffix != "security" and "main" in entry.components:
            return True
    return False


def host_source_entries(etc_apt: Path = Path("/etc/apt")) -> list[SourceEntry]:
    """All ``deb`` entries in apt's reading order: sources.list, then sources.list.d sorted."""
    entries: list[SourceEntry] = []
    main = etc_apt / "sources.list"
    if main.is_file():
        entries += parse_one_line_sources(main.read_text(errors="replace"), str(main))
    parts = etc_apt / "sources.list.d"
    if parts.is_dir():
        for path in sorted(parts.iterdir()):
            if path.suffix == ".list":
                entries += parse_one_line_sources(path.read_text(errors="replace"), str(path))
            elif path.suffix == ".sources":
                entries += parse_deb822_sources(path.read_text(errors="replace"), str(path))
    return entries


def detect_mirror(etc_apt: Path = Path("/etc/apt")) -> str:
    """The first Debian archive URI in the host's apt configuration.

    Raises ``HostError`` when there is none, telling the user to pass ``--mirror``.
    """
    for entry in host_source_entries(etc_apt):
        if is_debian_archive(entry):
            return entry.uri.rstrip("/")
    raise HostError(f"no Debian archive found in {etc_apt}/sources.list or "
                    f"{etc_apt}/sources.list.d: pass --mirror URI or set KDUMP_HARNESS_MIRROR")


def resolve_mirror(mirror: str | None) -> str:
    """``--mirror`` if given, else ``KDUMP_HARNESS_MIRROR``, else the host's first Debian
    archive (validated either way)."""
    from ..settings import current

    mirror = mirror or current().mirror
    if mirror is None:
        return detect_mirror()
    if not re.match(r"^(https?|ftp|file):", mirror):
        raise UsageError(f"--mirror {mirror!r}: expected an http://, https://, ftp:// or "
                         "file: URI of a Debian archive")
    return mirror.rstrip("/")


def parse_control_records(text: str) -> list[dict[str, str]]:
    """Records of ``apt-cache show`` / a DEBIAN/control file (keys as written)."""
    # The same deb822 stanza grammar as sources files (control data has no comments).
    return list(_deb822_stanzas(text))


def depends_names(field: str) -> list[str]:
    """Package names of a ``Depends:`` field (first choice of each alternative, no versions)."""
    names = []
    for clause in field.split(","):
        first = clause.split("|")[0].strip()
        name = re.split(r"[\s(:\[]", first, maxsplit=1)[0]
        if name:
            names.append(name)
    return names


class AptState:
    """A private apt configuration and state for some suites of one mirror.

    apt runs with ``Debug::NoLocking`` (it cannot take the system lock without root and must
    not touch it anyway), so concurrent users of one state directory (pytest-xdist workers)
    are serialised with our own ``flock`` on ``<root>/lock``.
    """

    def __init__(self, root: Path, mirror: str, suites: Sequence[str]) -> None:
        self.root = root
        self.mirror = mirror
        self.suites = tuple(suites)
        if shutil.which("apt-get") is None:
            raise HostError("apt-get not found: building guest images needs a Debian or "
                            "Ubuntu host (apt and dpkg)")
        if not DEBIAN_KEYRING.is_file():
            raise HostError(f"{DEBIAN_KEYRING} is missing: install debian-archive-keyring")

    # -- layout -----------------------------------------------------------------

    @property
    def sources_list(self) -> str:
        return "".join(f"deb [signed-by={DEBIAN_KEYRING}] {self.mirror} {suite} main\n"
                       for suite in self.suites)

    def _prepare(self) -> None:
        for sub in ("etc/apt.conf.d", "etc/preferences.d", "etc/sources.list.d",
                    "etc/trusted.gpg.d", "state/lists/partial", "cache/archives/partial"):
            (self.root / sub).mkdir(parents=True, exist_ok=True)
        status = self.root / "status"
        if not status.exists():
            status.write_text("")
        sources = self.root / "etc" / "sources.list"
        if not sources.exists() or sources.read_text() != self.sources_list:
            sources.write_text(self.sources_list)

    def options(self) -> list[str]:
        opts = {
            "Dir::Etc": self.root / "etc",
            "Dir::State": self.root / "state",
            "Dir::Cache": self.root / "cache",
            "Dir::State::status": self.root / "status",
            "Debug::NoLocking": "1",
            "APT::Architecture": ARCHITECTURE,
            # Only amd64 indexes, whatever foreign architectures the host's dpkg has.
            "APT::Architectures": ARCHITECTURE,
            "Acquire::Languages": "none",
        }
        if os.geteuid() == 0:
            # As root apt drops to the _apt user for downloads, which cannot write into our
            # private directories ("Download is performed unsandboxed as root").
            opts["APT::Sandbox::User"] = "root"
        args = []
        for key, value in opts.items():
            args += ["-o", f"{key}={value}"]
        return args

    def _run(self, argv: Sequence[str], *, cwd: Path | None = None) -> str:
        command = [argv[0], *self.options(), *argv[1:]]
        try:
            proc = subprocess.run(command, cwd=cwd, capture_output=True, text=True, check=False)
        except OSError as exc:
            raise HostError(f"cannot run {argv[0]}: {exc}") from exc
        if proc.returncode != 0:
            raise AptCommandError(argv, proc.returncode, proc.stderr.strip() or proc.stdout)
        return proc.stdout

    @contextmanager
    def locked(self) -> Iterator[AptState]:
        """Hold this state directory exclusively (update, show and download)."""
        self.root.mkdir(parents=True, exist_ok=True)
        with (self.root / "lock").open("a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                self._prepare()
                yield self
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    # -- operations (call inside ``locked()``) ------------------------------------

    def _stamp(self) -> Path:
        return self.root / "updated-for"

    def _sources_digest(self) -> str:
        return hashlib.sha256(self.sources_list.encode()).hexdigest()

    def is_updated(self) -> bool:
        stamp = self._stamp()
        return stamp.exists() and stamp.read_text().strip() == self._sources_digest()

    def update(self) -> None:
        """``apt-get update`` for our suites only."""
        try:
            self._run(["apt-get", "update", "-q"])
        except AptCommandError as exc:
            raise ImageBuildError(f"apt-get update failed for {' '.join(self.suites)} from "
                                  f"{self.mirror}", details=exc.output) from exc
        self._stamp().write_text(self._sources_digest() + "\n")

    def ensure_updated(self) -> None:
        if not self.is_updated():
            self.update()

    def show(self, specs: Sequence[str]) -> list[dict[str, str]]:
        """Records of ``apt-cache show --no-all-versions`` (``name`` or ``name=version``)."""
        if not specs:
            return []
        try:
            out = self._run(["apt-cache", "show", "--no-all-versions", *specs])
        except AptCommandError as exc:
            raise ImageBuildError(
                f"apt-cache cannot find {', '.join(specs)} in {' '.join(self.suites)}",
                details=exc.output) from exc
        return parse_control_records(out)

    def candidates(self, names: Sequence[str]) -> dict[str, dict[str, str]]:
        """The candidate record of each package (the suite's current version)."""
        records = {r["Package"]: r for r in self.show(names)}
        missing = [n for n in names if n not in records]
        if missing:
            raise ImageBuildError(f"not in {' '.join(self.suites)}: {', '.join(missing)}")
        return records

    def download(self, name: str, version: str, dest: Path) -> Path:
        """``apt-get download name=version`` into ``dest``; returns the .deb path."""
        dest.mkdir(parents=True, exist_ok=True)
        before = set(dest.iterdir())
        self._run(["apt-get", "download", "-q", f"{name}={version}"], cwd=dest)
        new = [p for p in dest.iterdir() if p not in before and p.suffix == ".deb"]
        if len(new) != 1:
            raise ImageBuildError(f"apt-get download {name}={version} left {len(new)} files "
                                  f"in {dest}")
        return new[0]


class AptCommandError(ImageBuildError):
    """An apt command failed; ``output`` (also ``details``) holds what it said.

    ``AptState.update``/``show`` and ``packages.fetch_debs`` re-raise it as an error that
    names what was being fetched; one that escapes is still an ``ImageBuildError``.
    """

    def __init__(self, argv: Sequence[str], status: int, output: str) -> None:
        super().__init__(f"{' '.join(argv)} exited with {status}", details=output or None)
        self.argv = list(argv)
        self.status = status
        self.output = output


def record_is_pinnable(record: Mapping[str, str]) -> bool:
    """A Packages record with what the lock needs."""
    return all(k in record for k in ("Package", "Version", "Filename", "SHA256", "Size"))
