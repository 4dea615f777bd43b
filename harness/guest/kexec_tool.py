"""``kexec-file-load``: one ``kexec_file_load(2)`` call with any flags, run in the guest.

kexec-tools cannot pass ``KEXEC_FILE_NO_CMA`` (0x10, Linux 6.17+; "kexec: add
KEXEC_FILE_NO_CMA as a legal flag", Aug 2025): sid's 2.0.32 lists no such option in
``kexec --help`` and has no "cma" string in its binary, and the kexec list still asked for
one in Nov 2025.  The guest has no compiler, so the host builds this tool -- freestanding,
static, raw syscalls, no libc -- from ``SOURCE`` with its own C compiler and copies the
9 KiB binary into the guest over SSH (``install``).  No compiler on the host: ``build``
returns None and the caller skips, saying so.

Usage in the guest: ``kexec-file-load FLAGS KERNEL|- INITRD|- CMDLINE``; ``-`` for no
file (no initrd adds ``NO_INITRAMFS``).  It prints ``kexec_file_load rc=R flags=F``, R the
syscall's return (0 or -errno), and exits 0 on success.
"""

from __future__ import annotations

import enum
import re
import shutil
import subprocess
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import HostError

if TYPE_CHECKING:
    from .machine import Guest


class KexecFileFlag(enum.IntFlag):
    """``KEXEC_FILE_*`` from include/uapi/linux/kexec.h."""

    NONE = 0
    UNLOAD = 0x1
    ON_CRASH = 0x2
    NO_INITRAMFS = 0x4
    DEBUG = 0x8
    NO_CMA = 0x10           # 6.17+: keep this image's segments out of CMA


EADDRNOTAVAIL = 99          # "Cannot assign requested address": no room for a segment
EINVAL = 22                 # e.g. a flag the kernel does not know
GUEST_PATH = "/run/harness/kexec-file-load"

SOURCE = r"""
/* kexec-file-load FLAGS KERNEL|- INITRD|- CMDLINE: one kexec_file_load(2) call. */
enum { SYS_write = 1, SYS_open = 2, SYS_exit_group = 231, SYS_kexec_file_load = 320 };

static long sys5(long n, long a, long b, long c, long d, long e)
{
    long r;
    register long r10 __asm__("r10") = d;
    register long r8 __asm__("r8") = e;
    __asm__ volatile("syscall" : "=a"(r) : "a"(n), "D"(a), "S"(b), "d"(c), "r"(r10), "r"(r8)
             : "rcx", "r11", "memory");
    return r;
}

static long len(const char *s) { long n = 0; while (s[n]) n++; return n; }
static void put(const char *s) { sys5(SYS_write, 1, (long)s, len(s), 0, 0); }

static void put_num(long v, int base)
{
    char buf[24], *p = buf + sizeof(buf) - 1;
    unsigned long u = v < 0 ? -(unsigned long)v : (unsigned long)v;
    *p = 0;
    do { *--p = "0123456789abcdef"[u % base]; u /= base; } while (u);
    if (v < 0) *--p = '-';
    put(p);
}

static long parse(const char *s)
{
    long v = 0, base = 10;
    if (s[0] == '0' && s[1] == 'x') { base = 16; s += 2; }
    for (; *s; s++)
        v = v * base + (*s >= 'a' ? *s - 'a' + 10 : *s - '0');
    return v;
}

static long open_ro(const char *path)
{
    return path[0] == '-' && !path[1] ? -1 : sys5(SYS_open, (long)path, 0, 0, 0, 0);
}

__attribute__((used)) static void cmain(long *sp)
{
    char **argv = (char **)(sp + 1);
    long flags, kfd, ifd, rc = 2;

    if (sp[0] != 5) {
        put("usage: kexec-file-load FLAGS KERNEL|- INITRD|- CMDLINE\n");
    } else {
        flags = parse(argv[1]);
        kfd = open_ro(argv[2]);
        ifd = open_ro(argv[3]);
        if (ifd < 0)
            flags |= 0x4;  /* KEXEC_FILE_NO_INITRAMFS */
        rc = sys5(SYS_kexec_file_load, kfd, ifd, len(argv[4]) + 1, (long)argv[4], flags);
        put("kexec_file_load rc=");
        put_num(rc, 10);
        put(" flags=0x");
        put_num(flags, 16);
        put("\n");
    }
    sys5(SYS_exit_group, rc == 0 ? 0 : 1, 0, 0, 0, 0);
}

__asm__(".globl _start\n_start:\n\txor %ebp,%ebp\n\tmov %rsp,%rdi\n"
    "\tand $-16,%rsp\n\tcall cmain\n\thlt\n");
"""

_CFLAGS = ("-Os", "-static", "-nostdlib", "-ffreestanding", "-fno-stack-protector",
           "-fno-pie", "-no-pie", "-Wall", "-Werror")
_RC = re.compile(r"^kexec_file_load rc=(-?\d+) flags=0x([0-9a-f]+)$", re.MULTILINE)


def compiler() -> str | None:
    """The host's C compiler, if any (``cc``, ``gcc`` or ``clang``)."""
    return next((c for c in ("cc", "gcc", "clang") if shutil.which(c)), None)


def build(out_dir: Path) -> Path | None:
    """Build the tool into ``out_dir`` (None: no C compiler on this host).

    Raises ``HostError`` with the compiler's message when a compiler is there but fails.
    """
    cc = compiler()
    if cc is None:
        return None
    out_dir.mkdir(parents=True, exist_ok=True)
    source, binary = out_dir / "kexec-file-load.c", out_dir / "kexec-file-load"
    source.write_text(SOURCE.lstrip())
    done = subprocess.run([cc, *_CFLAGS, "-o", str(binary), str(source)],
                          capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise HostError(f"building {binary.name} with {cc} failed (exit {done.returncode})",
                           details=done.stderr)
    return binary


def install(guest: Guest, binary: Path) -> str:
    """Copy the tool into the guest; its path there."""
    guest.run(f"cat > {GUEST_PATH} && chmod 755 {GUEST_PATH}", stdin=binary.read_bytes(),
              check=True)
    return GUEST_PATH


def command(flags: KexecFileFlag, kernel: str = "-", initrd: str = "-",
            cmdline: str = "") -> str:
    """The guest command for one call (``GUEST_PATH`` must be installed)."""
    return f"{GUEST_PATH} {int(flags):#x} {kernel} {initrd} '{cmdline}'"


def parse_result(output: str) -> tuple[int, KexecFileFlag]:
    """``(rc, flags)`` from the tool's output: rc 0 or -errno, flags as passed."""
    m = _RC.search(output)
    if m is None:
        raise ValueError(f"no 'kexec_file_load rc=' line in: {output.strip()!r}")
    return int(m.group(1)), KexecFileFlag(int(m.group(2), 16))


__all__ = ["EADDRNOTAVAIL", "EINVAL", "GUEST_PATH", "SOURCE", "KexecFileFlag", "build",
           "command", "compiler", "install", "parse_result"]
