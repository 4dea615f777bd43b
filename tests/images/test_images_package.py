"""What other code imports from ``harness.images`` and ``harness.images.builder``."""

from __future__ import annotations

import importlib

import harness.images
from harness.images import builder


def test_every_lazy_name_comes_from_the_module_that_owns_it() -> None:
    for name, module in harness.images._LAZY.items():
        owner = importlib.import_module(f"harness.images.{module}")
        assert getattr(harness.images, name) is getattr(owner, name), name
    for name in harness.images.__all__:
        assert getattr(harness.images, name) is not None, name


def test_builder_still_offers_the_names_it_held_before_the_split() -> None:
    # harness.cli, ci/ and the benchmarks import these from builder.py.
    for name in ("GuestImage", "build_image", "format_drift", "lock_file_path",
                 "prune_images", *builder.__all__):
        assert getattr(builder, name) is not None, name
    assert builder.GuestImage is harness.images.GuestImage
