"""Guardrail rules and PII detectors: redaction, blocking, streams split anywhere, logs."""

from __future__ import annotations

import io
import json
import logging
import sys

import pytest
from pydantic import ValidationError

from switchboard.guardrails import Action, GuardrailRule, StreamGuard, check, find_pii, redact_pii
from switchboard.guardrails.rules import PII_PATTERNS, may_match_any
from switchboard.logs import configure

CARD = "4111 1111 1111 1111"  # a test card number: passes Luhn


def test_detectors_find_what_they_should_and_not_order_numbers() -> None:
    text = f"order A1001, pin 1234, card {CARD}, mail jane@example.com, ssn 123-45-6789, call 415-555-0134"
    assert redact_pii(text) == "order A1001, pin 1234, card [CARD], mail [EMAIL], ssn [SSN], call [PHONE]"


ARABIC_INDIC_SSN = "١٢٣-٤٥-٦٧٨٩"  # Unicode digits: the detectors' \\d matches them, so must the quick check


@pytest.mark.parametrize(
    "text",
    [
        "", "no digits and no at sign here", f"card {CARD}", "mail jane@example.com", "at @ but no address",
        "ssn 123-45-6789", "call (415) 555-0134 or +1 415.555.0134", f"ssn {ARABIC_INDIC_SSN}", "order A1001",
        "jane@example.com 4111111111111111 123-45-6789 4155550134",
    ],
)  # fmt: skip
def test_the_quick_check_finds_what_the_full_scan_finds(text: str) -> None:
    for kind, pattern in PII_PATTERNS.items():
        scanned = [m.span() for m in pattern.finditer(text)]
        if kind == "card":
            scanned = [s for s in scanned if find_pii("card", text[s[0] : s[1]])]
        assert find_pii(kind, text) == scanned, kind


def test_unicode_digits_are_still_scanned() -> None:
    assert find_pii("ssn", f"ssn {ARABIC_INDIC_SSN}") == [(4, 15)]


def test_a_card_number_must_pass_luhn() -> None:
    assert find_pii("card", "4111 1111 1111 1112") == []


def test_the_strictest_action_wins_and_everything_matched_is_redacted() -> None:
    rules = [
        GuardrailRule(name="cards", pii="card", action=Action.REDACT),
        GuardrailRule(name="threats", pattern=r"(?i)\bbomb\b", action=Action.BLOCK),
    ]
    verdict = check(rules, f"bomb the store, card {CARD}")
    assert verdict.blocked and verdict.rules == ("cards", "threats")
    assert CARD not in verdict.text and "[THREATS]" in verdict.text


@pytest.mark.parametrize(
    "fields",
    [{"name": "x"}, {"name": "x", "pii": "card", "pattern": "a"}, {"name": "x", "pattern": "(unclosed"}],
    ids=["no detector", "two detectors", "bad regex"],
)
def test_bad_rules_are_refused_when_the_scenario_loads(fields: dict[str, str]) -> None:
    with pytest.raises(ValidationError):
        GuardrailRule.model_validate(fields)


@pytest.mark.parametrize("size", [1, 2, 3, 5, 7, 13])
def test_a_stream_never_releases_a_match_whatever_the_split(size: int) -> None:
    guard = StreamGuard([GuardrailRule(name="cards", pii="card")])
    text = f"Your card {CARD} is on file, and so is the other one {CARD} too."
    out = "".join(guard.feed(text[i : i + size]) for i in range(0, len(text), size)) + guard.finish()
    assert out == text.replace(CARD, "[CARD]")


class CountingRule(GuardrailRule):
    """A rule that counts its scans."""

    def spans(self, text: str) -> list[tuple[int, int]]:
        SCANS.append(self.name)
        return super().spans(text)


SCANS: list[str] = []
MIXED_RULES = [
    CountingRule(name="card_number", pii="card"), CountingRule(name="ssn", pii="ssn", action=Action.BLOCK),
    CountingRule(name="email", pii="email"), CountingRule(name="codeword", pattern=r"\bbanana\b", label="fruit"),
]  # fmt: skip


@pytest.mark.parametrize("size", [1, 4, 9, 40])
def test_a_stream_guard_says_what_one_check_of_the_whole_text_says(size: int) -> None:
    """Fed in pieces with several rules (some pieces give no detector a chance), the guard releases the
    whole text's redaction and reports the same rules and action."""
    text = (
        "Thanks for calling, I can help with that today and the weather is lovely out here. "
        f"Your card {CARD} and ssn 123-45-6789 are noted; mail jane@example.com about the banana order. "
        "Anything else I can do for you before you go? Have a good one."
    )
    guard = StreamGuard(MIXED_RULES)
    out = "".join(guard.feed(text[i : i + size]) for i in range(0, len(text), size)) + guard.finish()
    whole = check(MIXED_RULES, text)
    assert out == whole.text and "[CARD]" in out and "[SSN]" in out and "[EMAIL]" in out and "[FRUIT]" in out
    assert sorted(set(guard.matched)) == sorted(whole.rules) and guard.action is whole.action is Action.BLOCK


def test_a_detector_whose_character_never_comes_is_never_scanned() -> None:
    SCANS.clear()
    guard = StreamGuard(MIXED_RULES)
    words = "Sure, I can help with your return. Which order is it, and what went wrong with it? " * 3
    out = "".join(guard.feed(word + " ") for word in words.split()) + guard.finish()
    assert out.split() == words.split()
    assert set(SCANS) == {"codeword"}  # a regex may always match; no digit, no "@": no detector ran


PII_TEXT = (
    "Thanks for calling, I can help with that today. Your card "
    f"{CARD} is noted, the ssn 123-45-6789 too; write to jane@example.com and we will answer by 5 pm today. "
    "Anything else I can do for you before you go?"
)


@pytest.mark.parametrize("size", [1, 3, 6, 11, 64, 200])
def test_a_guard_of_detectors_only_says_what_one_check_says(size: int) -> None:
    """Without a regex rule, pieces that give no detector a chance pass unscanned: the result is still the
    whole text's check, wherever the digits and the ``@`` fall."""
    rules = MIXED_RULES[:3]
    guard = StreamGuard(rules)
    out = "".join(guard.feed(PII_TEXT[i : i + size]) for i in range(0, len(PII_TEXT), size)) + guard.finish()
    whole = check(rules, PII_TEXT)
    assert out == whole.text and "[CARD]" in out and "[SSN]" in out and "[EMAIL]" in out
    assert sorted(set(guard.matched)) == sorted(whole.rules) and guard.action is whole.action is Action.BLOCK


class AskedRule(GuardrailRule):
    """A rule that counts how often it is asked whether it may match."""

    def may_match(self, text: str) -> bool:
        ASKED.append(self.name)
        return super().may_match(text)


ASKED: list[str] = []


def test_a_quiet_stream_costs_one_search_per_piece_and_asks_no_rule() -> None:
    ASKED.clear()
    guard = StreamGuard([AskedRule(name="card_number", pii="card"), AskedRule(name="email", pii="email")])
    words = "Sure, I can help with your return. Which order is it, and what went wrong with it? " * 3
    out = "".join(guard.feed(word + " ") for word in words.split()) + guard.finish()
    assert out.split() == words.split()
    assert ASKED == []
    guard.feed("my order is 12 and it came broken, the box was open and wet through and through ")  # a digit
    assert ASKED


@pytest.mark.parametrize(
    "rules",
    [
        [GuardrailRule(name="c", pii="card")],
        [GuardrailRule(name="e", pii="email")],
        [
            GuardrailRule(name="c", pii="card"),
            GuardrailRule(name="e", pii="email"),
            GuardrailRule(name="p", pii="phone"),
        ],
        [GuardrailRule(name="r", pattern="x")],
        [GuardrailRule(name="m", moderation={}, action=Action.BLOCK)],
        [],
    ],
)
@pytest.mark.parametrize("text", ["", "hello there", "call 555", "a@b", "\u0663 arabic three", "x"])
def test_one_search_says_whether_any_rule_may_match(rules: list[GuardrailRule], text: str) -> None:
    assert may_match_any(rules)(text) is any(rule.may_match(text) for rule in rules)


def test_no_log_line_carries_pii_whatever_a_call_passes(monkeypatch: pytest.MonkeyPatch) -> None:
    """Through the logging every service sets up (``logs.configure``), not a handler made for the test."""
    stream = io.StringIO()
    monkeypatch.setattr(sys, "stdout", stream)
    root = logging.getLogger()
    kept = (root.handlers[:], root.level)
    try:
        configure("test")
        logging.getLogger("pii-test").warning("caller said %s", f"card {CARD}", extra={"email": "jane@example.com"})
    finally:
        root.handlers[:], level = kept
        root.setLevel(level)
    line = json.loads(stream.getvalue())
    assert CARD not in stream.getvalue() and "jane@example.com" not in stream.getvalue()
    assert line["msg"] == "caller said card [CARD]" and line["email"] == "[EMAIL]"
