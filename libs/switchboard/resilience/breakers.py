"""Circuit breakers per downstream (an agent, a supervisor, a model provider), on ``purgatory``."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from purgatory import AsyncCircuitBreakerFactory
from purgatory.domain.model import OpenedState

from ..errors import SwitchboardError
from ..telemetry import metrics
from .retry import blames_downstream

log = logging.getLogger(__name__)


class BreakerOpen(SwitchboardError):
    """The downstream failed repeatedly; calls are refused until the breaker's cool-down ends (not
    retryable: trying again at once is exactly what the breaker prevents)."""

    def __init__(self, name: str) -> None:
        super().__init__(f"circuit breaker for {name} is open")
        self.name = name


class Breakers:
    """One breaker per named downstream. Only retryable errors count as failures — a bad request
    says nothing about the downstream's health — and backpressure ("busy") does not count either:
    a saturated downstream is healthy, and opening its breaker would turn load into an outage — nor
    does a timeout caused by this process's own connection dropping."""

    def __init__(self, *, threshold: int = 5, cooldown_s: float = 10.0) -> None:
        self._factory = AsyncCircuitBreakerFactory(
            default_threshold=threshold,
            default_ttl=cooldown_s,
            exclude=[(Exception, lambda exc: not blames_downstream(exc))],
        )
        self._shown: dict[str, str] = {}
        """The state each breaker's gauge was last set to: the gauge is set when it changes, not per call."""

    @asynccontextmanager
    async def guard(self, name: str) -> AsyncIterator[None]:
        """Run the block unless the breaker is open; its outcome counts for the breaker. A block that is
        cancelled (the caller barged in or left) or interrupted gives no verdict on the downstream: it
        counts neither as a failure nor, in a half-open breaker, as the success that closes it."""
        breaker = await self._factory.get_breaker(name)
        try:
            try:
                await breaker.__aenter__()
            except OpenedState:
                raise BreakerOpen(name) from None
            try:
                yield
            except Exception as exc:
                await breaker.__aexit__(type(exc), exc, exc.__traceback__)
                raise
            await breaker.__aexit__(None, None, None)
        finally:
            state = str(breaker.context.state)
            if self._shown.get(name) != state:
                metrics().set_breaker_state(name, state)
                self._shown[name] = state

    async def state(self, name: str) -> str:
        """``closed``, ``opened`` or ``half-opened``."""
        breaker = await self._factory.get_breaker(name)
        return str(breaker.context.state)
