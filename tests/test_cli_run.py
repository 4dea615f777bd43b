"""``kdump-harness run`` refuses bad usage with exit status 2 before anything starts."""

from __future__ import annotations

import pytest

from harness import images
from harness.cli import main


@pytest.fixture(autouse=True)
def no_image_build(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("bad usage must be refused before the image build")

    monkeypatch.setattr(images, "build_image", refuse)


@pytest.mark.parametrize(("argv", "message"), [
    (["--memory", "100G"], "--memory 100G is more than --maxmem 20G"),
    (["--dimms", "3x100M"], "multiple"),
    (["--trigger", "sysrq-multi", "--cpu", "1"], "sysrq-multi needs at least two"),
    (["--trigger", "nmi", "--cpu", "1"], "takes no --cpu"),
    (["--cpu", "9"], "--cpu 9: the guest has CPUs 0-7"),
    (["--dimms", "256x256M", "--slots", "256", "--maxmem", "80G"], "Raise --memory"),
    (["--expect", "fine"], "invalid choice"),
])
def test_refused_with_exit_status_2(argv: list[str], message: str,
                                    capsys: pytest.CaptureFixture[str]) -> None:
    try:
        status = main(["run", *argv])
    except SystemExit as exc:      # argparse's own refusals
        status = int(exc.code or 0)
    assert status == 2
    assert message in capsys.readouterr().err
