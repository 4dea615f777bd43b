#!/usr/bin/env bash
# Every benchmark the issues set a target for, one after the other, on a quiet host:
#   bash ci/bench-all.sh [RUNS]  > bench.txt
# Each line prints the median, the spread and the target; nothing here fails on a miss.
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${1:-5}
kh=.venv/bin/kdump-harness
echo "# kdump-harness benchmarks, $(date -u +%Y-%m-%dT%H:%MZ), $(nproc) cores, $(qemu-system-x86_64 --version | head -1)"
$kh bench images --runs "$runs"
$kh bench boot --runs "$runs"
$kh bench swarm --runs "$runs"        # the reference burst, then the 64-DIMM/32-vCPU swarm
$kh bench crash --runs "$runs"
$kh bench crash --runs "$runs" --mode elf --memory 1536M
$kh bench run --runs "$runs"
$kh bench restore --runs "$runs"     # a snapshot's guest: QEMU start to kdump-ready
$kh bench run --runs "$runs" --snapshot
$kh bench streams --runs "$runs"     # verified cycles per hour, 2 streams, cold and --snapshot
$kh bench audit --runs "$runs"
$kh bench vmcore
python3 ci/bench-startup.py            # the command line starts in under 100 ms
