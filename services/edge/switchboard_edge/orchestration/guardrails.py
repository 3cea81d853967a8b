"""Handoff guardrails: one pure function decides every transfer, so it is easy to test and audit."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError

from switchboard.agents.config import ScenarioConfig
from switchboard.guardrails.moderation import Moderator, check_moderated
from switchboard.guardrails.rules import Boundary, check
from switchboard.schemas import HandoffOutcome, HandoffRequest

PENDING_AGENT = "pending_agent"
"""Context key holding where an unverified caller goes after the auth agent verifies them."""


@dataclass(frozen=True)
class Verdict:
    outcome: HandoffOutcome
    final_target: str
    detail: str = ""
    reason: str = ""
    """The handoff's reason as it may be recorded and passed on, whatever the outcome: the handoff
    guardrails applied, empty when they blocked it."""
    context: dict[str, Any] = field(default_factory=dict)
    """Exactly what the final target receives: the validated contract fields (and ``pending_agent`` on
    an auth redirect). Refusals carry nothing."""

    @property
    def refused(self) -> bool:
        return self.outcome not in (HandoffOutcome.ACCEPTED, HandoffOutcome.REDIRECTED_AUTH)


def decide(
    scenario: ScenarioConfig,
    request: HandoffRequest,
    *,
    handoff_count: int,
    visited: Sequence[str],
    authenticated: bool,
    received: Mapping[str, Any] | None = None,
    max_hops: int | None = None,
) -> Verdict:
    """Check graph, contract, depth cap, ping-pong, hop cap and authentication, in that order.

    ``received`` is the context the source agent itself received: contract fields declared
    ``forward`` take their value from it when the source did not pass them. ``max_hops`` caps the
    agents one caller turn visits (``visited`` included): past it the caller stays with the source.
    """
    fallback = scenario.fallback_agent
    rules = scenario.guardrails.at(Boundary.HANDOFF)
    said = check(rules, request.reason)
    reason = "" if said.blocked else said.text  # what any verdict may record: never a blocked reason
    target = scenario.agent(request.target)
    source = scenario.agent(request.source)
    if target is None:
        return Verdict(HandoffOutcome.UNKNOWN_TARGET, fallback, f"no agent named {request.target!r}", reason)
    edge = source.handoff_to(request.target) if source else None
    if edge is None:
        detail = f"{request.source} may not hand off to {request.target}"
        return Verdict(HandoffOutcome.REFUSED_GRAPH, fallback, detail, reason)
    offered = dict(request.context)
    for name, spec in edge.contract.items():
        if spec.forward and offered.get(name) is None and (received or {}).get(name) is not None:
            offered[name] = (received or {})[name]
    try:
        context = edge.contract_model().model_validate(offered).model_dump(exclude_none=True)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        return Verdict(HandoffOutcome.REFUSED_CONTRACT, fallback, f"contract violated: {problems}", reason)
    guarded = {k: check(rules, v) if isinstance(v, str) else None for k, v in context.items()}
    blocking = [*said.rules] if said.blocked else []
    blocking += [r for v in guarded.values() if v is not None and v.blocked for r in v.rules]
    if blocking:
        return Verdict(HandoffOutcome.REFUSED_GUARDRAIL, fallback, f"handoff guardrail {blocking[0]!r} matched", reason)
    context = {k: guarded[k].text if guarded[k] is not None else v for k, v in context.items()}  # type: ignore[union-attr]
    if handoff_count >= scenario.max_handoff_depth:
        detail = f"handoff depth cap {scenario.max_handoff_depth} reached"
        return Verdict(HandoffOutcome.DEPTH_CAP, fallback, detail, reason)
    if request.target in visited:
        path = " -> ".join([*visited, request.target])
        return Verdict(HandoffOutcome.PING_PONG, fallback, f"ping-pong within one turn: {path}", reason)
    if max_hops is not None and len(visited) >= max_hops:
        detail = f"a caller turn visits at most {max_hops} agents"
        return Verdict(HandoffOutcome.HOP_CAP, request.source, detail, reason)
    if target.requires_auth and not authenticated:
        auth = scenario.auth_agent
        if auth is None or auth == request.source or auth in visited:
            return Verdict(
                HandoffOutcome.REFUSED_AUTH, fallback, f"{request.target} requires a verified caller", reason
            )
        return Verdict(
            HandoffOutcome.REDIRECTED_AUTH, auth, f"{request.target} requires a verified caller",
            reason, context | {PENDING_AGENT: request.target},
        )  # fmt: skip
    return Verdict(HandoffOutcome.ACCEPTED, request.target, reason=reason, context=context)


async def moderate(scenario: ScenarioConfig, verdict: Verdict, moderator: Moderator | None) -> Verdict:
    """A transfer :func:`decide` let through, with the handoff moderation rules applied to its reason
    and context (one call for all of them): flagged (or no verdict under ``fail_closed``), the
    transfer is refused and the caller goes to the fallback agent, whatever the rule's action."""
    rules = [r for r in scenario.guardrails.at(Boundary.HANDOFF) if r.moderation is not None]
    if verdict.refused or not rules or moderator is None:
        return verdict
    said = [verdict.reason, *(v for k, v in verdict.context.items() if isinstance(v, str) and k != PENDING_AGENT)]
    judged = await check_moderated(rules, "\n".join(t for t in said if t), moderator)
    if judged.action is None:
        return verdict
    detail = f"handoff guardrail {judged.rules[0]!r} flagged the handoff"
    return Verdict(HandoffOutcome.REFUSED_GUARDRAIL, scenario.fallback_agent, detail)
