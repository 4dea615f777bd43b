"""Benchmark: image build time from a warm package cache.

``python -m harness.bench.images [--profile trixie] [--flavour cloud] [--runs 5]`` builds
the image once to warm the .deb cache (not timed), then rebuilds it ``--runs`` times with
``rebuild=True`` and prints the median and spread of the builder's own timing. The target is
under 10 s per build (the harness builds images at session start, possibly under xdist).
"""

from __future__ import annotations

import argparse
import hashlib
import os
import statistics
import sys
from collections.abc import Sequence

from ..images.builder import build_image

TARGET_SECONDS = 10.0


def _cpu_seconds() -> float:
    times = os.times()
    return times.user + times.system + times.children_user + times.children_system


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m harness.bench.images",
                                     description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--profile", default="trixie")
    parser.add_argument("--flavour", default="cloud")
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args(argv)

    warm = build_image(args.profile, flavour=args.flavour)  # downloads anything missing
    print(f"{args.profile}/{args.flavour}: Linux {warm.kernel_release}, cache warm")
    times = []
    digests = set()
    for run in range(1, args.runs + 1):
        # CPU time (ours plus xz's) shows the cost even when other jobs share the host.
        cpu_before = _cpu_seconds()
        image = build_image(args.profile, flavour=args.flavour, rebuild=True)
        cpu = _cpu_seconds() - cpu_before
        times.append(image.build_seconds)
        digests.add(hashlib.sha256(image.capture_initrd_path.read_bytes()).hexdigest())
        print(f"  run {run}: {image.build_seconds:.2f} s wall, {cpu:.2f} s CPU")
    median = statistics.median(times)
    print(f"median {median:.2f} s, spread {min(times):.2f}-{max(times):.2f} s "
          f"(stdev {statistics.pstdev(times):.2f} s) over {len(times)} runs; "
          f"target < {TARGET_SECONDS:.0f} s: {'met' if median < TARGET_SECONDS else 'MISSED'}")
    print(f"userspace.cpio identical across runs: {'yes' if len(digests) == 1 else 'NO'}")
    return 0 if median < TARGET_SECONDS and len(digests) == 1 else 1


if __name__ == "__main__":
    sys.exit(main())
