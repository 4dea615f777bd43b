"""Guests' socket directories: named after their process; stale ones swept, live ones never."""

from __future__ import annotations

import os
import socket
import subprocess
import tempfile
from pathlib import Path

import pytest

from harness.guest import sockdir


def _dead_pid() -> int:
    child = subprocess.Popen(["true"])
    child.wait()
    return child.pid


def _guest_dir(parent: Path, pid: int, suffix: str = "abc_12") -> Path:
    """What a guest leaves when its harness is SIGKILLed: FIFOs and a socket file."""
    d = parent / f"kh-{pid}-{suffix}"
    d.mkdir()
    os.mkfifo(d / "console.in")
    os.mkfifo(d / "console.out")
    with socket.socket(socket.AF_UNIX) as s:
        s.bind(str(d / "qmp.sock"))          # closed at once: the file stays, nobody holds it
    return d


def test_a_dead_processs_directory_is_swept(tmp_path: Path) -> None:
    stale = _guest_dir(tmp_path, _dead_pid())
    assert sockdir.sweep_stale(tmp_path) == [stale]
    assert not stale.exists()


def test_a_live_processs_directory_stays(tmp_path: Path) -> None:
    live = _guest_dir(tmp_path, os.getpid())
    assert sockdir.sweep_stale(tmp_path) == [] and live.exists()


def test_a_directory_whose_socket_someone_holds_stays(tmp_path: Path) -> None:
    # A harness in another PID namespace: its pid means nothing here, its socket does.
    held = tmp_path / f"kh-{_dead_pid()}-held"
    held.mkdir()
    with socket.socket(socket.AF_UNIX) as server:
        server.bind(str(held / "qmp.sock"))
        server.listen(1)
        assert sockdir.sweep_stale(tmp_path) == [] and held.exists()
    assert sockdir.sweep_stale(tmp_path) == [held]


def test_other_names_are_left_alone(tmp_path: Path) -> None:
    others = [tmp_path / name for name in ("kh-bench-boot-x1", "kh-ic-abc", "kh-0a1b2c3d",
                                           "kdump-123-x")]
    for d in others:
        d.mkdir()
    (tmp_path / f"kh-{_dead_pid()}-file").write_text("not a directory")
    assert sockdir.sweep_stale(tmp_path) == []
    assert all(d.exists() for d in others)


def test_a_process_names_its_directories_and_sweeps_once(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    monkeypatch.setattr(sockdir, "_SWEPT_BY", set())
    stale = _guest_dir(tmp_path, _dead_pid())
    first = sockdir.make_sockdir()
    assert first.parent == tmp_path and first.name.startswith(f"kh-{os.getpid()}-")
    assert not stale.exists()
    again = _guest_dir(tmp_path, _dead_pid(), "later")
    second = sockdir.make_sockdir()
    assert second != first and again.exists()      # one sweep per process
    assert len(str(second / "ssh-pre.sock")) < 108
