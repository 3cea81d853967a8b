"""Moderation-model guardrails: an OpenAI-compatible ``POST /v1/moderations`` judges the whole text.

The call costs a round trip, so it runs only where a text is checked whole and may wait: the caller's
message at the edge, and every handoff's reason and context in the conductor. The text sent is the
one the pattern rules already redacted, so PII the scenario redacts never leaves for the model.

Each call is bounded by the rule's ``timeout_s`` and guarded by a circuit breaker (a moderation
server that keeps failing is not waited on at every turn); a call that fails, times out or meets an
open breaker follows the rule's ``on_error``.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager

from ..errors import SwitchboardError
from .rules import GuardrailRule, GuardrailsConfig, Verdict, check, strictest

log = logging.getLogger(__name__)

Guard = Callable[[str], AbstractAsyncContextManager[None]]
"""A circuit breaker by downstream name (``switchboard.resilience.Breakers.guard``)."""


@asynccontextmanager
async def _unguarded(name: str) -> AsyncIterator[None]:
    yield


class ModerationError(SwitchboardError):
    """The moderation model gave no verdict (an HTTP error, a timeout, an unreadable answer)."""

    def __init__(self, message: str, *, retryable: bool) -> None:
        super().__init__(message)
        self.retryable = retryable


class Moderator:
    """Asks a moderation model; one per process (it holds an HTTP client)."""

    def __init__(self, *, api_key: str, base_url: str | None = None, guard: Guard | None = None) -> None:
        import openai  # imported lazily: a scenario without moderation rules needs no HTTP client

        self._client = openai.AsyncOpenAI(api_key=api_key, base_url=base_url, max_retries=0)
        self._guard = guard or _unguarded

    @classmethod
    def for_scenario(
        cls, guardrails: GuardrailsConfig, env: Mapping[str, str] | None = None, *, guard: Guard | None = None
    ) -> Moderator | None:
        """The moderator a scenario's rules need, from ``OPENAI_API_KEY`` (and ``OPENAI_BASE_URL``), as
        the model client reads them. None when no rule moderates, or when no key is set: the moderation
        rules are then skipped, which is logged here, once."""
        env = os.environ if env is None else env
        names = [r.name for r in guardrails.rules if r.moderation is not None]
        if not names:
            return None
        key = env.get("OPENAI_API_KEY")
        if not key:
            log.warning("moderation guardrails skipped: OPENAI_API_KEY is not set", extra={"rules": ",".join(names)})
            return None
        return cls(api_key=key, base_url=env.get("OPENAI_BASE_URL") or None, guard=guard)

    async def flagged(self, rule: GuardrailRule, text: str) -> bool:
        """Whether the model flags ``text`` under ``rule`` (its categories, or any). Raises
        :class:`ModerationError` or ``BreakerOpen`` when there is no verdict."""
        spec = rule.moderation
        assert spec is not None
        async with self._guard(f"moderation:{spec.model}"):
            result = await self._moderate(spec.model, text, spec.timeout_s)
        if spec.categories:
            return any(result.get(c, False) for c in spec.categories)
        return result["flagged"]

    async def _moderate(self, model: str, text: str, timeout_s: float) -> dict[str, bool]:
        import openai

        try:
            response = await self._client.moderations.create(model=model, input=text, timeout=timeout_s)
            result = response.results[0]
        except openai.APIStatusError as exc:
            raise ModerationError(
                f"moderation failed: HTTP {exc.status_code}", retryable=exc.status_code >= 500
            ) from exc
        except openai.APIError as exc:  # a timeout or a connection error (APITimeoutError is one of them)
            raise ModerationError(f"moderation failed: {type(exc).__name__}", retryable=True) from exc
        except IndexError as exc:
            raise ModerationError("moderation answered no result", retryable=False) from exc
        categories = {k: bool(v) for k, v in result.categories.model_dump(by_alias=True).items()}
        return categories | {"flagged": bool(result.flagged)}

    async def aclose(self) -> None:
        await self._client.close()


async def _judge(moderator: Moderator, rule: GuardrailRule, text: str) -> bool:
    """Whether the rule acts on ``text``: flagged, or no verdict under ``fail_closed``."""
    assert rule.moderation is not None
    try:
        return await moderator.flagged(rule, text)
    except (SwitchboardError, TimeoutError) as exc:
        closed = rule.moderation.on_error == "fail_closed"
        log.warning(
            "moderation guardrail %s has no verdict (%s): the text %s",
            rule.name, exc, "is treated as flagged" if closed else "passes",
        )  # fmt: skip
        return closed


async def check_moderated(rules: Sequence[GuardrailRule], text: str, moderator: Moderator | None) -> Verdict:
    """:func:`check` plus the moderation rules (skipped without a ``moderator``), asked in parallel
    with the redacted text. With no moderation rule this is :func:`check`, with no call made."""
    verdict = check(rules, text)
    moderated = [r for r in rules if r.moderation is not None] if moderator is not None else []
    if not moderated or moderator is None:
        return verdict
    flags = await asyncio.gather(*(_judge(moderator, r, verdict.text) for r in moderated))
    action, matched = verdict.action, list(verdict.rules)
    for rule, flagged in zip(moderated, flags, strict=True):
        if flagged:
            action = strictest(action, rule.action)
            matched.append(rule.name)
    return Verdict(verdict.text, action, tuple(matched))
