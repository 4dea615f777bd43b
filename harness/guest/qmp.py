"""A small synchronous facade over ``qemu.qmp``.

Async inside, sync outside: one ``QMPClient`` runs on a private event loop in a daemon
thread; every public call blocks with a timeout.  The harness listens (QEMU connects to
us), so there is no race between QEMU creating a socket and the harness finding it.

Events are listened for *before* the action that causes them::

    with qmp.listen("DEVICE_DELETED") as deleted:
        qmp.execute("device_del", {"id": "dimm0"})
        deleted.wait(lambda e: e["data"].get("device") == "dimm0", timeout=10)

Every command, reply and event goes into a transcript with monotonic timestamps, written
to ``qmp.jsonl`` as it happens (so a killed run still leaves it).
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import time
from collections.abc import Callable, Coroutine
from concurrent.futures import TimeoutError as FutureTimeout
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar

from qemu.qmp import EventListener, ExecuteError, QMPClient
from qemu.qmp.error import QMPError

from ..errors import LostVMError, QmpError

log = logging.getLogger(__name__)

T = TypeVar("T")
Event = dict[str, Any]


class Transcript:
    """An append-only JSON-lines log of QMP traffic, mirrored in memory."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self.entries: list[dict[str, Any]] = []
        #: The file's line number of ``entries[0]`` (it is appended to, never rewritten).
        self.first_line = _count_lines(path) if path is not None else 0
        self._lock = threading.Lock()
        # Open for the transcript's lifetime (every record() appends); close() closes it.
        self._file = open(path, "a", encoding="utf-8") if path else None  # noqa: SIM115

    def record(self, kind: str, payload: Any, **extra: Any) -> dict[str, Any]:
        entry = {"t": time.monotonic(), "wall": time.time(), "kind": kind, "msg": payload, **extra}
        with self._lock:
            self.entries.append(entry)
            if self._file:
                self._file.write(json.dumps(entry, default=str) + "\n")
                self._file.flush()
        return entry

    def close(self) -> None:
        with self._lock:
            if self._file:
                self._file.close()
                self._file = None


def _count_lines(path: Path) -> int:
    try:
        with open(path, "rb") as f:
            return sum(1 for _ in f)
    except FileNotFoundError:
        return 0


class EventWaiter:
    """A synchronous view of a registered ``EventListener``; use via ``Qmp.listen``."""

    def __init__(self, qmp: Qmp, listener: EventListener) -> None:
        self._qmp = qmp
        self._listener = listener
        self.seen: list[Event] = []

    def wait(
        self,
        predicate: Callable[[Event], bool] | None = None,
        *,
        timeout: float,
        what: str | None = None,
    ) -> Event:
        """Return the next event matching ``predicate``; raise ``QmpError`` on timeout."""
        deadline = time.monotonic() + timeout
        names = ", ".join(self._listener.names or ["any event"])
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise QmpError(f"{what or names} did not arrive within {timeout:.1f} s")
            try:
                event = dict(self._qmp._run(self._listener.get(), timeout=left))
            except QmpError:
                raise QmpError(f"{what or names} did not arrive within {timeout:.1f} s") from None
            self.seen.append(event)
            if predicate is None or predicate(event):
                return event

    def drain(self) -> list[Event]:
        """Events that arrived and were not yet consumed, without waiting."""
        items = self._listener.clear()
        events = [dict(e) for e in items]
        self.seen.extend(events)
        return events


class Qmp:
    """A synchronous QMP client.  ``start()`` listens; QEMU connects; ``accept()`` handshakes."""

    def __init__(self, socket_path: Path, *, transcript: Path | None, timeout: float,
                 explain_lost: Callable[[], str | None] | None = None) -> None:
        self.socket_path = socket_path
        self.timeout = timeout
        #: Says why the connection went (e.g. "QEMU died (killed by signal 9): ..."), or None.
        self.explain_lost = explain_lost
        self.transcript = Transcript(transcript)
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="qmp-loop", daemon=True)
        self._thread.start()
        self._client = QMPClient("harness")
        self._all_events = EventListener()
        self._recorder: asyncio.Future[None] | None = None
        self._closed = False
        #: The data of QEMU's SHUTDOWN event once it came ({"guest": ..., "reason": ...}).
        self.shutdown: dict[str, Any] | None = None

    # -- plumbing -------------------------------------------------------------------------
    def _run(self, coro: Coroutine[Any, Any, T], *, timeout: float | None = None) -> T:
        fut = asyncio.run_coroutine_threadsafe(coro, self._loop)
        try:
            return fut.result(timeout if timeout is not None else self.timeout)
        except FutureTimeout:
            fut.cancel()
            raise QmpError("QMP call timed out") from None

    async def _record_events(self) -> None:
        async for event in self._all_events:
            if event.get("event") == "SHUTDOWN":
                data = event.get("data")
                self.shutdown = dict(data) if isinstance(data, dict) else {}
            self.transcript.record("event", dict(event))

    # -- lifecycle ------------------------------------------------------------------------
    def start(self) -> None:
        """Create the listening socket QEMU will connect to (call before launching QEMU)."""
        self._run(self._client.start_server(str(self.socket_path)))

    def accept(self, timeout: float) -> None:
        """Wait for QEMU to connect and negotiate capabilities."""
        try:
            self._run(self._client.accept(), timeout=timeout)
        except QmpError:
            raise LostVMError(f"QEMU did not connect to QMP within {timeout:.1f} s") from None
        except QMPError as exc:
            raise LostVMError(f"QMP handshake failed: {exc}") from exc
        self._client.register_listener(self._all_events)

        async def start_recorder() -> None:
            self._recorder = asyncio.ensure_future(self._record_events())

        self._run(start_recorder())
        greeting = self._client.greeting
        self.transcript.record("greeting", greeting._asdict() if greeting else {})

    def close(self) -> None:
        """Disconnect and stop the loop; safe to call twice."""
        if self._closed:
            return
        self._closed = True
        try:
            if self._recorder is not None:
                self._loop.call_soon_threadsafe(self._recorder.cancel)
            self._run(self._client.disconnect(), timeout=5)
        except Exception:
            # QEMU may already be gone; closing must not fail.
            log.debug("QMP disconnect failed", exc_info=True)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=5)
        self.transcript.close()

    # -- commands -------------------------------------------------------------------------
    def execute(self, command: str, arguments: dict[str, Any] | None = None, *,
                timeout: float | None = None, record: bool = True) -> Any:
        """Run one QMP command and return its ``return`` value.

        Raises ``QmpError`` naming the command when QEMU rejects it or does not answer,
        and ``LostVMError`` when the connection is gone.  ``record=False`` keeps a
        successful command and its reply out of the transcript (a sampler's thousands);
        failures are recorded all the same.
        """
        if self._closed:
            raise LostVMError(f"QMP is closed; cannot run {command}")
        if record:
            self.transcript.record("command", {"execute": command, "arguments": arguments or {}})
        started = time.monotonic()
        try:
            result = self._run(self._client.execute(command, arguments), timeout=timeout)
        except ExecuteError as exc:
            self.transcript.record("error", {"execute": command, "error": str(exc)},
                                   elapsed=time.monotonic() - started)
            raise QmpError(f"QMP {command} failed: {exc.error_class}: {exc}") from exc
        except QmpError:
            self.transcript.record("timeout", {"execute": command},
                                   elapsed=time.monotonic() - started)
            raise QmpError(f"QMP {command} did not answer within "
                           f"{timeout if timeout is not None else self.timeout:.1f} s") from None
        except (QMPError, ConnectionError, EOFError) as exc:
            self.transcript.record("lost", {"execute": command, "error": repr(exc)})
            why = self.explain_lost() if self.explain_lost is not None else None
            if why:
                raise LostVMError(f"{why} (during QMP {command})") from exc
            raise LostVMError(f"QMP connection lost during {command}: {exc!r}") from exc
        if record:
            self.transcript.record("reply", {"execute": command, "return": result},
                                   elapsed=time.monotonic() - started)
        return result

    def hmp(self, command_line: str, *, timeout: float | None = None,
            record: bool = True) -> str:
        """Run a human monitor command (only for what QMP lacks, e.g. ``info usernet``)."""
        out = self.execute("human-monitor-command", {"command-line": command_line},
                           timeout=timeout, record=record)
        return str(out)

    def listen(self, *names: str) -> _ListenContext:
        """Register a listener for ``names`` (all events if none) until the block ends."""
        return _ListenContext(self, EventListener(list(names) or None))



class _ListenContext:
    def __init__(self, qmp: Qmp, listener: EventListener) -> None:
        self._qmp = qmp
        self._listener = listener

    def __enter__(self) -> EventWaiter:
        self._qmp._client.register_listener(self._listener)
        return EventWaiter(self._qmp, self._listener)

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        try:
            self._qmp._client.remove_listener(self._listener)
        except Exception:
            # Removing a listener after a disconnect is harmless; don't mask the block's error.
            log.debug("QMP listener removal failed", exc_info=True)
