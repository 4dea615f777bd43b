"""Before the workers start: the image (and the snapshot) a recipe needs, made once.

The workers would make them too (under the cache's locks), but silently and each
waiting on the other; made here first, a first run on a fresh machine shows what it is
doing, and a failure is said once as "cannot test" (exit 125) instead of N times.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from .recipe import Recipe

if TYPE_CHECKING:
    from ..guest import GuestConfig, ImageLike


def prepare(recipe: Recipe, results: Path, *, progress: bool = True) -> None:
    """Build ``recipe``'s image and, with ``--snapshot``, its snapshot (``HarnessError``
    when either cannot be made)."""
    from ..cli.common import build_image_from_args
    from .progress import long_step

    ns = recipe.namespace(seed=0)
    with recipe.configured(ns) as (config, _):
        what = "own kernel" if ns.kernel else ns.profile
        with long_step(f"guest image for {what}", enabled=progress):
            image = build_image_from_args(ns)
        if not config.snapshot:
            return
        with long_step(f"snapshot of the kdump-ready {what} guest (once per image and "
                       "configuration)", loggers=("harness.guest",), enabled=progress):
            _ensure_snapshot(image, config, results)


def _ensure_snapshot(image: ImageLike, config: GuestConfig, results: Path) -> None:
    from ..guest import accel as accel_mod
    from ..guest.snapshot import ensure_snapshot
    from ..images.cache import default_cache_root

    cache_dir = default_cache_root()       # where a Guest without cache_dir looks
    binary = accel_mod.qemu_binary()
    choice = accel_mod.choose_accel(config.accel, image.kernel_path, cache_dir)
    ensure_snapshot(image, config, accel=choice.name, binary=binary, cache_dir=cache_dir,
                    evidence=results / "snapshot-build")
