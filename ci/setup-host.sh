#!/usr/bin/env bash
# Install what the harness needs on a Debian/Ubuntu host: QEMU, the tools the image
# builder calls, and the Python package itself in a virtual environment (.venv: Debian's
# own Python refuses system-wide pip installs, PEP 668).
#
# QEMU: bookworm's own 7.2 aborts ("double free or corruption") after vCPU unplugs, so on
# a bookworm host whose QEMU is older than 8 this installs qemu-system-x86 from
# bookworm-backports (10.0), adding that suite from the mirror the host's apt already
# uses. KDUMP_HARNESS_QEMU=distro keeps the distribution's default QEMU instead.
set -euo pipefail
cd "$(dirname "$0")/.."

SUDO=
[[ $(id -u) -eq 0 ]] || SUDO=sudo
command -v apt-get >/dev/null || { echo "setup-host: apt-get is required (Debian/Ubuntu host)"; exit 1; }
qemu_major() { qemu-system-x86_64 --version 2>/dev/null | head -1 | sed -n 's/.*version \([0-9]*\)\..*/\1/p'; }
codename=$( (. /etc/os-release && echo "${VERSION_CODENAME:-}") 2>/dev/null || true)
backports=
if [[ $codename == bookworm && ${KDUMP_HARNESS_QEMU:-backports} != distro ]] \
        && (( $(qemu_major || true) + 0 < 8 )); then
    backports=yes
fi
need=()
[[ -n $backports ]] || command -v qemu-system-x86_64 >/dev/null || need+=(qemu-system-x86)
command -v dpkg-deb >/dev/null || need+=(dpkg)
command -v xz >/dev/null || need+=(xz-utils)
command -v zstd >/dev/null || need+=(zstd)
command -v lz4 >/dev/null || need+=(lz4)     # the capture initrd (harness/images/initramfs.py)
command -v cpio >/dev/null || need+=(cpio)   # the tests cross-check our cpio writer with GNU cpio
# seed003 builds a 9 KiB freestanding kexec_file_load tool for the guest (KEXEC_FILE_NO_CMA)
command -v cc >/dev/null || command -v gcc >/dev/null || need+=(gcc)
[[ -e /usr/share/keyrings/debian-archive-keyring.gpg ]] || need+=(debian-archive-keyring)
python3 -c 'import venv, ensurepip' 2>/dev/null || need+=(python3-venv)
if ((${#need[@]})); then
    echo "setup-host: installing ${need[*]}"
    $SUDO apt-get update -q
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q --no-install-recommends "${need[@]}"
fi
# tests/test_report_browser.py opens the HTML report in a headless Chromium (plots render,
# links resolve); any Chromium or Chrome will do (~9 s to install from a nearby mirror).
# Optional: Ubuntu ships chromium only as a snap, and without one the test skips saying so.
if ! command -v chromium >/dev/null && ! command -v chromium-browser >/dev/null \
        && ! command -v google-chrome >/dev/null; then
    if apt-cache show chromium 2>/dev/null | grep -q '^Filename:'; then
        DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q --no-install-recommends chromium \
            || echo "setup-host: chromium did not install: the report's browser test will skip"
    else
        echo "setup-host: no chromium package here: the report's browser test will skip"
    fi
fi
python3 - <<'PY' || { echo "setup-host: Python 3.11 or newer is required"; exit 1; }
import sys
sys.exit(sys.version_info < (3, 11))
PY
[[ -x .venv/bin/python ]] || python3 -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q -e '.[dev]'
# pip byte-compiles what it installs, but not an editable project: where the environment
# sets PYTHONDONTWRITEBYTECODE (CI containers often do), every kdump-harness process would
# compile the harness's modules again: importing what `run` needs took 0.40 s instead of
# 0.30 s on a quiet 2-core host, seconds beside busy guests.  Python still reads bytecode
# it may not write.
.venv/bin/python -m compileall -q harness

if [[ -n $backports ]]; then
    # The mirror comes from the host's own apt configuration (or KDUMP_HARNESS_MIRROR).
    mirror=$(.venv/bin/python -c 'from harness.images.apt import resolve_mirror; print(resolve_mirror(None))')
    list=/etc/apt/sources.list.d/kdump-harness-bookworm-backports.sources
    echo "setup-host: bookworm's QEMU 7.2 aborts after vCPU unplugs; installing QEMU from bookworm-backports ($list)"
    printf 'Types: deb\nURIs: %s\nSuites: bookworm-backports\nComponents: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n' \
        "$mirror" | $SUDO tee "$list" >/dev/null
    $SUDO apt-get update -q
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q --no-install-recommends \
        -t bookworm-backports qemu-system-x86
fi
echo "setup-host: ready ($(qemu-system-x86_64 --version | head -1)); commands in .venv/bin"
