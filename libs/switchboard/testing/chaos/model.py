"""The chaos scenario's agents as an OpenAI-compatible responder, for the model-provider fault."""

from __future__ import annotations

import json
import random
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from ..scripted_openai import ScriptedReply


@dataclass
class ModelFaults:
    """Per-call fault rates of :class:`ChaosModel` while its fault is on."""

    p_500: float = 0.10
    p_429: float = 0.10
    p_slow: float = 0.10
    slow_s: float = 1.5
    base_delay_s: float = 0.2
    """Every answer's latency (the offline model's ``delay_s`` in the offline runs)."""


@dataclass
class ChaosModel:
    """The chaos scenario's agents as an OpenAI-compatible responder, failing a fraction of calls.

    Agents are recognised by ``Chaos agent <name>`` in their instructions and behave like their
    offline rules. While ``faulty`` is set, each call fails with HTTP 500 (``p_500``) or 429
    (``p_429``), or answers after ``slow_s`` extra (``p_slow``).
    """

    faults: ModelFaults = field(default_factory=ModelFaults)
    seed: int = 0
    faulty: bool = False
    calls: int = 0
    errors_500: int = 0
    errors_429: int = 0
    slow: int = 0
    _rng: random.Random = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self._rng = random.Random(self.seed)

    def stats(self) -> dict[str, int]:
        return {"calls": self.calls, "http_500": self.errors_500, "http_429": self.errors_429, "slow": self.slow}

    def __call__(self, body: dict[str, Any]) -> ScriptedReply:
        self.calls += 1
        delay = self.faults.base_delay_s
        if self.faulty:
            roll = self._rng.random()
            f = self.faults
            if roll < f.p_500:
                self.errors_500 += 1
                return ScriptedReply(status=500, delay_s=delay)
            if roll < f.p_500 + f.p_429:
                self.errors_429 += 1
                return ScriptedReply(status=429, delay_s=delay / 4)
            if roll < f.p_500 + f.p_429 + f.p_slow:
                self.slow += 1
                delay += f.slow_s
        messages: list[dict[str, Any]] = body.get("messages") or []
        system = str(messages[0].get("content") or "") if messages and messages[0].get("role") == "system" else ""
        found = re.search(r"Chaos agent (\w+)", system)
        agent = found.group(1) if found else "unknown"
        users = [m for m in messages if m.get("role") == "user"]
        said = str(users[-1].get("content") or "") if users else ""
        last = messages[-1] if messages else {}
        if last.get("role") == "tool" and _tool_name(messages, str(last.get("tool_call_id"))) == "record_effect":
            try:
                label = json.loads(str(last.get("content") or "{}")).get("label", "")
            except ValueError:
                label = ""
            return ScriptedReply(text=f"{agent} recorded [{label}]", delay_s=delay)
        low = said.lower()
        if agent == "generalist" and "ask" in low.split():
            return ScriptedReply(tool_calls=[("transfer_to_desk", {"reason": "asks the desk"})], delay_s=delay)
        if agent == "desk" and "ask" in low.split():  # handed back to the desk: no policy consult then
            return ScriptedReply(tool_calls=[("consult_supervisor", {"note": said})], delay_s=delay)
        if agent in ("desk", "generalist") and ("effect" in low or "note" in low):
            return ScriptedReply(tool_calls=[("transfer_to_clerk", {"reason": "asks the clerk"})], delay_s=delay)
        if agent in ("clerk", "supervisor") and "effect" in low:
            return ScriptedReply(tool_calls=[("record_effect", {"label": said})], delay_s=delay)
        verb = "noted" if agent == "clerk" else "heard"
        return ScriptedReply(text=f"{agent} {verb} [{said}]", delay_s=delay)


def _tool_name(messages: Sequence[dict[str, Any]], call_id: str) -> str | None:
    for message in reversed(messages):
        for call in message.get("tool_calls") or []:
            if call.get("id") == call_id:
                return str(call["function"]["name"])
    return None
