"""Is any replica of an agent's track subscribed? One request that every replica refuses at once."""

from __future__ import annotations

from nats.aio.client import Client
from nats.errors import NoRespondersError
from nats.errors import TimeoutError as NatsTimeout

from ..bus import subjects


async def serving(nc: Client, agent: str, track: str, *, timeout_s: float = 2.0) -> bool:
    """True when a replica answers on the track's subject.

    The probe carries no ``Switchboard-Schema`` header, so a replica answers ``unsupported_version``
    without running anything; a replica only subscribes after its agent configuration loaded, so an
    answer also says the configuration loaded.
    """
    try:
        await nc.request(subjects.agent_turn(agent, track), b"{}", timeout=timeout_s)
    except (NoRespondersError, NatsTimeout):
        return False
    return True
