"""What a capture leaves on the host: its metadata, the dump, the raw elfcorehdr and
both kernels' consoles, each in its file of the run directory (with ramoops configured,
also the first kernel's ramoops region: ``save_pstore_region``)."""

from __future__ import annotations

import logging
import re
import tarfile
from pathlib import Path

from ..errors import DumpUnreadable, HarnessError, VmcoreFormatError
from ..guest import Guest
from ..signatures import CAPTURE_CMDLINE, KERNEL_BANNER, PANIC
from .outcome import CaptureResult

log = logging.getLogger(__name__)

#: What shows that the capture kernel is booting (see signatures.CAPTURE_CMDLINE).
CAPTURE_BANNER = CAPTURE_CMDLINE
_CMDLINE_ELFCOREHDR = re.compile(r"(?:^|\s)(elfcorehdr=\S+)")


def parse_elfcorehdr_arg(arg: str) -> int | None:
    """``elfcorehdr=0x7f000000`` (kexec_file) or ``elfcorehdr=2080768K`` (kexec-tools)."""
    value = arg.split("=", 1)[1]
    if "@" in value:             # elfcorehdr=size@addr form
        value = value.split("@", 1)[1]
    try:
        if value[-1:] in "kK":
            return int(value[:-1], 0) * 1024
        if value[-1:] in "mM":
            return int(value[:-1], 0) << 20
        return int(value, 0)
    except ValueError:
        return None


#: How much guest memory to read at the elfcorehdr: enough for thousands of ranges.
RAW_HEADER_READ = 1 << 20


def save_raw_header(guest: Guest, out: Path, result: CaptureResult,
                     console_hdr: str | None) -> None:
    """Read the first kernel's elfcorehdr from guest memory while the capture kernel runs.

    Its address comes from the capture kernel's own /proc/cmdline (collected in the
    metadata), not from the console: a console line can arrive torn or interleaved with
    kernel output.  What cannot be read is a harness problem (``raw_header_problem``),
    never a verdict about the dump.
    """
    path = out / "elfcorehdr.raw"
    cmdline = Path(result.files["capture_cmdline"]) if "capture_cmdline" in result.files else None
    found = _CMDLINE_ELFCOREHDR.search(cmdline.read_text(errors="replace")) if cmdline else None
    addr = parse_elfcorehdr_arg(found.group(1)) if found else None
    if addr is None:
        where = ("capture/capture-cmdline.txt names no usable elfcorehdr=" if cmdline
                 else "the capture metadata holds no capture-cmdline.txt")
        result.raw_header_problem = f"the raw elfcorehdr was not read: {where}"
    else:
        result.elfcorehdr_addr = addr
        console_addr = parse_elfcorehdr_arg(console_hdr) if console_hdr else None
        if console_addr is not None and console_addr != addr:
            log.warning("the console's capture-start line says %s but the capture kernel's "
                        "/proc/cmdline says %s: reading at the latter", console_hdr,
                        found.group(1) if found else "?")
        try:
            guest.qmp.execute("pmemsave", {"val": addr, "size": RAW_HEADER_READ,
                                           "filename": str(path)})
            result.files["raw_elfcorehdr"] = str(path)
        except HarnessError as exc:
            result.raw_header_problem = f"pmemsave of the raw elfcorehdr at {addr:#x} failed: {exc}"
    if result.raw_header_problem:
        (out / "elfcorehdr.raw.missing").write_text(result.raw_header_problem + "\n")


def collect_metadata(guest: Guest, out: Path, result: CaptureResult) -> bool:
    """Unpack the capture's metadata tar (status, logs, its command line) into capture/;
    False (and vmcore.missing saying why) when there is no readable tar."""
    capture_dir = out / "capture"
    capture_dir.mkdir(exist_ok=True)
    try:
        with tarfile.open(guest.meta_disk, "r:") as tar:
            tar.extractall(capture_dir, filter="data")
    except (tarfile.TarError, OSError) as exc:
        (out / "vmcore.missing").write_text(f"the metadata disk holds no readable tar: {exc}\n")
        return False
    status_file = capture_dir / "status.txt"
    if status_file.exists():
        result.capture_status = dict(
            line.split("=", 1) for line in status_file.read_text().splitlines() if "=" in line)
    for name in ("vmcore-dmesg.txt", "capture-cmdline.txt", "capture-dmesg.txt"):
        if (capture_dir / name).exists():
            result.files[name.removesuffix(".txt").replace("-", "_")] = str(capture_dir / name)
    if (capture_dir / "pstore").is_dir():
        result.files["capture_pstore"] = str(capture_dir / "pstore")
    save_pstore_region(guest, out, result)
    return True


#: The ramoops region kdump-load hands the capture kernel (``ramoops.mem_address=``...).
_CMDLINE_RAMOOPS = re.compile(r"(?:^|\s)ramoops\.(mem_address|mem_size)=(\S+)")


def save_pstore_region(guest: Guest, out: Path, result: CaptureResult) -> None:
    """Read the first kernel's ramoops region from guest memory while the capture kernel
    runs (``pstore-ramoops.raw``; ``harness.crash.pstore`` decodes it), at the address the
    capture kernel's own /proc/cmdline names.  Evidence for the pstore scenario only: no
    verdict reads it, so what cannot be read is said in ``pstore-ramoops.missing``."""
    cmdline = result.files.get("capture_cmdline")
    found = dict(_CMDLINE_RAMOOPS.findall(Path(cmdline).read_text(errors="replace"))
                 if cmdline else [])
    if not {"mem_address", "mem_size"} <= found.keys():
        return
    path = out / "pstore-ramoops.raw"
    try:
        addr, size = int(found["mem_address"], 0), int(found["mem_size"], 0)
        guest.qmp.execute("pmemsave", {"val": addr, "size": size, "filename": str(path)})
        result.files["pstore_region"] = str(path)
    except (ValueError, HarnessError) as exc:
        (out / "pstore-ramoops.missing").write_text(
            f"the ramoops region {found} was not read: {exc}\n")


def collect_dump(guest: Guest, out: Path, result: CaptureResult) -> None:
    """Extract the dump from the dump disk (headers mode: from the metadata)."""
    capture_dir = out / "capture"
    mode = result.mode
    if mode == "headers":
        src = capture_dir / "vmcore.headers"
        if src.exists() and src.stat().st_size > 0:
            target = out / "vmcore.headers"
            src.replace(target)
            result.files["vmcore"] = str(target)
    else:
        target = out / ("vmcore.elf" if mode == "elf" else
                        "vmcore.kdump" if mode == "compressed" else "vmcore")
        try:
            extract_dump(guest.dump_disk, target, mode,
                         int(result.capture_status.get("vmcore_size", "0") or 0))
        except VmcoreFormatError as exc:
            # makedumpfile's stream, written by the capture kernel, does not rebuild.
            raise DumpUnreadable(f"the dump stream on the dump disk cannot be rebuilt: "
                                 f"{exc}") from exc
        if target.exists() and target.stat().st_size > 0:
            result.files["vmcore"] = str(target)
    if "vmcore" not in result.files:
        (out / "vmcore.missing").write_text(
            f"the capture ran (status {result.capture_status}) but left no dump\n")


def extract_dump(disk: Path, target: Path, mode: str, full_size: int) -> None:
    """Turn the dump disk's contents into a regular dump file."""
    if mode == "full":
        with open(disk, "rb") as src, open(target, "wb") as dst:
            left = full_size
            while left > 0:
                chunk = src.read(min(left, 8 << 20))
                if not chunk:
                    break
                dst.write(chunk)
                left -= len(chunk)
        return
    # elf / compressed: makedumpfile wrote its flattened (-F) stream; rebuild it.
    from ..vmcore.flattened import rebuild_flattened

    with open(disk, "rb") as src, open(target, "wb") as dst:
        rebuild_flattened(src, dst)


def split_console(guest: Guest, start: int, out: Path) -> None:
    """Write the first and the capture kernel's consoles to separate files."""
    text = guest.console.text()
    m = CAPTURE_BANNER.search(text, start)
    cut = m.start() if m else len(text)
    if m:
        # From the capture kernel's banner, the last one before its command line.
        banners = list(KERNEL_BANNER.finditer(text, start, cut))
        cut = text.rfind("\n", 0, banners[-1].start() if banners else cut) + 1
    (out / "console-first-kernel.log").write_text(text[:cut])
    (out / "console-capture-kernel.log").write_text(
        text[cut:] if m else "(the capture kernel printed nothing)\n")


def console_tail(text: str, head: int = 8, tail: int = 25) -> str:
    """The panic's first lines and the console's last ones: the cause and the end."""
    lines = text.splitlines()
    m = next((i for i, line in enumerate(lines) if PANIC.search(line)), None)
    if m is None or len(lines) - m <= head + tail:
        return "\n".join(lines[-(head + tail):])
    return "\n".join(lines[m:m + head] + ["[...]"] + lines[-tail:])
