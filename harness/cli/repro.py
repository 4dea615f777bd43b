"""``kdump-harness repro``: one recipe, N seeded iterations, rates with intervals."""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import HarnessError, UsageError
from .common import print_json
from .run import add_run_options

if TYPE_CHECKING:
    from ..campaign.line import ResultLine
    from ..campaign.recipe import Recipe

DESCRIPTION = """\
Run one recipe (every `kdump-harness run` option) N times, iteration i seeded with
--seed S+i, over --jobs parallel guests, with a live progress bar; end with a table of
results by class with Wilson 95% intervals, how stale the stale dumps were, trylock
failures, phase-time percentiles, and the command that replays each failure.

--audit replaces the crash by the live elfcorehdr audit: one guest per job serves many
swarms (each swarm's devices are unplugged again before the next).

Every iteration is one JSON line in DIR/results.jsonl (with --json also on stdout); the
evidence of iterations that were not as expected is kept in DIR/evidence/.

Exit status, fit for `git bisect run`: 0 every iteration as expected, 1 a kernel finding,
125 the harness could not test (image build failure, only harness errors), 2 bad usage."""

#: The options ``repro`` adds to ``run``'s (the rest of the command line is the recipe).
_OWN = (("-n", "--iterations"), ("--jobs",), ("--until-fail",), ("--audit",),
        ("--results", "--out"), ("--json",), ("--seed",), ("--keep-evidence",),
        ("--no-progress",), ("--campaign",), ("--name",))


def _own_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("repro")
    g.add_argument("-n", "--iterations", type=int, default=10, metavar="N",
                   help="iterations (default 10)")
    g.add_argument("--jobs", type=int, default=1, metavar="K",
                   help="parallel guests (default 1; 2 on a 2-core machine)")
    g.add_argument("--until-fail", action="store_true",
                   help="stop at the first result that is not the expected one")
    g.add_argument("--audit", action="store_true",
                   help="audit the live elfcorehdr after each swarm instead of crashing")
    g.add_argument("--results", "--out", dest="results", type=Path, metavar="DIR",
                   help="results directory (default ./runs/repro-<time>)")
    g.add_argument("--json", action="store_true",
                   help="also print each iteration's JSON line on stdout")
    g.add_argument("--seed", type=int, metavar="S",
                   help="base seed: iteration i runs with --seed S+i (default: random)")
    g.add_argument("--keep-evidence", action="store_true",
                   help="keep every iteration's evidence, not only the unexpected ones")
    g.add_argument("--no-progress", dest="progress", action="store_false",
                   help="no progress bar")
    g.add_argument("--campaign", metavar="ID", help="campaign id in the result lines")
    g.add_argument("--name", metavar="NAME",
                   help="the recipe's name in the result lines and the report's cells "
                        "(default repro-crash or repro-audit)")


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("repro", help="N seeded iterations of one run, with rates and seeds",
                       description=DESCRIPTION,
                       formatter_class=argparse.RawDescriptionHelpFormatter,
                       conflict_handler="resolve")
    add_run_options(p)
    _own_options(p)
    p.set_defaults(func=cmd_repro)


def split_argv(words: list[str]) -> tuple[argparse.Namespace, list[str]]:
    """``repro``'s own options, and the rest: the recipe (``run`` options)."""
    own = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    _own_options(own)
    return own.parse_known_args(words)


def recipe_from_args(args: argparse.Namespace) -> Recipe:
    from ..campaign.line import Kind
    from ..campaign.recipe import Recipe

    words = list(getattr(args, "argv", None) or sys.argv[1:])
    if words and words[0] == "repro":
        words = words[1:]
    _, rest = split_argv(words)
    kind = Kind.AUDIT if args.audit else Kind.CRASH
    recipe = Recipe(args.name or f"repro-{kind.value}", tuple(rest), kind)
    recipe.validate()
    return recipe


def cmd_repro(args: argparse.Namespace) -> int:
    from ..campaign.executor import EXIT_UNTESTABLE, CampaignOptions, run_campaign
    from ..campaign.prepare import prepare
    from ..campaign.progress import stderr_console
    from ..campaign.recipe import iteration_seed
    from ..campaign.summary import Summary, render
    from ..cli.common import run_dir

    if args.iterations < 1:
        raise UsageError(f"--iterations {args.iterations}: needs at least 1")
    recipe = recipe_from_args(args)
    base = args.seed if args.seed is not None else int.from_bytes(os.urandom(3), "little")
    results = args.results or run_dir(argparse.Namespace(out=None), "repro")
    campaign = args.campaign or f"repro-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}"
    options = CampaignOptions(campaign=campaign, results=Path(results), jobs=args.jobs,
                              until_fail=args.until_fail, keep_evidence=args.keep_evidence,
                              progress=args.progress, title=recipe.kind.value)
    try:
        prepare(recipe, Path(results), progress=args.progress)
    except UsageError:
        raise
    except HarnessError as exc:
        print(f"kdump-harness repro: cannot test: {exc}", file=sys.stderr)
        return EXIT_UNTESTABLE
    from ..campaign.executor import Task

    tasks = [Task(recipe, i, iteration_seed(base, i)) for i in range(args.iterations)]
    print(f"kdump-harness repro: {args.iterations} x {recipe.kind.value} "
          f"(base seed {base}, {args.jobs} job(s)); results in {results}", file=sys.stderr)

    def echo(line: ResultLine) -> None:
        if args.json:
            print(line.to_json(), flush=True)

    outcome = run_campaign(tasks, options, on_line=echo)
    console = stderr_console() if args.json else None
    from rich.console import Console

    render(Summary(tuple(outcome.lines), outcome.wall, outcome.stopped_early),
           console or Console(highlight=False), results_dir=str(results))
    return outcome.exit_status


__all__ = ["cmd_repro", "print_json", "register", "split_argv"]
