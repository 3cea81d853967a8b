"""Local process management: a real nats-server and the whole stack, for ``make run`` and tests."""

from .nats_server import NatsServer, nats_server_binary
from .ports import free_port

__all__ = ["NatsServer", "free_port", "nats_server_binary"]
