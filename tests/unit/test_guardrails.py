"""decide(): every handoff outcome, against the real retail scenario graph and contracts."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from switchboard.agents import ScenarioConfig, load_scenario
from switchboard.schemas import HandoffOutcome, HandoffRequest
from switchboard_edge.orchestration.guardrails import PENDING_AGENT, Verdict, decide

SCENARIOS = Path(__file__).resolve().parents[2] / "scenarios"


@pytest.fixture(scope="module")
def retail() -> ScenarioConfig:
    return load_scenario("retail", SCENARIOS).config


def ask(
    scenario: ScenarioConfig,
    source: str,
    target: str,
    context: dict[str, Any] | None = None,
    *,
    handoff_count: int = 0,
    visited: tuple[str, ...] | None = None,
    authenticated: bool = False,
) -> Verdict:
    request = HandoffRequest(source=source, target=target, reason="test", context=context or {})
    return decide(
        scenario,
        request,
        handoff_count=handoff_count,
        visited=visited if visited is not None else (source,),
        authenticated=authenticated,
    )


def test_retail_config_is_what_these_tests_assume(retail: ScenarioConfig) -> None:
    assert retail.fallback_agent == "generalist"
    assert retail.auth_agent == "auth"
    assert retail.max_handoff_depth == 6
    triage = retail.agent("triage")
    assert triage is not None
    assert {h.target for h in triage.handoffs} == {"returns", "billing", "auth"}
    assert retail.agent("returns").requires_auth  # type: ignore[union-attr]


def test_accepted_with_contract_context(retail: ScenarioConfig) -> None:
    v = ask(retail, "auth", "returns", {"order_id": "A1001"}, visited=("triage", "auth"), authenticated=True)
    assert v.outcome == HandoffOutcome.ACCEPTED
    assert v.final_target == "returns"
    assert v.context == {"order_id": "A1001"}
    assert not v.refused


def test_accepted_optional_contract_field_omitted(retail: ScenarioConfig) -> None:
    v = ask(retail, "triage", "returns", {}, authenticated=True)
    assert v.outcome == HandoffOutcome.ACCEPTED
    assert v.context == {}


def test_accepted_target_without_auth_requirement(retail: ScenarioConfig) -> None:
    v = ask(retail, "triage", "auth")
    assert v.outcome == HandoffOutcome.ACCEPTED
    assert v.final_target == "auth"


@pytest.mark.parametrize("order_id", ["1001", "a1001", "A10011", "AB001", ""])
def test_contract_refuses_bad_pattern(retail: ScenarioConfig, order_id: str) -> None:
    v = ask(retail, "triage", "returns", {"order_id": order_id}, authenticated=True)
    assert v.outcome == HandoffOutcome.REFUSED_CONTRACT
    assert v.final_target == "generalist"
    assert "order_id" in v.detail
    assert v.refused


def test_contract_refuses_wrong_type(retail: ScenarioConfig) -> None:
    v = ask(retail, "triage", "returns", {"order_id": 1001}, authenticated=True)
    assert v.outcome == HandoffOutcome.REFUSED_CONTRACT
    assert v.final_target == "generalist"


def test_contract_refuses_undeclared_key(retail: ScenarioConfig) -> None:
    v = ask(retail, "triage", "returns", {"order_id": "A1001", "customer_id": "C001"}, authenticated=True)
    assert v.outcome == HandoffOutcome.REFUSED_CONTRACT
    assert v.final_target == "generalist"
    assert "customer_id" in v.detail


def test_contract_refuses_any_key_on_empty_contract(retail: ScenarioConfig) -> None:
    v = ask(retail, "triage", "billing", {"order_id": "A1001"}, authenticated=True)
    assert v.outcome == HandoffOutcome.REFUSED_CONTRACT
    assert v.final_target == "generalist"


@pytest.mark.parametrize(
    ("source", "target"), [("triage", "generalist"), ("returns", "auth"), ("generalist", "returns")]
)
def test_graph_refuses_undeclared_edge(retail: ScenarioConfig, source: str, target: str) -> None:
    assert retail.agent(source).handoff_to(target) is None  # type: ignore[union-attr]
    v = ask(retail, source, target, authenticated=True)
    assert v.outcome == HandoffOutcome.REFUSED_GRAPH
    assert v.final_target == "generalist"
    assert source in v.detail and target in v.detail


def test_graph_refuses_unknown_source(retail: ScenarioConfig) -> None:
    v = ask(retail, "ghost", "returns", authenticated=True)
    assert v.outcome == HandoffOutcome.REFUSED_GRAPH


def test_unknown_target(retail: ScenarioConfig) -> None:
    v = ask(retail, "triage", "shipping")
    assert v.outcome == HandoffOutcome.UNKNOWN_TARGET
    assert v.final_target == "generalist"
    assert "shipping" in v.detail


def test_depth_cap_at_max(retail: ScenarioConfig) -> None:
    v = ask(retail, "triage", "auth", handoff_count=retail.max_handoff_depth)
    assert v.outcome == HandoffOutcome.DEPTH_CAP
    assert v.final_target == "generalist"
    assert str(retail.max_handoff_depth) in v.detail


def test_depth_just_below_cap_is_accepted(retail: ScenarioConfig) -> None:
    v = ask(retail, "triage", "auth", handoff_count=retail.max_handoff_depth - 1)
    assert v.outcome == HandoffOutcome.ACCEPTED


def test_ping_pong(retail: ScenarioConfig) -> None:
    v = ask(retail, "returns", "triage", visited=("triage", "returns"), authenticated=True)
    assert v.outcome == HandoffOutcome.PING_PONG
    assert v.final_target == "generalist"
    assert "triage -> returns -> triage" in v.detail


def test_auth_redirect_keeps_context_and_records_pending_agent(retail: ScenarioConfig) -> None:
    v = ask(retail, "triage", "returns", {"order_id": "A1001"}, authenticated=False)
    assert v.outcome == HandoffOutcome.REDIRECTED_AUTH
    assert v.final_target == "auth"
    assert v.context == {"order_id": "A1001", PENDING_AGENT: "returns"}
    assert not v.refused


def test_auth_redirect_without_context(retail: ScenarioConfig) -> None:
    v = ask(retail, "triage", "billing", authenticated=False)
    assert v.outcome == HandoffOutcome.REDIRECTED_AUTH
    assert v.context == {PENDING_AGENT: "billing"}


def test_no_redirect_when_authenticated(retail: ScenarioConfig) -> None:
    v = ask(retail, "triage", "billing", authenticated=True)
    assert v.outcome == HandoffOutcome.ACCEPTED
    assert v.final_target == "billing"
    assert PENDING_AGENT not in v.context


def test_refused_auth_when_source_is_auth_agent(retail: ScenarioConfig) -> None:
    v = ask(retail, "auth", "returns", {"order_id": "A1001"}, visited=("auth",), authenticated=False)
    assert v.outcome == HandoffOutcome.REFUSED_AUTH
    assert v.final_target == "generalist"
    assert v.refused


def test_refused_auth_when_auth_already_ran_this_turn(retail: ScenarioConfig) -> None:
    v = ask(retail, "billing", "returns", visited=("auth", "billing"), authenticated=False)
    assert v.outcome == HandoffOutcome.REFUSED_AUTH
    assert v.final_target == "generalist"


def test_refused_auth_without_auth_agent() -> None:
    config = ScenarioConfig.model_validate(
        {
            "name": "noauth",
            "entry_agent": "front",
            "fallback_agent": "front",
            "agents": [
                {"name": "front", "instructions": "x", "handoffs": [{"target": "vault"}]},
                {"name": "vault", "instructions": "x"},
            ],
        }
    )
    # requires_auth cannot be declared without an auth agent, so flip it on a copy past validation
    vault = config.agent("vault").model_copy(update={"requires_auth": True})  # type: ignore[union-attr]
    config = config.model_copy(update={"agents": [config.agent("front"), vault]})
    v = ask(config, "front", "vault")
    assert v.outcome == HandoffOutcome.REFUSED_AUTH
    assert v.final_target == "front"


def test_check_order_graph_before_contract_before_depth(retail: ScenarioConfig) -> None:
    # undeclared edge with a bad context at the depth cap: the graph check wins
    v = ask(retail, "triage", "generalist", {"bogus": 1}, handoff_count=99)
    assert v.outcome == HandoffOutcome.REFUSED_GRAPH
    # declared edge, bad context, at the depth cap: the contract check wins
    v = ask(retail, "triage", "returns", {"bogus": 1}, handoff_count=99)
    assert v.outcome == HandoffOutcome.REFUSED_CONTRACT
    # valid, at the cap and a ping-pong: depth wins
    v = ask(retail, "triage", "auth", handoff_count=99, visited=("auth", "triage"))
    assert v.outcome == HandoffOutcome.DEPTH_CAP


@pytest.mark.parametrize(
    ("target", "context", "blocked_outcome", "clean_outcome"),
    [
        ("a", {"code": "7"}, HandoffOutcome.REFUSED_GUARDRAIL, HandoffOutcome.ACCEPTED),
        ("b", {}, HandoffOutcome.REFUSED_GRAPH, HandoffOutcome.REFUSED_GRAPH),  # refused before the guardrails run
        ("nobody", {}, HandoffOutcome.UNKNOWN_TARGET, HandoffOutcome.UNKNOWN_TARGET),
        ("a", {"code": "x"}, HandoffOutcome.REFUSED_CONTRACT, HandoffOutcome.REFUSED_CONTRACT),
    ],
)
def test_every_verdict_carries_the_reason_as_the_handoff_guardrails_let_it_through(
    target: str, context: dict[str, Any], blocked_outcome: HandoffOutcome, clean_outcome: HandoffOutcome
) -> None:
    """What the conductor records and hands on, refusals included: the reason, never one the guardrails block."""
    guard = load_scenario("guard", Path(__file__).resolve().parents[1] / "system" / "scenarios").config

    def verdict(reason: str) -> Verdict:
        request = HandoffRequest(source="front", target=target, reason=reason, context=context)
        return decide(guard, request, handoff_count=0, visited=("front",), authenticated=False)

    blocked, clean = verdict("passing on CODE-123"), verdict("the caller asked for it")
    assert (blocked.outcome, blocked.reason) == (blocked_outcome, "")
    assert (clean.outcome, clean.reason) == (clean_outcome, "the caller asked for it")
