#!/usr/bin/env bash
# Run a command with CPU hogs beside it, the way a busy CI runner or a developer's desktop
# loads the host: a test that fails only under load has a bug in the harness.
#   bash ci/under-load.sh [--hogs N] [--repeat K] [-- CMD ...]
# Default: two hogs (one per core on a 2-core runner), once, the README's test command.
# Each repetition prints its wall time and exit status; the script fails if any did.
set -uo pipefail
cd "$(dirname "$0")/.."
hogs=2
repeat=1
while (($#)); do
    case $1 in
        --hogs) hogs=$2; shift 2 ;;
        --repeat) repeat=$2; shift 2 ;;
        --) shift; break ;;
        *) echo "under-load: unknown option $1 (usage: [--hogs N] [--repeat K] [-- CMD ...])" >&2
           exit 2 ;;
    esac
done
(($#)) || set -- .venv/bin/python -m pytest -n auto
pids=()
stop_hogs() { ((${#pids[@]})) && kill "${pids[@]}" 2>/dev/null; wait "${pids[@]}" 2>/dev/null; }
trap stop_hogs EXIT
for ((i = 0; i < hogs; i++)); do
    yes >/dev/null &
    pids+=($!)
done
failed=0
for ((run = 1; run <= repeat; run++)); do
    start=$(date +%s)
    "$@"
    status=$?
    echo "under-load: run $run of $repeat with $hogs hogs: exit $status in $(($(date +%s) - start)) s"
    ((status == 0)) || failed=1
done
left=$(pgrep -c -f '^qemu-system' || true)
((left == 0)) || { echo "under-load: $left QEMU process(es) left behind"; failed=1; }
exit $failed
