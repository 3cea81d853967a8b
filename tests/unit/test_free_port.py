"""Ports for local services: the OS offers a port it just freed again soon, so the launcher must not."""

from __future__ import annotations

from switchboard.local.ports import free_port


def test_a_port_handed_out_is_never_handed_out_again() -> None:
    """Two stacks started side by side used to get one port for two services now and then: the second to
    bind it died, and its readiness probe asked the first. Among 1000 ports the OS alone repeats ~18."""
    ports = [free_port() for _ in range(1000)]
    assert len(set(ports)) == len(ports)
