"""A local N-node JetStream cluster of real ``nats-server`` processes, for ``make run`` and fault tests.

Each node gets a config file (``server_name``, client ``listen``, ``cluster`` with routes to every
node, ``jetstream.store_dir`` and an ``http`` monitoring port). The monitoring endpoints tell who
leads: ``/jsz?leader-only=true`` answers 200 only on the JetStream meta leader, and
``/jsz?accounts=true&streams=true`` lists each stream's raft group with its ``cluster.leader``.
"""

from __future__ import annotations

import http.client
import json
import signal
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from types import TracebackType
from typing import Any, Self, TypeVar

from .nats_server import _answers_info, nats_server_binary, server_env, with_login
from .parent import popen_tied
from .ports import free_port

T = TypeVar("T")

POLL_S = 0.05
"""Interval of readiness and leadership polls."""


@dataclass
class NatsNode:
    """One node of the cluster; its ports and store survive a restart."""

    index: int
    name: str
    host: str
    port: int
    cluster_port: int
    http_port: int
    store_dir: Path
    config_file: Path
    log_file: Path | None = None
    proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"nats://{self.host}:{self.port}"

    @property
    def monitor_url(self) -> str:
        return f"http://{self.host}:{self.http_port}"

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None


class NatsCluster:
    """``size`` nats-server processes with JetStream, clustered through routes on free ports."""

    def __init__(
        self,
        store_dir: Path,
        size: int = 3,
        *,
        host: str = "127.0.0.1",
        name: str = "switchboard",
        port: int = 0,
        log_dir: Path | None = None,
        authorization: str | None = None,
        operator: tuple[str, str] | None = None,
    ) -> None:
        if size < 1:
            raise ValueError(f"a cluster needs at least one node, got {size}")
        self.store_dir = store_dir
        self.name = name
        self.host = host
        self.authorization = authorization
        """An ``authorization { ... }`` block every node enforces (``switchboard.security``); None: open."""
        self.operator = operator
        """(user, password) of the operator login in that block: ``urls`` carry it, ``client_urls`` not."""
        self.nodes = [
            NatsNode(
                index=i,
                name=f"{name}-n{i}",
                host=host,
                port=(port if i == 0 and port else free_port(host)),
                cluster_port=free_port(host),
                http_port=free_port(host),
                store_dir=store_dir / f"n{i}",
                config_file=store_dir / f"n{i}.conf",
                log_file=log_dir / f"nats-n{i}.log" if log_dir else None,
            )  # fmt: skip
            for i in range(size)
        ]

    @property
    def size(self) -> int:
        return len(self.nodes)

    @property
    def urls(self) -> list[str]:
        """Every node's client URL, with the operator login (tests and operator commands)."""
        return [with_login(u, self.operator) for u in self.client_urls]

    @property
    def url(self) -> str:
        """All client URLs, comma-separated (the form ``SWITCHBOARD_NATS_URL`` takes)."""
        return ",".join(self.urls)

    @property
    def client_urls(self) -> list[str]:
        """Every node's URL without credentials: services connect with their own NKey."""
        return [n.url for n in self.nodes]

    @property
    def client_url(self) -> str:
        return ",".join(self.client_urls)

    def _config(self, node: NatsNode) -> str:
        routes = ", ".join(f'"nats-route://{n.host}:{n.cluster_port}"' for n in self.nodes if n is not node)
        return "\n".join(
            [
                f"server_name: {json.dumps(node.name)}",
                f'listen: "{node.host}:{node.port}"',
                f'http: "{node.host}:{node.http_port}"',
                f"jetstream {{ store_dir: {json.dumps(str(node.store_dir))} }}",
                f"cluster {{ name: {json.dumps(self.name)}, listen: "
                f'"{node.host}:{node.cluster_port}", routes: [{routes}] }}',
                self.authorization or "",
                "",
            ]
        )

    # --- lifecycle -------------------------------------------------------------------------------

    def start(self, timeout_s: float = 30.0) -> None:
        """Start every node; return once all accept clients, all are healthy and a meta leader exists."""
        self.store_dir.mkdir(parents=True, exist_ok=True)
        for node in self.nodes:
            self._spawn(node)
        deadline = time.monotonic() + timeout_s
        try:
            for node in self.nodes:
                self._wait(partial(self._accepts, node), deadline, f"{node.name} to accept connections")
            self._wait(lambda: all(self.healthy(n.index) for n in self.nodes), deadline, "every node to be healthy")
            self.wait_leader(max(deadline - time.monotonic(), 0.1))
        except BaseException:
            self.stop()
            raise

    def _spawn(self, node: NatsNode) -> None:
        if node.alive():
            raise RuntimeError(f"{node.name} is already running")
        node.store_dir.mkdir(parents=True, exist_ok=True)
        node.config_file.write_text(self._config(node))
        node.config_file.chmod(0o600)  # it may hold the operator's password
        if node.log_file is not None:
            node.log_file.parent.mkdir(parents=True, exist_ok=True)
        cmd = [nats_server_binary(), "-c", str(node.config_file)]
        if node.log_file is None:
            node.proc = popen_tied(
                cmd, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT, start_new_session=True, env=server_env()
            )
            return
        with open(node.log_file, "ab") as out:  # the child keeps its own descriptor
            node.proc = popen_tied(cmd, stdout=out, stderr=subprocess.STDOUT, start_new_session=True, env=server_env())

    def _accepts(self, node: NatsNode) -> bool:
        if node.proc is not None and node.proc.poll() is not None:
            raise RuntimeError(f"{node.name} exited with {node.proc.returncode}; see {node.log_file}")
        return _answers_info(node.host, node.port)

    def stop(self) -> None:
        """SIGTERM every node, then wait (SIGKILL after 10 s)."""
        procs = [n.proc for n in self.nodes if n.proc is not None]
        for node in self.nodes:
            node.proc = None
        for proc in procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                proc.send_signal(signal.SIGCONT)  # a stopped (frozen) one acts on the SIGTERM only once continued
        for proc in procs:
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

    def kill(self, i: int) -> None:
        """SIGKILL node ``i`` (a crash: no lame duck, no leadership handover)."""
        node = self.nodes[i]
        proc, node.proc = node.proc, None
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait()

    def restart(self, i: int, timeout_s: float = 30.0) -> None:
        """Start node ``i`` again on its ports and store; return once it is healthy (JetStream current)."""
        node = self.nodes[i]
        self.kill(i)
        self._spawn(node)
        deadline = time.monotonic() + timeout_s
        self._wait(lambda: self._accepts(node), deadline, f"{node.name} to accept connections")
        self._wait(lambda: self.healthy(i), deadline, f"{node.name} to be healthy")

    def alive(self, i: int) -> bool:
        return self.nodes[i].alive()

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    # --- monitoring ------------------------------------------------------------------------------

    def monitor(self, i: int, path: str, **params: str | bool) -> tuple[int, Any]:
        """GET ``path`` on node ``i``'s monitoring port: (HTTP status, parsed JSON or text); (0, None) if down."""
        node = self.nodes[i]
        if not node.alive():
            return 0, None
        query = urllib.parse.urlencode({k: str(v).lower() if isinstance(v, bool) else v for k, v in params.items()})
        url = f"{node.monitor_url}{path}" + (f"?{query}" if query else "")
        try:
            with urllib.request.urlopen(url, timeout=1.0) as resp:
                status, body = resp.status, resp.read()
        except urllib.error.HTTPError as err:
            status, body = err.code, err.read()
        except (OSError, http.client.HTTPException):  # refused, reset, or cut off mid-answer by a kill
            return 0, None
        try:
            return status, json.loads(body)
        except ValueError:
            return status, body.decode(errors="replace")

    def healthy(self, i: int) -> bool:
        """``/healthz``: the node is up and its JetStream (meta and assets) is current."""
        return self.monitor(i, "/healthz")[0] == 200

    def client_connections(self, i: int | None = None) -> int:
        """Client connections of node ``i``, or of every live node (``/connz``; routes are not counted)."""
        total = 0
        for node in self.nodes if i is None else [self.nodes[i]]:
            status, connz = self.monitor(node.index, "/connz")
            if status == 200 and isinstance(connz, dict):
                total += int(connz.get("num_connections", 0))
        return total

    def leader_index(self) -> int | None:
        """The live node that is the JetStream meta leader, if one is elected."""
        for node in self.nodes:
            if self.monitor(node.index, "/jsz", **{"leader-only": True})[0] == 200:
                return node.index
        return None

    def stream_leader_index(self, stream: str) -> int | None:
        """The live node leading ``stream``'s raft group (e.g. ``KV_switchboard_sessions``), if any.

        A node reports ``leader_since`` only for the streams it leads itself, so a stale view on a
        follower of a dead leader is not mistaken for a leader.
        """
        for node in self.nodes:
            status, jsz = self.monitor(node.index, "/jsz", accounts=True, streams=True, config=False)
            if status != 200 or not isinstance(jsz, dict):
                continue
            for account in jsz.get("account_details") or []:
                for detail in account.get("stream_detail") or []:
                    cluster = detail.get("cluster") or {}
                    if (
                        detail.get("name") == stream
                        and cluster.get("leader") == node.name
                        and cluster.get("leader_since")
                    ):
                        return node.index
        return None

    def wait_leader(self, timeout_s: float = 30.0, *, not_: int | None = None) -> int:
        """Wait for a meta leader (other than node ``not_``) and return its index."""
        return self._wait(lambda: _other(self.leader_index(), not_), time.monotonic() + timeout_s, "a meta leader")

    def wait_stream_leader(self, stream: str, timeout_s: float = 30.0, *, not_: int | None = None) -> int:
        """Wait for ``stream`` to have a leader (other than node ``not_``) and return its index."""
        return self._wait(
            lambda: _other(self.stream_leader_index(stream), not_), time.monotonic() + timeout_s, f"a {stream} leader"
        )

    def _wait(self, probe: Callable[[], T | None], deadline: float, what: str) -> T:
        while True:
            value = probe()
            if value is not None and value is not False:
                return value
            if time.monotonic() > deadline:
                raise TimeoutError(f"nats cluster {self.name}: timed out waiting for {what}")
            time.sleep(POLL_S)


def _other(index: int | None, excluded: int | None) -> int | None:
    return None if index is None or index == excluded else index
