"""Output guardrails on an agent's finished turn: what it said is stored as the caller heard it."""

from __future__ import annotations

from collections.abc import Sequence

from ..schemas import MessageItem, TurnResult
from .rules import GuardrailRule, check


def guard_result(result: TurnResult, rules: Sequence[GuardrailRule], blocked_message: str) -> TurnResult:
    """The turn's assistant messages (and ``text``) with the output rules applied; a blocking match
    replaces the message with ``blocked_message``."""

    def guarded(text: str) -> str:
        verdict = check(rules, text)
        return blocked_message if verdict.blocked else verdict.text

    items = [
        i.model_copy(update={"text": guarded(i.text)}) if isinstance(i, MessageItem) and i.role == "assistant" else i
        for i in result.items
    ]
    return result.model_copy(update={"items": items, "text": guarded(result.text)})
