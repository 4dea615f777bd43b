"""``kdump-harness swarm``: option layout (hot-add --cpus, --boot-cpus, replay) and plans."""

from __future__ import annotations

import pytest

from harness.cli import build_parser, main
from harness.cli.swarm import plan_from_args
from harness.hotplug import Action, Timing
from harness.units import MiB


def parse(*argv: str) -> object:
    return build_parser().parse_args(["swarm", *argv])


def test_cpus_hot_adds_and_boot_cpus_is_separate(capsys: pytest.CaptureFixture[str]) -> None:
    args = parse("--dimms", "16x256M", "--add-cpus", "6")
    assert args.add_cpus == 6 and args.cpus == 2          # type: ignore[attr-defined]
    assert capsys.readouterr().err == ""
    # The old spelling keeps the meaning it had in each command, with a warning.
    args = parse("--dimms", "16x256M", "--cpus", "6")
    assert args.add_cpus == 6 and args.cpus == 2          # type: ignore[attr-defined]
    assert "--cpus is deprecated here; use --add-cpus" in capsys.readouterr().err
    boot = build_parser().parse_args(["boot", "--cpus", "3"])
    assert boot.cpus == 3                                  # type: ignore[attr-defined]
    assert "use --boot-cpus" in capsys.readouterr().err
    args = parse("--boot-cpus", "4", "--add-cpus", "2", "--maxcpus", "32")
    assert (args.cpus, args.add_cpus, args.maxcpus) == (4, 2, 32)  # type: ignore[attr-defined]
    assert args.swarm_command is None                      # type: ignore[attr-defined]


def test_replay_subcommand() -> None:
    args = parse("replay", "t.json", "--timing", "recorded", "--json")
    assert args.swarm_command == "replay"                  # type: ignore[attr-defined]
    assert str(args.transcript) == "t.json"                # type: ignore[attr-defined]
    assert args.profile is None and args.json              # type: ignore[attr-defined]


def test_plan_from_args() -> None:
    plan = plan_from_args(parse("--dimms", "16x256M", "--add-cpus", "6", "--unplug", "8",
                                "--seed", "3", "--timing", "paced:0.1"))  # type: ignore[arg-type]
    assert plan.count(Action.PLUG_DIMM) == 16 and plan.count(Action.UNPLUG_DIMM) == 8
    assert plan.count(Action.PLUG_CPU) == 6 and plan.seed == 3
    assert plan.timing == Timing("paced", 0.1)
    assert plan == plan_from_args(parse("--dimms", "16x256M", "--add-cpus", "6", "--unplug", "8",
                                        "--seed", "3", "--timing", "paced:0.1"))  # type: ignore[arg-type]
    vmem = plan_from_args(parse("--virtio-mem", "1G:256M"))  # type: ignore[arg-type]
    assert [e.size for e in vmem.events] == [1024 * MiB, 256 * MiB]
    rnd = plan_from_args(parse("--dimms", "8x256M", "--add-cpus", "4", "--random",
                               "--seed", "11"))  # type: ignore[arg-type]
    assert rnd.name == "random-11" and rnd.count(Action.PLUG_CPU) <= 4


def test_usage_errors_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["swarm", "--random"]) == 2
    assert "--random needs --seed" in capsys.readouterr().err
    assert main(["swarm", "--add-cpus", "7", "--maxcpus", "8"]) == 2
    assert "exceed --maxcpus 8" in capsys.readouterr().err
    assert main(["swarm", "replay", "/nonexistent.json"]) == 2
    assert "cannot read transcript" in capsys.readouterr().err
