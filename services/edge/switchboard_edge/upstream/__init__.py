"""Upstream speech-to-speech mode: the scenario's front agent runs on the OpenAI Realtime API (docs/voice.md).

Imported only by the sessions of a scenario with an ``openai-realtime`` agent.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..orchestration import LocalAgent
from .agent import UpstreamAgent
from .link import UpstreamConfig, UpstreamError, UpstreamLink
from .relay import RelayResponseWriter

if TYPE_CHECKING:
    from ..session import EdgeSession

__all__ = ["RelayResponseWriter", "UpstreamAgent", "UpstreamConfig", "UpstreamError", "UpstreamLink", "upstream_for"]


def upstream_for(session: EdgeSession) -> tuple[UpstreamLink, dict[str, LocalAgent]] | None:
    """The session's upstream link and the agent it runs, when its scenario has an upstream agent."""
    agent = next((a for a in session.deps.conductor.scenario.agents if a.upstream), None)
    if agent is None:
        return None
    link = UpstreamLink(session, agent, UpstreamConfig.of(agent))
    return link, {agent.name: UpstreamAgent(link, agent)}
