"""One caller: a WebSocket to some live edge, reopened with the session id whenever it drops.

A real client is simulated: a connection that drops is reopened on any live edge with
``?session_id=<id>``; the turn whose ``response.done`` never arrived is asked again, re-sending the
same client item id (so an already-committed message is not duplicated: the edge answers
``item_id_exists`` and the client only asks for the response again).
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake

from .errors import ChaosError
from .faults import FaultEnv
from .stats import reason
from .workload import FALLBACK_AGENT, ChaosTurn, Workload


class Clock:
    """Seconds since the run started."""

    def __init__(self) -> None:
        self.t0 = time.monotonic()

    def now(self) -> float:
        return time.monotonic() - self.t0


class ChaosClient:
    """One caller: a WebSocket to some live edge, reopened with the session id whenever it drops."""

    def __init__(self, index: int, env: FaultEnv, api_key: str, clock: Clock, workload: Workload) -> None:
        self.index = index
        self.env = env
        self.api_key = api_key
        self.clock = clock
        self.workload = workload
        self.ws: ClientConnection | None = None
        self.session_id: str | None = None
        self.port: int | None = None
        self.reconnects = 0
        self.current: ChaosTurn | None = None

    async def connect(self, deadline: float) -> None:
        error: BaseException | None = None
        while time.monotonic() < deadline:
            ports = self.env.edge_ports()
            if ports:
                first = self.index % len(ports)
                for port in ports[first:] + ports[:first]:
                    try:
                        await self._open(port, deadline)
                        return
                    except (OSError, InvalidHandshake, ConnectionClosed, TimeoutError, ChaosError) as exc:
                        error = exc
            await asyncio.sleep(0.1)  # every edge refused: one is being replaced; try again shortly
        raise ChaosError(f"could not reconnect to any edge: {error!r}")

    async def _open(self, port: int, deadline: float) -> None:
        query = "model=switchboard&switchboard_events=1" + (f"&session_id={self.session_id}" if self.session_id else "")
        headers = {"Authorization": f"Bearer {self.api_key}"}
        timeout = max(0.1, min(5.0, deadline - time.monotonic()))
        ws = await asyncio.wait_for(
            connect(f"ws://127.0.0.1:{port}/v1/realtime?{query}", additional_headers=headers, max_size=None),
            timeout,
        )
        try:
            created = await self._recv(ws, time.monotonic() + timeout)
            info = await self._recv(ws, time.monotonic() + timeout)
        except BaseException:
            await ws.close()
            raise
        if created.get("type") != "session.created" or info.get("type") != "switchboard.session":
            await ws.close()
            raise ChaosError(f"unexpected session start: {created.get('type')}, {info.get('type')}")
        if self.session_id is not None and (info.get("session_id") != self.session_id or not info.get("resumed")):
            await ws.close()
            raise ChaosError(f"session {self.session_id} was not resumed: {info}")
        self.session_id = str(info["session_id"])
        self.ws, self.port = ws, port

    @staticmethod
    async def _recv(ws: ClientConnection, deadline: float) -> dict[str, Any]:
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError
        raw = await asyncio.wait_for(ws.recv(), left)
        event = json.loads(raw)
        if not isinstance(event, dict):
            raise ChaosError(f"server sent a non-object event: {raw!r}")
        return event

    async def _send(self, event: dict[str, Any]) -> None:
        assert self.ws is not None
        await self.ws.send(json.dumps(event))

    async def close(self) -> None:
        ws, self.ws = self.ws, None
        if ws is not None:
            try:
                await ws.close()
            except Exception:  # noqa: BLE001 - closing a dead connection
                pass

    async def turn(self, t: ChaosTurn, timeout_s: float) -> None:
        self.current = t
        t.started = self.clock.now()
        deadline = time.monotonic() + timeout_s
        try:
            while True:
                try:
                    if self.ws is None:
                        await self.connect(deadline)
                    t.asks += 1
                    await self._ask(t, deadline)
                    return
                except (ConnectionClosed, OSError):
                    self.ws = None
                    self.reconnects += 1
                    if time.monotonic() >= deadline:
                        raise TimeoutError from None
        except TimeoutError:
            t.outcome, t.hung, t.detail = "failed", True, f"hang: no response.done within {timeout_s:.0f}s"
            await self.close()  # the edge cancels the response; the next turn reconnects and resumes
        except ChaosError as exc:
            t.outcome, t.detail = "failed", str(exc)
        finally:
            t.ended = self.clock.now()
            self.current = None

    async def _ask(self, t: ChaosTurn, deadline: float) -> None:
        assert self.ws is not None
        item = {"type": "message", "role": "user", "id": t.item_id, "content": [{"type": "input_text", "text": t.text}]}
        for _ in range(5):
            await self._send({"type": "conversation.item.create", "item": item})
            conflict = False
            while True:
                event = await self._recv(self.ws, deadline)
                kind = event.get("type")
                if kind == "conversation.item.added" and (event.get("item") or {}).get("id") == t.item_id:
                    break
                if kind == "error":
                    err = event.get("error") or {}
                    if err.get("code") == "item_id_exists":  # committed before the connection dropped
                        break
                    if err.get("code") == "session_conflict":  # the edge reloaded the session: send again
                        conflict = True
                        break
                    raise ChaosError(f"message refused: {err.get('code')}: {err.get('message')}")
            if not conflict:
                break
        else:
            raise ChaosError("message refused: session_conflict five times")
        await self._send({"type": "response.create"})
        errors: list[str] = []
        handoffs: list[dict[str, Any]] = []
        while True:
            event = await self._recv(self.ws, deadline)
            kind = event.get("type")
            if kind == "error":
                err = event.get("error") or {}
                errors.append(f"{err.get('code')}: {err.get('message')}")
            elif kind == "switchboard.handoff":
                handoffs.append(event)
            elif kind == "response.done":
                self._classify(t, event.get("response") or {}, errors, handoffs)
                return

    def _classify(
        self, t: ChaosTurn, response: dict[str, Any], errors: list[str], handoffs: list[dict[str, Any]]
    ) -> None:
        status = response.get("status")
        metadata = response.get("metadata") or {}
        t.agent = metadata.get("agent")
        done = [o for o in response.get("output") or [] if o.get("status") == "completed"]
        t.reply = "".join(str(c.get("text", "")) for c in (done[-1].get("content") or [])) if done else ""
        if status != "completed":
            t.outcome = "failed"
            t.detail = "; ".join(errors) or f"response {status} without an error event"
            return
        t.warnings.extend(errors)
        unavailable = [h for h in handoffs if h.get("outcome") == "unavailable"]
        if self.workload.primary(t.agent, metadata) and f"[{t.text}]" in t.reply:
            t.outcome = "completed"
        elif t.agent == FALLBACK_AGENT or metadata.get("supervisor") == "failed" or unavailable:
            t.outcome = "fallback"
            why = str(unavailable[0].get("detail", "")) if unavailable else f"answered by {t.agent}"
            t.detail = reason(why)
        else:
            t.outcome = "failed"
            t.detail = f"unexpected answer from {t.agent}: {t.reply[:120]!r}"
