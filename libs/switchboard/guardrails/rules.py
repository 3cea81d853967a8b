"""Guardrail rules: what to look for in text at one boundary, and what to do when it is found.

A scenario declares rules per boundary (``input``: what the caller says, checked at the edge before it
is committed; ``output``: what an agent says, checked in the agent before the caller hears it;
``handoff``: the reason and context of every transfer, checked by the conductor). A rule matches a
built-in PII detector, a regex, or (``moderation``) the verdict of an OpenAI-compatible moderation
model, and acts:

- ``redact``: the match is replaced by ``[<label>]`` wherever the text goes next (history, audit, traces);
- ``block``: the text does not pass (the caller's message is refused with an ``error`` event; a handoff
  is refused and the caller goes to the fallback agent);
- ``fallback``: the text passes, redacted, and the conversation goes to the fallback agent.

PII never reaches logs: ``RedactingFilter`` scrubs every log record with the PII detectors, whatever
the scenario declares.

Moderation rules need a network call: :func:`check` (synchronous, used on every streamed piece) skips
them, and ``switchboard.guardrails.moderation`` runs them where the text is checked whole (caller input
at the edge, handoffs in the conductor). They block or fall back; they never redact.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from enum import StrEnum
from typing import Literal, Self

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator


def _luhn(digits: str) -> bool:
    total, double = 0, False
    for ch in reversed(digits):
        d = int(ch) * 2 if double else int(ch)
        total += d - 9 if d > 9 else d
        double = not double
    return total % 10 == 0


PII_PATTERNS: dict[str, re.Pattern[str]] = {
    "email": re.compile(r"\b[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}\b"),
    "card": re.compile(r"\b(?:\d[ -]?){12,18}\d\b"),
    "ssn": re.compile(r"\b\d{3}-\d{2}-\d{4}\b"),
    "phone": re.compile(r"(?<![\w+])(?:\+?\d{1,2}[ .-]?)?\(?\d{3}\)?[ .-]?\d{3}[ .-]?\d{4}\b"),
}
"""Built-in detectors. ``card`` matches only numbers that pass the Luhn check."""


_TRIGGERS: dict[str, str] = {"email": "@", "card": r"\d", "ssn": r"\d", "phone": r"\d"}
"""A character each detector's matches contain (the same ``\\d`` as the patterns, Unicode digits included): a
text without it is passed over without the detector's scan, a fifth of its cost. Most of what an agent
says holds no digit and no ``@``, and every output piece is checked several times on its way out."""

_MAY_MATCH: dict[str, Callable[[str], object]] = {kind: re.compile(ch).search for kind, ch in _TRIGGERS.items()}


def find_pii(kind: str, text: str) -> list[tuple[int, int]]:
    if not _MAY_MATCH[kind](text):
        return []
    spans = []
    for m in PII_PATTERNS[kind].finditer(text):
        if kind == "card" and not _luhn(re.sub(r"\D", "", m.group(0))):
            continue
        spans.append(m.span())
    return spans


class Boundary(StrEnum):
    INPUT = "input"
    OUTPUT = "output"
    HANDOFF = "handoff"


class Action(StrEnum):
    REDACT = "redact"
    BLOCK = "block"
    FALLBACK = "fallback"


class ModerationSpec(BaseModel):
    """A moderation rule's model call (``POST {OPENAI_BASE_URL}/moderations`` with ``OPENAI_API_KEY``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    model: str = "omni-moderation-latest"
    categories: list[str] = Field(default_factory=list)
    """Only these categories count (e.g. ``violence``, ``self-harm/intent``); empty: the model's
    overall ``flagged``."""
    on_error: Literal["fail_closed", "fail_open"] = "fail_closed"
    """When the model cannot answer (error, timeout, open breaker): ``fail_closed`` acts as if the text
    were flagged, ``fail_open`` lets it pass."""
    timeout_s: float = Field(2.0, gt=0, le=30)
    """One call's bound; the caller waits this long at most."""


class GuardrailRule(BaseModel):
    """One rule: a detector (``pii``), a regex (``pattern``) or a moderation model (``moderation``),
    the boundaries it guards, an action."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    pii: Literal["email", "card", "ssn", "phone"] | None = None
    """A built-in detector."""
    pattern: str | None = None
    """A regex (Python syntax); validated when the scenario loads."""
    moderation: ModerationSpec | None = None
    """A moderation model's verdict (input and handoff boundaries; action ``block`` or ``fallback``)."""
    at: list[Boundary] = Field(default_factory=lambda: [Boundary.INPUT, Boundary.OUTPUT, Boundary.HANDOFF])
    action: Action = Action.REDACT
    label: str = ""
    """What a redacted match becomes (``[<label>]``); default: the detector or rule name, upper-cased."""

    @field_validator("pattern")
    @classmethod
    def _compiles(cls, v: str | None) -> str | None:
        if v is not None:
            try:
                compiled = re.compile(v)
            except re.error as exc:
                raise ValueError(f"invalid regex {v!r}: {exc}") from exc
            if compiled.fullmatch("") is not None:  # e.g. a trailing '|': it matched between every character
                raise ValueError(f"regex {v!r} matches the empty string, so it would match every text")
        return v

    @model_validator(mode="after")
    def _one_detector(self) -> Self:
        if [self.pii, self.pattern, self.moderation].count(None) != 2:
            raise ValueError(f"guardrail {self.name!r}: give exactly one of 'pii', 'pattern' or 'moderation'")
        if self.moderation is not None:
            if self.action is Action.REDACT:
                raise ValueError(f"guardrail {self.name!r}: a moderation rule has action 'block' or 'fallback'")
            if "at" not in self.model_fields_set:  # streamed output is checked piece by piece, without a call
                object.__setattr__(self, "at", [Boundary.INPUT, Boundary.HANDOFF])
            elif Boundary.OUTPUT in self.at:
                raise ValueError(f"guardrail {self.name!r}: moderation guards 'input' and 'handoff', not 'output'")
        return self

    def may_match(self, text: str) -> bool:
        """False when the rule cannot match anywhere in ``text``: a detector's character is missing (see
        ``_MAY_MATCH``), or it is a moderation rule. A regex rule may always match."""
        if self.moderation is not None:
            return False
        if self.pii is not None:
            return bool(_MAY_MATCH[self.pii](text))
        return True

    def spans(self, text: str) -> list[tuple[int, int]]:
        """Where the rule's detector matches (nothing for a moderation rule: it judges the whole text)."""
        if self.moderation is not None:
            return []
        if self.pii is not None:
            return find_pii(self.pii, text)
        assert self.pattern is not None
        return [m.span() for m in re.finditer(self.pattern, text) if m.end() > m.start()]  # not an empty match

    @property
    def replacement(self) -> str:
        return f"[{(self.label or self.pii or self.name).upper()}]"


class GuardrailsConfig(BaseModel):
    """A scenario's ``guardrails:`` block."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    rules: list[GuardrailRule] = Field(default_factory=list)
    blocked_message: str = "I'm sorry, I can't help with that."
    """What the caller hears when a guardrail blocks."""

    def at(self, boundary: Boundary) -> list[GuardrailRule]:
        return [r for r in self.rules if boundary in r.at]

    @property
    def moderated(self) -> bool:
        """Whether any rule asks a moderation model."""
        return any(r.moderation is not None for r in self.rules)


def may_match_any(rules: Iterable[GuardrailRule]) -> Callable[[str], bool]:
    """One test for "may any of ``rules`` match this text?" (``GuardrailRule.may_match`` of each, in one
    search): a regex rule always may, a moderation rule never does (it is not run on streamed text)."""
    triggers: set[str] = set()
    for rule in rules:
        if rule.pii is not None:
            triggers.add(_TRIGGERS[rule.pii])
        elif rule.moderation is None:
            return lambda text: True
    if not triggers:
        return lambda text: False
    search = re.compile("|".join(sorted(triggers))).search
    return lambda text: search(text) is not None


@dataclass(frozen=True)
class Verdict:
    """The text as it may pass on (redacted), and what the strictest matching rule decided."""

    text: str
    action: Action | None = None
    """None: nothing matched."""
    rules: tuple[str, ...] = ()

    @property
    def blocked(self) -> bool:
        return self.action is Action.BLOCK


_SEVERITY = {Action.REDACT: 0, Action.FALLBACK: 1, Action.BLOCK: 2}


def check(rules: Iterable[GuardrailRule], text: str) -> Verdict:
    """Apply every pattern rule; matches are redacted whatever the action, the strictest action wins.
    Moderation rules are skipped (:func:`switchboard.guardrails.moderation.check_moderated` runs them)."""
    action: Action | None = None
    matched: list[str] = []
    for rule in rules:
        spans = rule.spans(text)
        if not spans:
            continue
        matched.append(rule.name)
        action = strictest(action, rule.action)
        for start, end in sorted(spans, reverse=True):
            text = text[:start] + rule.replacement + text[end:]
    return Verdict(text, action, tuple(matched))


def strictest(a: Action | None, b: Action | None) -> Action | None:
    """The stricter of two actions (None: nothing matched)."""
    if a is None or (b is not None and _SEVERITY[b] > _SEVERITY[a]):
        return b
    return a


def redact_pii(text: str) -> str:
    """Every built-in PII detector, redacting: what logs, audit records and traces get."""
    for kind in PII_PATTERNS:
        for start, end in sorted(find_pii(kind, text), reverse=True):
            text = text[:start] + f"[{kind.upper()}]" + text[end:]
    return text
