"""Synthetic result lines for the report's tests and benchmark (no guest is booted).

Like ``vmcore.writer`` for dumps: a small, seeded writer of realistic input.  The cells
mirror the nightly matrix (profile x shape x trigger x kexec) plus repro recipes; the
rates mirror what the README reports (unplug cells stale on 6.12/7.2, reload contention
often stale, a mid-burst panic often without a dump).
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Sequence
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

from ..campaign.line import RESULTS_FILE, Kind, ResultLine, Staleness, write_lines
from ..results import Result

KERNELS = {"bookworm": "6.1.0-28-cloud-amd64", "trixie": "6.12.117-cloud-amd64",
           "sid": "7.2.13-cloud-amd64"}
SHAPES = ("burst-16dimm-6cpu", "unplug-half-dimms", "unplug-vcpus", "seeded-shuffle",
          "contention-reload", "panic-after-4")
TRIGGERS = ("sysrq", "nmi")
KEXEC = ("file", "classic")
#: Median seconds of each phase under TCG on a busy two-core host (README's measurements).
PHASE_MEDIANS = {"boot_to_kdump_ready": 6.0, "swarm_settle": 2.0, "panic_to_capture": 3.2,
                 "dump_write": 0.5, "verify": 0.2}


def make_line(**fields: object) -> ResultLine:
    """One line with defaults for everything not given (tests name only what matters)."""
    base = ResultLine(campaign="nightly-20261201", cell="trixie-burst-16dimm-6cpu-sysrq-file",
                      iteration=0, kind=Kind.CRASH, result=Result.ACCURATE,
                      expected=Result.ACCURATE, profile="trixie",
                      kernel_release=KERNELS["trixie"], seed=1000, accel="tcg", qemu="10.0.2",
                      started="2026-12-01T01:00:00Z", host="ci-1",
                      times={"panic_to_capture": 3.2, "total": 12.0})
    return replace(base, **fields)  # type: ignore[arg-type]


def _expected(profile: str, shape: str) -> Result:
    # 6.1 runs with udev-like reloads (always accurate); 6.12/7.2 keep the last unplugged
    # DIMM in the header, so their unplug cells expect stale (a negative control).
    if profile != "bookworm" and shape == "unplug-half-dimms":
        return Result.STALE
    return Result.ACCURATE


def _result(rng: random.Random, profile: str, shape: str) -> Result:
    roll = rng.random()
    if roll < 0.01:
        return Result.HARNESS_ERROR
    if shape == "panic-after-4" and roll < 0.6:
        return Result.KDUMP_DID_NOT_OCCUR
    if shape == "contention-reload" and roll < 0.45:
        return Result.STALE
    if roll < 0.025:
        return rng.choice((Result.CAPTURE_FAILED, Result.STALE, Result.BOOT_FAILURE))
    return _expected(profile, shape)


def _times(rng: random.Random, result: Result) -> dict[str, float | None]:
    times: dict[str, float | None] = {
        k: round(m * rng.lognormvariate(0, 0.25), 3) for k, m in PHASE_MEDIANS.items()}
    if result in (Result.KDUMP_DID_NOT_OCCUR, Result.CAPTURE_FAILED, Result.HARNESS_ERROR):
        times.update(dump_write=None, verify=None)
    times["total"] = round(sum(v for v in times.values() if v is not None) + 1.5, 3)
    return times


def _line(rng: random.Random, campaign: str, night: datetime, cell: tuple[str, str, str, str],
          iteration: int) -> ResultLine:
    profile, shape, trigger, kexec = cell
    name = "-".join(cell)
    result = _result(rng, profile, shape)
    expected = _expected(profile, shape)
    seed = 1000 + iteration
    stale = result is Result.STALE
    failed = result is not expected
    dimms = rng.randint(1, 4) if stale else 0
    return ResultLine(
        campaign=campaign, cell=name, iteration=iteration, kind=Kind.CRASH, result=result,
        expected=expected, profile=profile, kernel_release=KERNELS[profile], seed=seed,
        accel=rng.choice(("tcg", "kvm")), qemu="10.0.2",
        reason=f"synthetic {result.value}", host=f"ci-{rng.randint(1, 3)}",
        started=(night + timedelta(seconds=20 * iteration)).strftime("%Y-%m-%dT%H:%M:%SZ"),
        trylock_failures=(rng.randint(1, 32) if shape == "contention-reload" and stale
                          else 0 if shape == "contention-reload" else None),
        staleness=Staleness(mib=256.0 * dimms, dimms=dimms, cpus=rng.randint(0, 1) if stale else 0),
        times=_times(rng, result),
        config={"profile": profile, "shape": shape, "trigger": trigger, "kexec": kexec,
                "update": "kernel" if profile != "bookworm" else "reload",
                "contention": "reload" if shape == "contention-reload" else "none"},
        evidence=f"evidence/{name}/{iteration:04d}" if failed else None,
        replay=f"kdump-harness run --profile {profile} --trigger {trigger} --kexec {kexec} "
               f"--seed {seed}")


def cells() -> list[tuple[str, str, str, str]]:
    return [(p, s, t, k) for p in KERNELS for s in SHAPES for t in TRIGGERS for k in KEXEC]


def synthesise(count: int, *, nights: int = 7, seed: int = 0,
               start: datetime = datetime(2026, 12, 1, 1, 0, tzinfo=UTC)) -> list[ResultLine]:
    """``count`` lines spread over ``nights`` campaigns and every cell, deterministically."""
    rng = random.Random(seed)
    all_cells = cells()
    out = []
    per_night = max(1, count // nights)
    for i in range(count):
        night = min(i // per_night, nights - 1)
        when = start + timedelta(days=night)
        cell = all_cells[i % len(all_cells)]
        out.append(_line(rng, f"nightly-{when:%Y%m%d}", when, cell, i))
    return out


def write_campaigns(root: Path, lines: Iterable[ResultLine],
                    *, evidence: bool = True) -> list[Path]:
    """Each campaign's lines into ``root/<campaign>/results.jsonl``, as a campaign would;
    with ``evidence``, the failing lines' evidence directories are made (links resolve)."""
    by_campaign: dict[str, list[ResultLine]] = {}
    for line in lines:
        by_campaign.setdefault(line.campaign, []).append(line)
    dirs = []
    for campaign, group in sorted(by_campaign.items()):
        d = root / campaign
        d.mkdir(parents=True, exist_ok=True)
        write_lines(d / RESULTS_FILE, group)
        if evidence:
            for line in group:
                if line.evidence and not Path(line.evidence).is_absolute():
                    (d / line.evidence).mkdir(parents=True, exist_ok=True)
        dirs.append(d)
    return dirs


def shifted(lines: Sequence[ResultLine], *, campaign: str, stale_to: Result) -> list[ResultLine]:
    """The same lines as another campaign with every stale result replaced (a fixed kernel
    for the baseline comparison's tests)."""
    return [replace(x, campaign=campaign,
                    result=stale_to if x.result is Result.STALE else x.result) for x in lines]
