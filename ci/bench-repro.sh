#!/usr/bin/env bash
# repro throughput on this machine (issue 12): verified crash cycles per hour and audited
# swarms per hour, each over two parallel guests restored from the snapshot, with the
# default recipe (8 x 256M DIMMs and 2 vCPUs hot-added in a burst, sysrq, headers).
#   bash ci/bench-repro.sh [CRASH_ITERATIONS] [AUDIT_ITERATIONS]
# The last line of each repro table is "N iterations in S s: R per hour".
set -euo pipefail
cd "$(dirname "$0")/.."
crash=${1:-40}
audit=${2:-120}
kh=.venv/bin/kdump-harness
out=$(mktemp -d -t kh-bench-repro-XXXXXX)
trap 'rm -rf "$out"' EXIT
echo "# repro throughput, $(date -u +%Y-%m-%dT%H:%MZ), $(nproc) cores, $(qemu-system-x86_64 --version | head -1)"
$kh repro --snapshot -n 2 --jobs 2 --results "$out/warm" --no-progress >/dev/null 2>&1  # snapshot made, caches warm
echo "## verified crash cycles (target: >= 1000 per hour with --snapshot)"
$kh repro --snapshot -n "$crash" --jobs 2 --seed 1 --results "$out/crash" --no-progress 2>/dev/null | tail -1
echo "## audited swarms (target: >= 3000 per hour)"
$kh repro --audit --snapshot -n "$audit" --jobs 2 --seed 1 --results "$out/audit" --no-progress 2>/dev/null | tail -1
