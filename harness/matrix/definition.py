"""Load a matrix file (``ci/matrix.toml``) into a validated ``Definition``.

Everything is checked when the file is read, and a bad file is refused with a
``UsageError`` naming the file and the key (``ci/matrix.toml: expect[2].result: 'stal'
is not one of accurate, stale, ...``): nothing starts on a file that is half understood.
Unknown keys are refused too, so a typo cannot silently drop a rule.
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any, NoReturn

from ..errors import UsageError
from ..model import CaptureMode, ContentionKind, KexecMode, Trigger, UpdateStrategy, values
from ..results import EXPECTATIONS, Result
from .argv import shape_traits
from .model import (
    Condition,
    Confidence,
    Definition,
    Dimension,
    Exclusion,
    ExpectRule,
    Group,
    HostRequirement,
    Selection,
    Shape,
    Trait,
)

SCHEMA = 1
DEFAULT_PATH = Path("ci/matrix.toml")
#: The value of the contention dimension that adds no ``--contention``.
NO_CONTENTION = "none"
ALL = "all"

#: The values each typed dimension may take (profiles and shapes come from files).
ENUM_VALUES: dict[Dimension, tuple[str, ...]] = {
    Dimension.CONTENTION: (NO_CONTENTION, *values(ContentionKind)),
    Dimension.TRIGGER: values(Trigger),
    Dimension.KEXEC: values(KexecMode),
    Dimension.UPDATE: values(UpdateStrategy),
    Dimension.MODE: values(CaptureMode),
}
TOP_KEYS = ("schema", "iterations", "dimensions", "profiles", "shapes", "cost", "groups",
            "selections", "exclude", "expect")


class _Reader:
    """Typed access to the TOML data; every failure names the file and the key."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def fail(self, key: str, message: str) -> NoReturn:
        raise UsageError(f"{self.path}: {key}: {message}")

    def table(self, value: Any, key: str, allowed: tuple[str, ...] | None = None
              ) -> dict[str, Any]:
        if not isinstance(value, dict):
            self.fail(key, f"expected a table, not {type(value).__name__}")
        if allowed is not None:
            for name in value:
                if name not in allowed:
                    self.fail(f"{key}.{name}" if key else name,
                              f"unknown key (expected one of {', '.join(allowed)})")
        return value

    def text(self, value: Any, key: str) -> str:
        if not isinstance(value, str) or not value.strip():
            self.fail(key, "expected a non-empty string")
        return value

    def words(self, value: Any, key: str, *, empty: bool = True) -> tuple[str, ...]:
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            self.fail(key, "expected a list of strings")
        if not value and not empty:
            self.fail(key, "expected at least one value")
        return tuple(value)

    def number(self, value: Any, key: str) -> float:
        if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
            self.fail(key, f"expected a number >= 0, not {value!r}")
        return float(value)

    def choice(self, value: Any, key: str, choices: tuple[str, ...]) -> str:
        if value not in choices:
            self.fail(key, f"{value!r} is not one of {', '.join(choices)}")
        return str(value)


def load(path: Path = DEFAULT_PATH) -> Definition:
    """Read and validate the matrix file at ``path``."""
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise UsageError(f"{path}: cannot read the matrix definition: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise UsageError(f"{path}: not valid TOML: {exc}") from None
    return build(data, path)


def build(data: Mapping[str, Any], path: Path) -> Definition:
    """A ``Definition`` from already-parsed TOML (``path`` names it in errors)."""
    r = _Reader(path)
    r.table(dict(data), "", TOP_KEYS)
    if data.get("schema") != SCHEMA:
        r.fail("schema", f"expected {SCHEMA} (this harness's matrix format), "
                         f"not {data.get('schema')!r}")
    iterations = data.get("iterations", 1)
    if isinstance(iterations, bool) or not isinstance(iterations, int) or iterations < 1:
        r.fail("iterations", f"expected a whole number >= 1, not {iterations!r}")
    dims = _dimensions(r, data.get("dimensions"))
    shapes = _shapes(r, data.get("shapes", {}), dims[Dimension.SHAPE])
    dimensions = tuple((d, dims[d]) for d in Dimension)
    groups = tuple(_group(r, g, f"groups[{i}]", dims)
                   for i, g in enumerate(_array(r, data.get("groups"), "groups")))
    _unique(r, [g.name for g in groups], "groups")
    cost_base, costs = _costs(r, data.get("cost", {}), dims)
    return Definition(
        path=path, iterations=iterations, dimensions=dimensions,
        profile_args=_profile_args(r, data.get("profiles", {}), dims[Dimension.PROFILE]),
        shapes=shapes, cost_base=cost_base, costs=costs, groups=groups,
        exclusions=tuple(_exclusion(r, e, f"exclude[{i}]", dims) for i, e in
                         enumerate(_array(r, data.get("exclude", []), "exclude", empty=True))),
        rules=_rules(r, data.get("expect"), dims),
        selections=_selections(r, data.get("selections", {}), dims, groups))


def _array(r: _Reader, value: Any, key: str, *, empty: bool = False) -> list[dict[str, Any]]:
    if not isinstance(value, list) or not all(isinstance(v, dict) for v in value):
        r.fail(key, f"expected an array of tables ([[{key}]])")
    if not value and not empty:
        r.fail(key, "expected at least one entry")
    return value


def _unique(r: _Reader, names: list[str], key: str) -> None:
    seen: set[str] = set()
    for name in names:
        if name in seen:
            r.fail(key, f"{name!r} appears twice")
        seen.add(name)


def _dimensions(r: _Reader, value: Any) -> dict[Dimension, tuple[str, ...]]:
    from ..images.profiles import load_profiles

    table = r.table(value if value is not None else r.fail("dimensions", "missing"),
                    "dimensions", values(Dimension))
    profiles = tuple(load_profiles().profiles)
    dims: dict[Dimension, tuple[str, ...]] = {}
    for dim in Dimension:
        key = f"dimensions.{dim}"
        if dim.value not in table:
            r.fail(key, "missing (every dimension lists its values; the first is the baseline)")
        vals = r.words(table[dim.value], key, empty=False)
        _unique(r, list(vals), key)
        choices = profiles if dim is Dimension.PROFILE else ENUM_VALUES.get(dim)
        for i, v in enumerate(vals):
            if choices is not None:
                r.choice(v, f"{key}[{i}]", choices)
        dims[dim] = vals
    return dims


def _shapes(r: _Reader, value: Any, names: tuple[str, ...]) -> tuple[Shape, ...]:
    table = r.table(value, "shapes", names)
    shapes = []
    for name in names:
        key = f"shapes.{name}"
        if name not in table:
            r.fail(key, "missing: dimensions.shape lists it, so it needs its run options")
        entry = r.table(table[name], key, ("args", "why"))
        args = r.words(entry.get("args"), f"{key}.args")
        why = r.text(entry.get("why"), f"{key}.why")
        shapes.append(Shape(name, args, why, shape_traits(args, f"{r.path}: {key}.args")))
    return tuple(shapes)


def _profile_args(r: _Reader, value: Any, names: tuple[str, ...]
                  ) -> tuple[tuple[str, tuple[str, ...]], ...]:
    table = r.table(value, "profiles", names)
    return tuple((name, r.words(r.table(entry, f"profiles.{name}", ("args",)).get("args"),
                                f"profiles.{name}.args"))
                 for name, entry in table.items())


def _costs(r: _Reader, value: Any, dims: Mapping[Dimension, tuple[str, ...]]
           ) -> tuple[float, tuple[tuple[Dimension, str, float], ...]]:
    table = r.table(value, "cost", ("base", *values(Dimension)))
    base = r.number(table.get("base", 0.0), "cost.base")
    costs = []
    for dim in Dimension:
        extra = r.table(table.get(dim.value, {}), f"cost.{dim}", dims[dim])
        costs += [(dim, v, r.number(c, f"cost.{dim}.{v}")) for v, c in extra.items()]
    return base, tuple(costs)


def _group(r: _Reader, value: dict[str, Any], key: str,
           dims: Mapping[Dimension, tuple[str, ...]]) -> Group:
    r.table(value, key, ("name", "why", *values(Dimension)))
    chosen = []
    for dim in Dimension:
        raw = value.get(dim.value)
        if raw is None:
            chosen.append((dim, dims[dim][:1]))       # the baseline
        elif raw == ALL:
            chosen.append((dim, dims[dim]))
        else:
            chosen.append((dim, _values_of(r, raw, f"{key}.{dim}", dims[dim])))
    return Group(r.text(value.get("name"), f"{key}.name"), r.text(value.get("why"),
                                                                   f"{key}.why"), tuple(chosen))


def _values_of(r: _Reader, raw: Any, key: str, allowed: tuple[str, ...]) -> tuple[str, ...]:
    vals = r.words(raw, key, empty=False)
    for i, v in enumerate(vals):
        r.choice(v, f"{key}[{i}]", allowed)
    return vals


def _condition(r: _Reader, value: Any, key: str,
               dims: Mapping[Dimension, tuple[str, ...]]) -> Condition:
    table = r.table(value, key, (*values(Dimension), "trait"))
    traits = frozenset(Trait(t) for t in _values_of(r, table["trait"], f"{key}.trait",
                                                    values(Trait))) if "trait" in table else \
        frozenset()
    return Condition(tuple((d, frozenset(_values_of(r, table[d.value], f"{key}.{d}", dims[d])))
                           for d in Dimension if d.value in table), traits)


def _exclusion(r: _Reader, value: dict[str, Any], key: str,
               dims: Mapping[Dimension, tuple[str, ...]]) -> Exclusion:
    r.table(value, key, ("when", "reason", "host"))
    host = value.get("host")
    return Exclusion(
        _condition(r, value.get("when", {}), f"{key}.when", dims),
        r.text(value.get("reason"), f"{key}.reason"),
        None if host is None else HostRequirement(r.choice(host, f"{key}.host",
                                                           values(HostRequirement))))


def _rules(r: _Reader, value: Any, dims: Mapping[Dimension, tuple[str, ...]]
           ) -> tuple[ExpectRule, ...]:
    rules = []
    for i, entry in enumerate(_array(r, value, "expect")):
        key = f"expect[{i}]"
        r.table(entry, key, ("when", "result", "confidence", "why"))
        rules.append(ExpectRule(
            _condition(r, entry.get("when", {}), f"{key}.when", dims),
            Result(r.choice(entry.get("result"), f"{key}.result", EXPECTATIONS)),
            Confidence(r.choice(entry.get("confidence"), f"{key}.confidence",
                                values(Confidence))),
            r.text(entry.get("why"), f"{key}.why")))
    if rules[-1].when != Condition():
        r.fail(f"expect[{len(rules) - 1}].when", "the last rule must match every cell "
               "(when = {}): each cell needs an expected result")
    return tuple(rules)


def _selections(r: _Reader, value: Any, dims: Mapping[Dimension, tuple[str, ...]],
                groups: tuple[Group, ...]) -> tuple[Selection, ...]:
    table = r.table(value, "selections")
    out = []
    names = tuple(g.name for g in groups)
    for name, entry in table.items():
        key = f"selections.{name}"
        r.table(entry, key, ("why", "groups", *values(Dimension)))
        when = {k: v for k, v in entry.items() if k not in ("why", "groups")}
        out.append(Selection(
            name, r.text(entry.get("why"), f"{key}.why"),
            _values_of(r, entry["groups"], f"{key}.groups", names) if "groups" in entry else (),
            _condition(r, when, key, dims)))
    return tuple(out)
