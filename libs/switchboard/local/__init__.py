"""Local process management: a real nats-server and the whole stack, for ``make run`` and tests."""

from .nats_cluster import NatsCluster
from .nats_server import NatsServer, nats_server_binary
from .ports import free_port

__all__ = ["NatsCluster", "NatsServer", "free_port", "nats_server_binary"]
