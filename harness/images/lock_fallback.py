"""When the archive dropped a pinned version: the lock policy and the fallback plan.

Debian's archive keeps one version of each package per suite, so every stable point release
and every sid upload drops versions ``packages.lock.json`` pins (``PinnedVersionGone``
from packages.py). Under the ``prefer`` policy (the default) a build then plans again from
the suite's current versions, their SHA256 taken from the archive's signed index; the
packages that differ are the plan's ``drift`` and end up in ``GuestImage.lock_drift``.
Which versions replaced a lock state is remembered in the cache (``fallback/<state>.json``),
so later builds, ``images path`` and ``images prune`` find the fallback image offline.
``strict`` makes a dropped pin an error instead.
"""

from __future__ import annotations

import json
import logging
import time

from ..errors import ImageBuildError, UsageError
from .cache import Cache
from .lockfile import LockedFlavour, lock_file_path, parse_lock
from .packages import PinnedVersionGone, resolve_current_flavour
from .plan import BuildPlan, BuildRequest

log = logging.getLogger("harness.images")

#: How strictly a build follows the lock when the archive has moved on (``lock_policy``).
LOCK_POLICIES = ("prefer", "strict")


def lock_policy(value: str | None = None) -> str:
    """``value``, else the ``lock`` setting (``KDUMP_HARNESS_LOCK``, default ``prefer``)."""
    from ..settings import current

    source = "the lock policy"
    if value is None:
        value = current().lock.value
    if value not in LOCK_POLICIES:
        raise UsageError(f"{source} must be one of {', '.join(LOCK_POLICIES)}, not {value!r}")
    return value


def remembered_plan(cache: Cache, request: BuildRequest, plan: BuildPlan,
                    policy: str = "prefer") -> BuildPlan | None:
    """The fallback plan an earlier build recorded for ``plan``'s lock state, if any.

    None under the ``strict`` policy, which never builds from anything but the lock.
    """
    current = remembered_fallback(cache, plan) if policy == "prefer" else None
    return request.plan(locked=current) if current else None


def plan_for_dropped_pin(gone: PinnedVersionGone, cache: Cache, request: BuildRequest,
                         plan: BuildPlan, policy: str, mirror: str | None) -> BuildPlan:
    """The plan to build instead of ``plan``, whose pinned version the archive dropped.

    ``strict``: an ``ImageBuildError``. ``prefer``: the suite's current versions, remembered
    for ``plan``'s lock state and announced with a warning.
    """
    if policy == "strict":
        raise ImageBuildError(f"{gone.message} (strict lock: no fallback to the archive's "
                              "current versions)", details=gone.details) from gone
    # The request's flavour, not the plan's: your own kernel's plan says "custom".
    current = resolve_current_flavour(cache, plan.profile, request.flavour, mirror)
    fallback = request.plan(locked=current)
    remember_fallback(cache, plan, current)
    log.warning("%s/%s: the archive no longer has %s %s pinned in %s; building from "
                "its current versions (%d packages differ; `kdump-harness images "
                "update` re-pins them)", plan.profile.name, plan.flavour,
                gone.package.name, gone.package.version, lock_file_path().name,
                len(fallback.drift))
    return fallback


def remember_fallback(cache: Cache, plan: BuildPlan, current: LockedFlavour) -> None:
    """Note which packages replaced this lock state's, so later builds skip the archive."""
    record = {"format": 1, "resolved_at": time.time(),
              "profiles": {plan.profile.name: {"suites": list(plan.profile.suites),
                                               "flavours": {"fallback": current.to_json()}}}}
    cache.write_fallback(plan.lock_state, json.dumps(record, indent=2, sort_keys=True) + "\n")


def remembered_fallback(cache: Cache, plan: BuildPlan) -> LockedFlavour | None:
    """The packages ``remember_fallback`` recorded for ``plan``'s lock state, if readable."""
    text = cache.read_fallback(plan.lock_state)
    if text is None:
        return None
    try:
        return parse_lock(json.loads(text)).flavour(plan.profile.name, "fallback")
    except (ValueError, UsageError, ImageBuildError):
        return None  # unreadable: resolve again
