"""Swarm transcripts: a run written down so that it can be read, and replayed.

``transcript.json`` holds the plan, the options, the contention, the guest's
configuration, one entry per action (with the QMP commands it sent: what replay needs),
the guest observations, onlining batches, kdump reloads and notes, and the result.  The
QMP traffic itself (every command, reply and event, timestamped) stays in the guest's
``qmp.jsonl``: ``qmp_log`` names that file and the lines this swarm wrote
(``qmp_entries()`` reads them back), instead of a second copy.

Format version 2 (version 1 copied the QMP traffic into ``entries`` as ``qmp-*`` kinds;
both are read).
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import UsageError
from .contention import ContentionSpec
from .plan import SwarmPlan
from .report import SwarmOptions

if TYPE_CHECKING:
    from ..guest import GuestConfig

TRANSCRIPT_FORMAT = "kdump-harness-swarm-transcript"
TRANSCRIPT_VERSION = 2

@dataclass
class SwarmTranscript:
    """A swarm run, replayable: plan, options, guest, timestamped entries, result.

    ``entries`` hold ``{"t": monotonic, "rel": seconds from the first event, "kind": ...}``
    where kind is ``action`` (one plan event, with the QMP commands it sent),
    ``observation`` (a guest snapshot or settle poll), ``online`` (vCPUs onlined),
    ``reload`` or ``note``.  ``qmp_log`` is ``{"file", "first_line", "end_line"}``: the
    lines of the guest's qmp.jsonl this swarm wrote (``file`` relative to the transcript
    when they share a directory).
    """

    plan: SwarmPlan
    options: SwarmOptions
    contention: tuple[ContentionSpec, ...] = ()
    guest: dict[str, Any] = field(default_factory=dict)
    t0: float = 0.0
    wall0: float = 0.0
    entries: list[dict[str, Any]] = field(default_factory=list)
    result: dict[str, Any] | None = None
    qmp_log: dict[str, Any] | None = None

    def add(self, kind: str, t: float | None = None, **data: Any) -> dict[str, Any]:
        t = time.monotonic() if t is None else t
        entry = {"t": t, "rel": round(t - self.t0, 6) if self.t0 else None, "kind": kind, **data}
        self.entries.append(entry)
        return entry

    def actions(self) -> list[dict[str, Any]]:
        return [e for e in self.entries if e["kind"] == "action"]

    def to_json_dict(self) -> dict[str, Any]:
        return {"format": TRANSCRIPT_FORMAT, "version": TRANSCRIPT_VERSION,
                "plan": self.plan.to_json_dict(), "options": asdict(self.options),
                "contention": [c.to_json_dict() for c in self.contention],
                "guest": self.guest, "t0": self.t0, "wall0": self.wall0,
                "entries": sorted(self.entries, key=lambda e: e["t"]), "result": self.result,
                "qmp_log": self.qmp_log}

    def point_at_qmp_log(self, qmp_file: Path, first_line: int, end_line: int,
                         transcript_path: Path) -> None:
        """Record which lines of ``qmp_file`` this swarm's QMP traffic is."""
        same_dir = qmp_file.parent.resolve() == transcript_path.parent.resolve()
        self.qmp_log = {"file": qmp_file.name if same_dir else str(qmp_file.resolve()),
                        "first_line": first_line, "end_line": end_line}

    def qmp_entries(self, transcript_path: Path) -> list[dict[str, Any]]:
        """The QMP commands, replies and events of this swarm, read from qmp.jsonl (or,
        for a version 1 transcript, from its own ``qmp-*`` entries)."""
        if self.qmp_log is None:
            return [dict(e, kind=e["kind"].removeprefix("qmp-")) for e in self.entries
                    if str(e.get("kind", "")).startswith("qmp-")]
        path = transcript_path.parent / str(self.qmp_log["file"])
        try:
            lines = path.read_text().splitlines()
        except OSError as exc:
            raise UsageError(f"the transcript's QMP log {path} cannot be read: {exc}") from exc
        chosen = lines[int(self.qmp_log["first_line"]):int(self.qmp_log["end_line"])]
        return [json.loads(line) for line in chosen]

    def save(self, path: Path) -> None:
        path.write_text(json.dumps(self.to_json_dict(), indent=1, default=str) + "\n")

    @classmethod
    def from_json_dict(cls, d: dict[str, Any]) -> SwarmTranscript:
        if d.get("format") != TRANSCRIPT_FORMAT:
            raise UsageError("not a swarm transcript (no "
                             f"\"format\": \"{TRANSCRIPT_FORMAT}\")")
        if int(d.get("version", 0)) > TRANSCRIPT_VERSION:
            raise UsageError(f"transcript version {d['version']} is newer than this harness "
                             f"reads ({TRANSCRIPT_VERSION})")
        return cls(plan=SwarmPlan.from_json_dict(d["plan"]),
                   options=SwarmOptions(**d.get("options", {})),
                   contention=tuple(ContentionSpec.from_json_dict(c)
                                    for c in d.get("contention", ())),
                   guest=dict(d.get("guest", {})), t0=float(d.get("t0", 0.0)),
                   wall0=float(d.get("wall0", 0.0)), entries=list(d.get("entries", [])),
                   result=d.get("result"), qmp_log=d.get("qmp_log"))

    @classmethod
    def load(cls, path: Path) -> SwarmTranscript:
        try:
            data = json.loads(Path(path).read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise UsageError(f"cannot read transcript {path}: {exc}") from exc
        return cls.from_json_dict(data)


def guest_config_from_transcript(transcript: SwarmTranscript, **overrides: Any) -> GuestConfig:
    """The recorded guest configuration (tuples restored), with ``overrides`` applied."""
    from ..guest import GuestConfig

    recorded = dict(transcript.guest.get("config", {}))
    known = {f.name: f for f in fields(GuestConfig)}
    values: dict[str, Any] = {}
    for key, value in recorded.items():
        if key in known:
            values[key] = tuple(value) if isinstance(value, list) else value
    values.update(overrides)
    return GuestConfig(**values)
