"""``kdump-harness images``: parsing and one-line errors (through a throwaway parser)."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from harness.cli import images as images_cli
from harness.errors import HarnessError


def run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    parser = argparse.ArgumentParser(prog="kdump-harness")
    images_cli.register(parser.add_subparsers())
    args = parser.parse_args(argv)
    try:
        status = args.func(args)
    except HarnessError as exc:  # what harness.cli.main does
        print(f"kdump-harness: error: {exc}")
        status = 2
    out, err = capsys.readouterr()
    return status, out, err


def test_subcommands_parse() -> None:
    parser = argparse.ArgumentParser()
    images_cli.register(parser.add_subparsers())
    args = parser.parse_args(["images", "build", "--profile", "sid", "--flavour", "generic",
                              "--rebuild", "--mirror", "http://archive.example.invalid/debian"])
    assert args.func is images_cli.cmd_build and args.rebuild and args.flavour == "generic"
    args = parser.parse_args(["images", "update", "--profile", "bookworm"])
    assert args.func is images_cli.cmd_update
    assert parser.parse_args(["images", "list"]).func is images_cli.cmd_list
    assert parser.parse_args(["images", "path"]).func is images_cli.cmd_path


@pytest.mark.parametrize(("argv", "message"), [
    (["images", "path", "--profile", "jessie"], "unknown profile 'jessie'"),
    (["images", "build", "--modules", "/tmp"], "--modules and --config go with --kernel"),
    (["images", "build", "--kernel", "/nonexistent/bzImage"], "no such file"),
    (["images", "update", "--profile", "jessie"], "unknown profile 'jessie'"),
])
def test_bad_input_is_one_line(argv: list[str], message: str, cache_dir: Path,
                               capsys: pytest.CaptureFixture[str]) -> None:
    status, out, _ = run(argv, capsys)
    assert status == 2 and message in out and "Traceback" not in out
    assert len(out.strip().splitlines()) == 1


def test_path_of_an_unbuilt_image(cache_dir: Path, rootfs: Path,
                                  capsys: pytest.CaptureFixture[str]) -> None:
    status, out, err = run(["images", "path", "--rootfs", str(rootfs)], capsys)
    assert status == 1 and out.strip().startswith(str(cache_dir / "images" / "trixie-cloud-"))
    assert "not built yet" in err


def test_list_on_an_empty_cache(cache_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    status, out, err = run(["images", "list"], capsys)
    assert status == 0 and out == "" and "no images cached yet" in err
    status, out, _ = run(["images", "list", "--json"], capsys)
    assert status == 0 and out.strip() == "[]"
