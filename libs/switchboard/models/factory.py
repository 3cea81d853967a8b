"""Build the model provider an agent's config asks for."""

from __future__ import annotations

import os
from collections.abc import Mapping

from ..agents.config import REALTIME_PROVIDER, AgentConfig, ScenarioConfig
from ..errors import ConfigError
from .base import ModelProvider
from .offline import OfflineProvider


def resolve_provider_name(agent: AgentConfig, env: Mapping[str, str] | None = None) -> str:
    env = os.environ if env is None else env
    if agent.model.provider != "auto":
        return agent.model.provider
    return "openai" if env.get("OPENAI_API_KEY") else "offline"


def check_realtime_keys(scenario: ScenarioConfig, env: Mapping[str, str] | None = None) -> None:
    """Refuse a scenario whose agents run on the OpenAI Realtime API when no ``OPENAI_API_KEY`` is set."""
    env = os.environ if env is None else env
    upstream = [a.name for a in scenario.agents if a.upstream]
    if upstream and not env.get("OPENAI_API_KEY"):
        raise ConfigError(
            f"scenario {scenario.name!r}: agent(s) {', '.join(upstream)} use provider '{REALTIME_PROVIDER}' (the "
            "OpenAI Realtime API, speech to speech) but OPENAI_API_KEY is not set; set it, or give them another "
            "provider (offline / openai) to run them as agent processes"
        )


def build_provider(
    agent: AgentConfig,
    slot_patterns: Mapping[str, str],
    env: Mapping[str, str] | None = None,
    *,
    timeout_s: float = 30.0,
) -> ModelProvider:
    """The agent's provider; ``timeout_s`` bounds one call of an HTTP provider (``SWITCHBOARD_MODEL_TIMEOUT_S``)."""
    env = os.environ if env is None else env
    kind = resolve_provider_name(agent, env)
    if kind == REALTIME_PROVIDER:
        raise ConfigError(
            f"agent {agent.name!r} runs on the OpenAI Realtime API through the edge ({REALTIME_PROVIDER}); "
            "no agent process serves it"
        )
    if kind == "offline":
        return OfflineProvider(
            agent.offline, slot_patterns, delay_s=float(agent.model.settings.get("delay_s", 0.0)),
            backend=env.get("SWITCHBOARD_INTENT_BACKEND", "auto"),
        )  # fmt: skip
    from .openai_chat import OpenAIChatProvider  # imported lazily: offline runs need no HTTP client

    api_key = env.get("OPENAI_API_KEY")
    if not api_key:
        raise ValueError(f"agent {agent.name!r} uses provider 'openai' but OPENAI_API_KEY is not set")
    return OpenAIChatProvider(
        agent.model.name,
        api_key=api_key,
        base_url=agent.model.base_url or env.get("OPENAI_BASE_URL") or None,
        settings=dict(agent.model.settings),
        timeout_s=timeout_s,
        agent=agent.name,
    )
