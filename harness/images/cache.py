"""The on-disk cache: downloaded .debs by SHA256, built images by content hash, apt state.

Layout under the cache root (``$KDUMP_HARNESS_CACHE``, else ``$XDG_CACHE_HOME/kdump-harness``,
else ``~/.cache/kdump-harness``)::

    debs/<sha256>.deb                  every package ever downloaded, verified
    apt/<profile>/                     private apt configuration and lists per profile
    images/<profile>-<flavour>-<key>/  one built image (see image.py; the key: plan.py)
    locks/<key>.lock                   flock files: one builder per image at a time
    fallback/<key>.json                the packages that replaced a lock state the archive
                                       dropped (see lock_fallback.py)
"""

from __future__ import annotations

import fcntl
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from ..errors import HostError


def default_cache_root() -> Path:
    """Where images and packages are cached (the ``cache`` setting, see the module
    docstring)."""
    from ..settings import current

    return current().cache_root


class Cache:
    """Paths and atomic operations in one cache root."""

    def __init__(self, root: Path | None = None) -> None:
        self.root = (root or default_cache_root()).absolute()
        try:
            for sub in ("debs", "apt", "images", "locks", "fallback"):
                (self.root / sub).mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise HostError(f"cannot create the cache directory {self.root}: {exc.strerror} "
                            f"(set KDUMP_HARNESS_CACHE to a writable directory)") from None

    def deb_path(self, sha256: str) -> Path:
        return self.root / "debs" / f"{sha256}.deb"

    def apt_dir(self, profile: str) -> Path:
        return self.root / "apt" / profile

    def images_dir(self) -> Path:
        return self.root / "images"

    def image_dir(self, profile: str, flavour: str, key: str) -> Path:
        return self.images_dir() / f"{profile}-{flavour}-{key[:16]}"

    def scratch_dir(self, prefix: str) -> Path:
        """A fresh directory on the cache's filesystem (so a rename into place is atomic)."""
        return Path(tempfile.mkdtemp(prefix=f".{prefix}-", dir=self.images_dir()))

    @contextmanager
    def lock(self, name: str) -> Iterator[None]:
        """Hold ``locks/<name>.lock`` exclusively (blocks while another process holds it)."""
        path = self.root / "locks" / f"{name}.lock"
        with path.open("a") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def write_fallback(self, key: str, text: str) -> None:
        """Record (atomically) what replaced the lock state ``key``."""
        fd, tmp = tempfile.mkstemp(prefix=".fallback-", dir=self.root / "fallback")
        with os.fdopen(fd, "w") as handle:
            handle.write(text)
        os.replace(tmp, self.root / "fallback" / f"{key}.json")

    def read_fallback(self, key: str) -> str | None:
        try:
            return (self.root / "fallback" / f"{key}.json").read_text()
        except FileNotFoundError:
            return None

    def store_deb(self, downloaded: Path, sha256: str) -> Path:
        """Move a verified download into ``debs/`` atomically and return its cached path."""
        final = self.deb_path(sha256)
        os.replace(downloaded, final)
        return final

    def install_directory(self, built: Path, final: Path, *, last: str) -> None:
        """Put the files of ``built`` at ``final``; the file named ``last`` goes in last.

        A new image is one rename. A rebuild replaces the files one by one with rename(2),
        so a guest starting meanwhile (another xdist worker) always finds every path: the
        directory never disappears, as it would if swapped whole. Builds are deterministic
        and the directory name is the hash of their inputs, so old and new files match.
        """
        try:
            os.rename(built, final)
            return
        except OSError:
            if not final.is_dir():
                raise
        names = sorted(p.name for p in built.iterdir())
        for name in sorted(names, key=lambda n: n == last):
            os.replace(built / name, final / name)
        for stale in final.iterdir():
            if stale.name not in names:
                if stale.is_dir():
                    shutil.rmtree(stale, ignore_errors=True)
                else:
                    stale.unlink()
        built.rmdir()
