"""Guardrails on streamed text, and on logs.

A model streams its answer in pieces, and a card number or an email can straddle two of them. The
``StreamGuard`` holds back the last ``holdback`` characters of what it has seen until more text (or the
end) shows whether they belong to a match, so the caller never hears a match that a rule redacts.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from ..log_fields import RECORD_METADATA
from .rules import Action, GuardrailRule, check, may_match_any, redact_pii

HOLDBACK = 64
"""Longest match a rule is expected to find (an email address, a spaced card number)."""


class StreamGuard:
    """Feed text pieces in order; get back what may be said now. ``finish()`` releases the rest."""

    def __init__(self, rules: Sequence[GuardrailRule], holdback: int = HOLDBACK) -> None:
        self.rules = list(rules)
        self.holdback = holdback
        self._pending = ""
        self._may_match = may_match_any(self.rules)
        self._quiet = True
        """No rule may match the held-back text: a piece that gives none a chance needs no scan at all."""
        self.action: Action | None = None
        self.matched: list[str] = []

    def feed(self, piece: str) -> str:
        if not self.rules:
            return piece
        text = self._pending + piece
        quiet = self._quiet and not self._may_match(piece)
        if len(text) <= self.holdback:  # all of it is held back: nothing to release, nothing to scan yet
            self._pending, self._quiet = text, quiet
            return ""
        cut = len(text) - self.holdback
        space = text.rfind(" ", 0, cut + 1)  # never release half a word that may be half a match
        cut = space + 1 if space >= 0 else 0
        if cut == 0 and len(text) > 4 * self.holdback:  # no word break for long: release all but the holdback
            cut = len(text) - self.holdback
        if quiet:  # what a model says most of the time: one search of the new piece
            released, self._pending = text[:cut], text[cut:]
            return released
        live = self._live(text)
        for rule in live:  # a match that the cut would halve is held back whole
            for start, end in rule.spans(text):
                if start < cut < end:
                    cut = start
        released, self._pending = self._apply(text[:cut], live), text[cut:]
        self._quiet = not self._may_match(self._pending)
        return released

    def finish(self) -> str:
        rest = self._pending if self._quiet else self._apply(self._pending, self._live(self._pending))
        self._pending, self._quiet = "", True
        return rest

    def _live(self, text: str) -> list[GuardrailRule]:
        """The rules that may match ``text``. A model speaks word by word and most of what it says gives
        no detector a chance (no digit, no ``@``): such text skips both scans of every detector."""
        return [rule for rule in self.rules if rule.may_match(text)]

    def _apply(self, text: str, rules: Sequence[GuardrailRule]) -> str:
        """``text`` with ``rules`` applied (the rules that may match it: any other would pass it as it is)."""
        if not text or not rules:
            return text
        verdict = check(rules, text)
        if verdict.action is not None:
            self.matched.extend(verdict.rules)
            if self.action is None or verdict.action is Action.BLOCK or self.action is Action.REDACT:
                self.action = verdict.action
        return verdict.text


class RedactingFilter(logging.Filter):
    """Scrubs PII from every log record's message and string fields (installed on the root handler)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.msg, str):
            record.msg = redact_pii(record.msg)
        if record.args:
            record.args = tuple(redact_pii(a) if isinstance(a, str) else a for a in record.args)
        for key, value in list(vars(record).items()):
            if isinstance(value, str) and key not in RECORD_METADATA:
                setattr(record, key, redact_pii(value))
        return True
