"""The NATS connection as an async context manager that drains on close."""

from __future__ import annotations

import asyncio
import logging
import re
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import nats
from nats.aio.client import Client
from nats.js import JetStreamContext

from ..errors import ConfigError
from .errors import BusUnreachable

log = logging.getLogger(__name__)

_DRAIN_TIMEOUT_S = 5
"""Longest a close waits for subscriptions and publishes to drain (the client's default is 30 s)."""


def without_login(servers: list[str]) -> str:
    """The server URLs for a message: a login in them (``nats://user:password@host``) left out."""
    return ", ".join(re.sub(r"//[^@/]*@", "//", url) for url in servers)


class Bus:
    """One NATS connection (with JetStream) per process.

    ``servers`` may list every node of a cluster; the client reconnects forever, so a
    restarted or failed-over server is ridden out rather than fatal.
    """

    def __init__(
        self, servers: list[str], *, name: str, seed_file: Path | None = None, inbox_prefix: str | None = None
    ) -> None:
        self.servers = servers
        self.name = name
        self.seed_file = seed_file
        """This service's NKey seed (least-privilege bus access, see ``switchboard.security``)."""
        self.inbox_prefix = inbox_prefix
        """The private inbox prefix its permissions allow (``_INBOX_<identity>``)."""
        self._nc: Client | None = None
        self._js: JetStreamContext | None = None
        self._closing = False
        self.last_error: str | None = None
        """The last error the server or the connection reported (e.g. an authorization violation)."""
        self._refused = asyncio.Event()

    @property
    def nc(self) -> Client:
        if self._nc is None:
            raise RuntimeError("Bus is not connected; use 'async with Bus(...)'")
        return self._nc

    @property
    def js(self) -> JetStreamContext:
        if self._js is None:
            self._js = self.nc.jetstream()
        return self._js

    @property
    def connected(self) -> bool:
        """Connected to a server now (False before :meth:`connect` returns, while reconnecting, once closed)."""
        return self._nc is not None and self._nc.is_connected

    async def connect(self) -> None:
        if self._nc is not None:
            return

        async def on_error(exc: Exception) -> None:
            if not self._refused.is_set():  # the refusal is the news: a reset that follows it is not
                self.last_error = str(exc)
            if "authorization" in str(exc).lower():
                self.last_error = str(exc)
                self._refused.set()
            where = without_login(self.servers)
            log.warning("nats error", extra={"error": repr(exc), "client": self.name, "servers": where})

        async def on_disconnect() -> None:
            if not self._closing:  # closing disconnects too: that is no news
                log.warning("nats disconnected", extra={"client": self.name})

        async def on_reconnect() -> None:
            log.info("nats reconnected", extra={"client": self.name})

        self._nc = await nats.connect(
            servers=self.servers,
            name=self.name,
            max_reconnect_attempts=-1,
            reconnect_time_wait=0.25,
            connect_timeout=5,
            drain_timeout=_DRAIN_TIMEOUT_S,
            error_cb=on_error,
            disconnected_cb=on_disconnect,
            reconnected_cb=on_reconnect,
            **self._credentials(),
        )

    async def connect_within(self, timeout_s: float) -> None:
        """Connect, or raise ``BusUnreachable`` after ``timeout_s`` (a command gives up; a service keeps
        trying, :meth:`connect`), saying why when the server said (e.g. it refused the credentials)."""
        connecting = asyncio.ensure_future(self.connect())
        refused = asyncio.ensure_future(self._refused.wait())
        done, _ = await asyncio.wait({connecting, refused}, timeout=timeout_s, return_when=asyncio.FIRST_COMPLETED)
        refused.cancel()
        if connecting in done:
            connecting.result()
            return
        connecting.cancel()  # no answer in time, or the credentials refused: waiting longer will not help
        await asyncio.gather(connecting, refused, return_exceptions=True)
        why = f": {self.last_error}" if self.last_error else ""
        if self._refused.is_set():
            raise BusUnreachable(
                f"NATS at {without_login(self.servers)} refused the credentials{why} (an operator command needs the"
                " operator login in SWITCHBOARD_NATS_URL, e.g. from var/bus/operator.env, or the admin NKey in"
                " SWITCHBOARD_NATS_SEED_FILE)"
            )
        raise BusUnreachable(f"cannot reach NATS at {without_login(self.servers)} within {timeout_s:g} s{why}")

    def _credentials(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if self.seed_file is not None:
            _check_seed(self.seed_file)  # before connecting: nats-py would fail on it with "invalid seed" later
            out["nkeys_seed"] = str(self.seed_file)
        if self.inbox_prefix is not None:
            out["inbox_prefix"] = self.inbox_prefix
        return out

    async def close(self) -> None:
        """Drain subscriptions and pending publishes, then close. Safe to call twice."""
        nc, self._nc, self._js = self._nc, None, None
        if nc is None or nc.is_closed:
            return
        self._closing = True
        if not nc.is_connected:  # no server to drain to: waiting would only delay the exit
            await nc.close()
            return
        try:
            await nc.drain()
        except Exception:  # a connection lost mid-drain is closed anyway
            log.debug("drain failed; closing", exc_info=True)
            await nc.close()

    async def __aenter__(self) -> Self:
        await self.connect()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()


def _check_seed(path: Path) -> None:
    """``path`` holds an NKey seed (``SWITCHBOARD_NATS_SEED_FILE``), or say which file does not, in one line."""
    import nkeys

    try:
        nkeys.from_seed(path.read_bytes().strip())
    except OSError as exc:
        raise ConfigError(f"SWITCHBOARD_NATS_SEED_FILE {path}: {exc.strerror}") from None
    except Exception:  # nkeys raises its own errors for a malformed seed
        raise ConfigError(f"SWITCHBOARD_NATS_SEED_FILE {path}: not an NKey seed") from None
