#!/usr/bin/env bash
# Install what the harness needs on a Debian/Ubuntu host: QEMU, the tools the image
# builder calls, and the Python package itself in a virtual environment (.venv: Debian's
# own Python refuses system-wide pip installs, PEP 668).
set -euo pipefail
cd "$(dirname "$0")/.."

SUDO=
[[ $(id -u) -eq 0 ]] || SUDO=sudo
command -v apt-get >/dev/null || { echo "setup-host: apt-get is required (Debian/Ubuntu host)"; exit 1; }
need=()
command -v qemu-system-x86_64 >/dev/null || need+=(qemu-system-x86)
command -v dpkg-deb >/dev/null || need+=(dpkg)
command -v xz >/dev/null || need+=(xz-utils)
command -v zstd >/dev/null || need+=(zstd)
command -v cpio >/dev/null || need+=(cpio)   # the tests cross-check our cpio writer with GNU cpio
[[ -e /usr/share/keyrings/debian-archive-keyring.gpg ]] || need+=(debian-archive-keyring)
python3 -c 'import venv, ensurepip' 2>/dev/null || need+=(python3-venv)
if ((${#need[@]})); then
    echo "setup-host: installing ${need[*]}"
    $SUDO apt-get update -q
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q --no-install-recommends "${need[@]}"
fi
python3 - <<'PY' || { echo "setup-host: Python 3.11 or newer is required"; exit 1; }
import sys
sys.exit(sys.version_info < (3, 11))
PY
[[ -x .venv/bin/python ]] || python3 -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q -e '.[dev]'
echo "setup-host: ready ($(qemu-system-x86_64 --version | head -1)); commands in .venv/bin"
