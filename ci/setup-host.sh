#!/usr/bin/env bash
# Install what the harness needs on a Debian/Ubuntu host: QEMU, the tools the image
# builder calls, and the Python package itself (editable, with the test extras).
set -euo pipefail
cd "$(dirname "$0")/.."

SUDO=
[[ $(id -u) -eq 0 ]] || SUDO=sudo
need=()
command -v qemu-system-x86_64 >/dev/null || need+=(qemu-system-x86)
command -v dpkg-deb >/dev/null || need+=(dpkg)
command -v apt-get >/dev/null || { echo "setup-host: apt-get is required (Debian/Ubuntu host)"; exit 1; }
command -v xz >/dev/null || need+=(xz-utils)
command -v zstd >/dev/null || need+=(zstd)
[[ -e /usr/share/keyrings/debian-archive-keyring.gpg ]] || need+=(debian-archive-keyring)
python3 -m venv --help >/dev/null 2>&1 || need+=(python3-venv)
if ((${#need[@]})); then
    echo "setup-host: installing ${need[*]}"
    $SUDO apt-get update -q
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q --no-install-recommends "${need[@]}"
fi
python3 -m pip install -q -e '.[dev]'
echo "setup-host: ready ($(qemu-system-x86_64 --version | head -1))"
