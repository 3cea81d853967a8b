"""Moderation guardrail rules: configuration checks, no key, categories, the redacted text sent."""

from __future__ import annotations

import logging
from typing import Any

import pytest
from pydantic import ValidationError

from switchboard.guardrails import Action, Boundary, GuardrailRule, GuardrailsConfig
from switchboard.guardrails.moderation import Moderator, check_moderated
from switchboard.testing import ScriptedModeration, ScriptedOpenAIServer

CARD = "4111 1111 1111 1111"


@pytest.mark.parametrize(
    "fields",
    [
        {"moderation": {}},  # redact, the default action, is not a moderation verdict
        {"moderation": {}, "action": "block", "at": ["output"]},  # streamed output is not moderated
        {"moderation": {}, "action": "block", "pattern": "x"},
        {"moderation": {"on_error": "ignore"}, "action": "block"},
        {"moderation": {"timeout_s": 0}, "action": "block"},
    ],
)
def test_bad_moderation_rules_are_refused_when_the_scenario_loads(fields: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        GuardrailRule(name="mod", **fields)


def test_a_moderation_rule_guards_input_and_handoffs_by_default() -> None:
    rule = GuardrailRule.model_validate({"name": "mod", "moderation": {}, "action": "fallback"})
    assert rule.at == [Boundary.INPUT, Boundary.HANDOFF]
    assert rule.moderation is not None and rule.moderation.on_error == "fail_closed"


def test_without_a_key_moderation_is_skipped_and_said_once(caplog: pytest.LogCaptureFixture) -> None:
    config = GuardrailsConfig(rules=[GuardrailRule(name="mod", moderation={}, action=Action.BLOCK)])
    with caplog.at_level(logging.WARNING, logger="switchboard.guardrails.moderation"):
        assert Moderator.for_scenario(config, {"OPENAI_API_KEY": ""}) is None
    assert [r.getMessage() for r in caplog.records] == ["moderation guardrails skipped: OPENAI_API_KEY is not set"]
    assert Moderator.for_scenario(GuardrailsConfig(), {}) is None  # no moderation rule: nothing to say


async def test_categories_narrow_the_verdict_and_the_model_sees_the_redacted_text() -> None:
    rules = [
        GuardrailRule(name="cards", pii="card"),
        GuardrailRule(name="violence", moderation={"categories": ["violence"]}, action=Action.FALLBACK),
    ]
    async with ScriptedOpenAIServer() as server:
        moderator = Moderator(api_key="sk-test", base_url=server.base_url)
        try:
            server.script_moderation(ScriptedModeration(categories=["harassment"]))
            ignored = await check_moderated(rules, f"card {CARD}", moderator)
            server.script_moderation(ScriptedModeration(categories=["violence", "harassment"]))
            flagged = await check_moderated(rules, "a threat", moderator)
        finally:
            await moderator.aclose()
    assert (ignored.text, ignored.action, ignored.rules) == ("card [CARD]", Action.REDACT, ("cards",))
    assert (flagged.action, flagged.rules) == (Action.FALLBACK, ("violence",))
    assert [r["input"] for r in server.moderation_requests] == ["card [CARD]", "a threat"]
    assert server.moderation_requests[0]["model"] == "omni-moderation-latest"


async def test_a_slow_model_times_out_and_fails_closed() -> None:
    rule = GuardrailRule(name="mod", moderation={"timeout_s": 0.2}, action=Action.BLOCK)
    async with ScriptedOpenAIServer() as server:
        moderator = Moderator(api_key="sk-test", base_url=server.base_url)
        try:
            server.script_moderation(ScriptedModeration(delay_s=2))
            verdict = await check_moderated([rule], "hello", moderator)
        finally:
            await moderator.aclose()
    assert verdict.blocked and verdict.rules == ("mod",)
