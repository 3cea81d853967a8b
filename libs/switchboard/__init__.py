"""Switchboard: realtime multi-agent conversations over NATS."""

__version__ = "0.1.0"
__all__ = ["__version__"]
