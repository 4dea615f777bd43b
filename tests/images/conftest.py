"""Shared fixtures for the image builder tests: a private cache and a tiny rootfs."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from harness import settings
from harness.images.cache import default_cache_root


@pytest.fixture
def user_cache() -> Path:
    """The real cache root (read only here: the .debs a previous build downloaded)."""
    return default_cache_root()


@pytest.fixture
def cache_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A private, empty cache for the test (also the harness's cache setting meanwhile)."""
    path = tmp_path / "cache"
    monkeypatch.setenv("KDUMP_HARNESS_CACHE", str(path))
    with settings.configured():
        yield path


@pytest.fixture
def rootfs(tmp_path: Path) -> Path:
    """A minimal guest rootfs: an executable /init and a helper."""
    root = tmp_path / "rootfs"
    (root / "harness").mkdir(parents=True)
    (root / "init").write_text("#!/bin/busybox sh\nexec /bin/busybox sh\n")
    os.chmod(root / "init", 0o755)
    (root / "harness" / "lib.sh").write_text("say() { echo \"$*\"; }\n")
    return root
