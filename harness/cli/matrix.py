"""``kdump-harness matrix list|run``: the nightly matrix from ``ci/matrix.toml``."""

from __future__ import annotations

import argparse
import sys
from collections import defaultdict
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import HarnessError, UsageError
from .common import print_json

if TYPE_CHECKING:
    from ..campaign.iteration import Task
    from ..matrix.plan import RunPlan

DESCRIPTION = """\
The nightly matrix: kernels x hot-plug shapes x contention x triggers x load syscalls x
update strategies x dump modes, defined in ci/matrix.toml (groups of crossed values,
exclusions with their reasons, expected results by rules).  Each cell is one set of
`kdump-harness run` options.

  matrix list [--select S] [--shard i/N]    the cells, their expected results, exclusions
  matrix run  [--select S] [--shard i/N] [--jobs K] [--results DIR] [--dry-run]

--select takes a selection's name from the file (quick, smoke, ...) or DIMENSION=V1,V2
(also group=NAME, trait=T); several must all match.  --shard i/N runs the i-th of N
cost-balanced parts: the same split on every machine.  A bad definition is refused
naming the file and key before anything starts.

`matrix run` writes DIR/results.jsonl (one line per iteration: `kdump-harness report`
reads it) and DIR/matrix-plan.json; exit status 0 every iteration as expected, 1 a kernel
finding, 125 the harness could not test, 2 bad usage."""


def _plan_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--definition", type=Path, default=Path("ci/matrix.toml"), metavar="TOML",
                   help="the matrix definition (default ci/matrix.toml)")
    p.add_argument("--select", action="append", default=[], metavar="S",
                   help="a selection (quick, smoke, ...) or DIMENSION=V1,V2; repeatable")
    p.add_argument("--shard", default="1/1", metavar="i/N",
                   help="run the i-th of N balanced parts (default 1/1)")
    p.add_argument("--iterations", type=int, metavar="N",
                   help="iterations per cell (default: the definition's)")


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("matrix", help="the nightly matrix: list its cells, run a shard",
                       description=DESCRIPTION,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    msub = p.add_subparsers(dest="matrix_command", metavar="list|run")
    lp = msub.add_parser("list", help="cells, expected results, exclusions and reasons")
    _plan_options(lp)
    lp.add_argument("-v", "--verbose", action="store_true",
                    help="also each cell's run options and why its result is expected")
    lp.add_argument("--json", action="store_true", help="machine-readable output")
    lp.set_defaults(func=cmd_list)
    rp = msub.add_parser("run", help="run a shard of the matrix through the campaign executor")
    _plan_options(rp)
    rp.add_argument("--jobs", type=int, default=1, metavar="K",
                    help="parallel guests (default 1; 2 on a 2-core machine)")
    rp.add_argument("--results", type=Path, metavar="DIR",
                    help="results directory (default ./runs/matrix-<campaign>)")
    rp.add_argument("--campaign", metavar="ID",
                    help="campaign id (default nightly-<UTC date>-shard<i>of<N>)")
    rp.add_argument("--dry-run", action="store_true",
                    help="print what would run (and why not) and start nothing")
    rp.add_argument("--snapshot", action="store_true",
                    help="every cell's guest restored from a cached snapshot")
    rp.add_argument("--keep-evidence", action="store_true",
                    help="keep every iteration's evidence, not only the unexpected ones")
    rp.add_argument("--until-fail", action="store_true",
                    help="stop handing out work at the first unexpected result")
    rp.add_argument("--no-progress", dest="progress", action="store_false",
                    help="no progress bar")
    rp.set_defaults(func=cmd_run)
    p.set_defaults(func=lambda _args: _usage(p))


def _usage(p: argparse.ArgumentParser) -> int:
    p.print_help()
    return 2


def build_plan(args: argparse.Namespace) -> RunPlan:
    from ..matrix.definition import load
    from ..matrix.plan import host_facts, make_plan
    from ..matrix.shard import ShardSpec

    spec = ShardSpec.parse(args.shard)             # refused before the file is read
    if args.iterations is not None and args.iterations < 1:
        raise UsageError(f"--iterations {args.iterations}: needs at least 1")
    return make_plan(load(args.definition), selectors=args.select, spec=spec,
                     iterations=args.iterations, facts=host_facts())


def cmd_list(args: argparse.Namespace) -> int:
    plan = build_plan(args)
    if args.json:
        from ..matrix.plan import plan_json

        print_json(plan_json(plan, campaign=""))
        return 0
    print_plan(plan, verbose=args.verbose)
    return 0


def print_plan(plan: RunPlan, *, verbose: bool = False) -> None:
    print(plan.describe())
    rows = [(u.cell.name + (f" #{u.iteration}" if plan.iterations > 1 else ""),
             u.cell.expected.value, u.cell.confidence.value, f"{u.cell.cost:.0f}")
            for u in plan.runnable]
    width = max((len(r[0]) for r in rows), default=4)
    print(f"  {'CELL':<{width}}  {'EXPECT':<17} {'CONFIDENCE':<13} SECONDS")
    for (name, expect, confidence, cost), unit in zip(rows, plan.runnable, strict=True):
        print(f"  {name:<{width}}  {expect:<17} {confidence:<13} {cost:>7}")
        if verbose:
            print(f"      run {' '.join(_quote(w) for w in unit.cell.argv)}")
            print(f"      why: {unit.cell.why}")
    _print_reasons("skipped on this host", [(u.cell.name, why) for u, why in plan.skipped])
    _print_reasons("excluded", [(e.cell.name, e.reason) for e in plan.selected.excluded])


def _print_reasons(title: str, items: list[tuple[str, str]]) -> None:
    """Cells grouped by their reason, the reason said once."""
    if not items:
        return
    by_reason: dict[str, list[str]] = defaultdict(list)
    for name, why in items:
        by_reason[why].append(name)
    print(f"{title} ({len(items)}):")
    for why, names in by_reason.items():
        print(f"  {why}")
        for name in dict.fromkeys(names):
            print(f"    - {name}")


def _quote(word: str) -> str:
    import shlex

    return shlex.quote(word)


def cmd_run(args: argparse.Namespace) -> int:
    from ..matrix.plan import campaign_id, tasks, write_plan

    plan = build_plan(args)
    campaign = args.campaign or campaign_id(plan.shard)
    work = tasks(plan, snapshot=args.snapshot)
    for recipe in dict.fromkeys(t.recipe for t in work):
        recipe.validate()              # everything refusable, refused before any image build
    if args.dry_run:
        print_plan(plan, verbose=True)
        print(f"campaign {campaign}: {len(work)} iteration(s) would run; nothing started")
        return 0
    results = args.results or Path("runs") / f"matrix-{campaign}"
    write_plan(plan, campaign, results)
    print(plan.describe(), file=sys.stderr)
    for unit, why in plan.skipped:
        print(f"SKIP {unit.cell.name}: {why}", file=sys.stderr)
    work, untestable = _prepare(work, results, progress=args.progress)
    return _run(work, args, campaign, results, untestable)


def _prepare(work: list[Task], results: Path, *, progress: bool) -> tuple[list[Task], list[str]]:
    """Build each profile's image (and with --snapshot each guest's snapshot) once, up
    front; a profile whose image cannot be made drops its cells, said once."""
    from ..campaign.prepare import prepare

    failed: dict[str, str] = {}
    done: set[object] = set()
    for task in work:
        profile = task.recipe.dimensions.get("profile", "")
        snapshot = "--snapshot" in task.recipe.argv
        key = task.recipe.name if snapshot else profile
        if profile in failed or key in done:
            continue
        done.add(key)
        try:
            prepare(task.recipe, results, progress=progress)
        except UsageError:
            raise
        except HarnessError as exc:
            failed[profile] = str(exc).splitlines()[0]
            print(f"kdump-harness matrix: cannot test {profile}: {failed[profile]}",
                  file=sys.stderr)
    kept = [t for t in work if t.recipe.dimensions.get("profile", "") not in failed]
    return kept, [f"{p}: {why}" for p, why in failed.items()]


def _run(work: list[Task], args: argparse.Namespace, campaign: str, results: Path,
         untestable: list[str]) -> int:
    from rich.console import Console

    from ..campaign.executor import EXIT_UNTESTABLE, CampaignOptions, run_campaign
    from ..campaign.summary import Summary, render

    options = CampaignOptions(campaign=campaign, results=results, jobs=args.jobs,
                              until_fail=args.until_fail, keep_evidence=args.keep_evidence,
                              progress=args.progress, title="matrix")
    print(f"kdump-harness matrix: campaign {campaign}, {len(work)} iteration(s) over "
          f"{args.jobs} job(s); results in {results}", file=sys.stderr)
    outcome = run_campaign(work, options)
    if outcome.lines:
        render(Summary(tuple(outcome.lines), outcome.wall, outcome.stopped_early),
               Console(highlight=False), results_dir=str(results))
    for line in outcome.lines:
        if not line.passed:
            print(f"FAIL {line.cell} #{line.iteration}: {line.result.value} (expected "
                  f"{line.expected.value}, {line.config.get('confidence', '?')}): "
                  f"{line.reason}")
    status = outcome.exit_status
    if untestable:
        print("kdump-harness matrix: not tested: " + "; ".join(untestable), file=sys.stderr)
        status = status or EXIT_UNTESTABLE
    return status
