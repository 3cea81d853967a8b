"""Process configuration from ``SWITCHBOARD_*`` environment variables, validated at start-up."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from .bus.connection import Bus
from .state.history import HistoryWindow


class Settings(BaseSettings):
    """Every setting has a default that works for ``make run`` on one machine."""

    model_config = SettingsConfigDict(env_prefix="SWITCHBOARD_", frozen=True, extra="ignore")

    nats_url: str = "nats://127.0.0.1:4222"
    """Comma-separated NATS server URLs (list every cluster node)."""
    nats_seed_file: Path | None = None
    """This process's NKey seed file: with it the process connects as its own bus identity, whose
    subject permissions the server enforces (``switchboard.security.bus_access``)."""
    nats_inbox_prefix: str | None = None
    """The inbox prefix that identity may subscribe to (``_INBOX_<identity>``)."""
    js_replicas: int = Field(1, ge=1, le=5)
    """Replicas of the JetStream KV buckets and streams (3 on a 3-node cluster)."""
    nats_cluster: int = Field(1, ge=1, le=7)
    """Nodes of the local nats-server cluster ``switchboard run`` starts (1 = one server, 3 = JetStream R3)."""
    scenario: str = "retail"
    """Scenario name (a folder under ``scenarios_dir``) or a path to a scenario folder."""
    scenarios_dir: Path = Path("scenarios")
    """Where scenarios are looked up by name."""
    api_keys: SecretStr = SecretStr("")
    """Comma-separated plain API keys the edge accepts (a development convenience: hashed when loaded, never
    logged; each key is its own tenant). Production keys live hashed in ``api_keys_file``."""
    api_keys_file: Path | None = None
    """The key file ``switchboard keys create|list|revoke`` keeps: salted hashes of ``sb-`` keys, each bound to
    a tenant and its limits. The edge re-reads it when it changes (a revoked key is refused at once)."""
    edge_secret: SecretStr = SecretStr("")
    """Signs client secrets and session ids; every edge replica needs the same one. Empty: the edges share
    one they generate and keep in the ``switchboard_edge`` KV bucket."""
    allowed_origins: str = ""
    """Comma-separated origins (``https://app.example.com``) whose browsers may open a WebSocket; ``*`` allows
    any. Empty: a request with an ``Origin`` header must come from the edge's own origin. Clients that send
    no ``Origin`` (servers, SDKs) are not affected."""
    key_connects_per_minute: int = Field(3000, ge=1)
    """Default per key and per edge: WebSocket connection attempts and client secrets minted per minute."""
    key_max_sessions: int = Field(1000, ge=1)
    """Default per key and per edge: sessions open at once."""
    session_max_s: float = Field(3600.0, gt=0)
    """Default: the longest one connection may last; then it gets an ``error`` (``session_expired``) and 1008."""
    session_max_turns: int = Field(100_000, ge=1)
    """Default: responses one connection may ask for."""
    session_max_audio_s: float = Field(3600.0, gt=0)
    """Default: seconds of audio one connection may send and receive."""
    client_secret_max_s: int = Field(600, ge=10, le=7200)
    """Longest lifetime a client secret may be minted with (``expires_after.seconds``)."""
    edge_host: str = "127.0.0.1"
    edge_port: int = Field(8080, ge=0, le=65535)
    tls_cert: Path | None = None
    """PEM certificate (chain) the edge serves TLS with (``wss://``); needs ``tls_key``."""
    tls_key: Path | None = None
    """PEM private key of ``tls_cert``."""
    max_sessions: int = Field(5000, ge=1)
    """WebSocket sessions one edge process holds; more are refused with 503 and Retry-After."""
    drain_grace_s: float = Field(10.0, ge=0)
    """On SIGTERM the edge lets responses in flight finish this long, then asks clients to reconnect."""
    max_event_bytes: int = Field(256 * 1024, ge=1024)
    """Largest client event the edge accepts; larger ones get an ``error`` event."""
    turn_timeout_s: float = Field(30.0, gt=0)
    """Deadline of one caller turn, across every agent hop."""
    hop_timeout_s: float = Field(10.0, gt=0)
    """Longest one agent may take within a turn before the turn goes to the fallback agent."""
    heartbeat_s: float = Field(0.25, gt=0)
    """Agents and supervisors acknowledge a request within 50 ms (with their first reply, or a heartbeat
    when they have none by then), then send a heartbeat this often while they have nothing else to send."""
    ack_timeout_s: float = Field(0.25, gt=0)
    """An agent or supervisor replica that has not acknowledged a request this long after it was sent
    (frozen, or gone with its subscription) is taken for lost and the call retried on another replica."""
    idle_timeout_s: float = Field(0.75, gt=0)
    """An agent or supervisor that sends nothing, not even a heartbeat, for this long mid-call is taken
    for dead and the call retried. Must be at least twice ``heartbeat_s``."""
    retry_attempts: int = Field(3, ge=1, le=10)
    """Tries of one agent turn on retryable failures (no responders, lost replica, busy), with jitter."""
    breaker_threshold: int = Field(5, ge=1)
    """Consecutive retryable failures that open a downstream's circuit breaker."""
    breaker_cooldown_s: float = Field(10.0, gt=0)
    """How long an open breaker refuses calls before letting one through to test recovery."""
    model_retry_attempts: int = Field(3, ge=1, le=10)
    """Tries of one model call on retryable failures (429, 5xx, connection errors, a stream cut off before its
    ``finish_reason`` or not readable), with jittered backoff; never once the call's text reached the caller.
    The model provider's breaker uses ``breaker_*``."""
    model_backoff_s: float = Field(0.2, ge=0, le=10)
    """Backoff scale of model retries: try n + 1 waits a random time up to ``model_backoff_s * 2**(n-1)``,
    capped at ten times ``model_backoff_s``, and never less than the server's ``Retry-After`` (a longer one
    ends the retries)."""
    model_timeout_s: float = Field(30.0, gt=0, le=600)
    """One model call's HTTP timeout (OpenAI-compatible providers); the turn's deadline cuts it shorter."""
    ledger_takeover_s: float = Field(3.0, gt=0)
    """A side-effect claim not refreshed for this long (its runner refreshes it every third of it while
    the tool runs) is presumed dead and taken over by a retry. Must stay well below the hop timeout."""
    agent_max_inflight: int = Field(256, ge=1)
    """Turns one agent replica runs at once; more get a retryable ``busy`` error."""
    track: Literal["stable", "canary"] = "stable"
    """Version track an agent process serves: ``canary`` subscribes to the agent's canary subject, which
    the edges route a weighted share of new sessions to (``switchboard rollout``)."""
    canary_weights: str = ""
    """Edge only: initial canary weights, ``agent=percent`` comma-separated (from the Helm values); written to
    the rollouts bucket at start only for agents that have no rollout record yet."""
    history_max_items: int = Field(64, ge=2, le=10_000)
    """Items a session keeps hot (in its KV value, sent to agents); beyond it the oldest go to the history
    stream, in batches down to ``history_keep_items``."""
    history_keep_items: int = Field(48, ge=1)
    """Items left in the hot window after archiving."""
    history_max_bytes: int = Field(256 * 1024, ge=4096, le=900 * 1024)
    """Serialized size of the hot window that also triggers archiving (a KV value must stay under 1 MiB)."""
    item_save_ms: float = Field(50.0, ge=0, le=1000)
    """A client's ``conversation.item.create`` is applied and acknowledged at once and stored in the session
    KV with the next commit: the response that follows it (one KV write for the turn instead of two) or,
    when none has stored it, this many ms later; a connection that ends stores what it holds first.
    0: every item is stored before it is acknowledged."""
    delta_flush_ms: float = Field(0.0, ge=0, le=1000)
    """Text an agent or supervisor produces within this many ms of its first unsent chunk goes out as one
    delta (one bus message, one ``response.output_text.delta``). 0: what it produces at once, in one step
    of its event loop, with no added latency; a real model's tokens that arrive apart stay apart."""
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"] = "INFO"
    """Logging level of every service (any case)."""
    metrics_port: int = Field(0, ge=-1, le=65535)
    """Port of agent and supervisor processes' ``/healthz``, ``/readyz`` and ``/metrics`` (0: any free
    port, logged at start; -1: off). The edge serves them on its own port."""
    metrics_host: str = "127.0.0.1"
    """Address that port binds to (``0.0.0.0`` where probes and scrapers come from another host, e.g. a pod)."""

    @field_validator("nats_seed_file", "nats_inbox_prefix", "api_keys_file", "tls_cert", "tls_key", mode="before")
    @classmethod
    def _unset_if_empty(cls, v: object) -> object:
        return None if v == "" else v  # an exported but empty variable means "not set", not the current directory

    @field_validator("log_level", mode="before")
    @classmethod
    def _level(cls, v: object) -> object:
        return v.upper() if isinstance(v, str) else v

    @field_validator("nats_url")
    @classmethod
    def _urls(cls, v: str) -> str:
        urls = [u.strip() for u in v.split(",") if u.strip()]
        if not urls or not all(u.startswith(("nats://", "tls://", "ws://", "wss://")) for u in urls):
            raise ValueError(f"SWITCHBOARD_NATS_URL must list nats:// URLs, got {v!r}")
        return ",".join(urls)

    @model_validator(mode="after")
    def _tls_pair(self) -> Settings:
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ValueError("SWITCHBOARD_TLS_CERT and SWITCHBOARD_TLS_KEY go together: set both or neither")
        for name, path in (("SWITCHBOARD_TLS_CERT", self.tls_cert), ("SWITCHBOARD_TLS_KEY", self.tls_key)):
            if path is not None and not path.is_file():
                raise ValueError(f"{name}={str(path)!r} is not a readable file")
        return self

    @model_validator(mode="after")
    def _liveness_fits(self) -> Settings:
        if self.idle_timeout_s < 2 * self.heartbeat_s:
            raise ValueError(
                f"SWITCHBOARD_IDLE_TIMEOUT_S ({self.idle_timeout_s}) must be at least twice SWITCHBOARD_HEARTBEAT_S "
                f"({self.heartbeat_s}): one late heartbeat must not look like a dead replica"
            )
        return self

    @model_validator(mode="after")
    def _takeover_fits(self) -> Settings:
        if self.ledger_takeover_s >= self.hop_timeout_s:
            raise ValueError(
                f"SWITCHBOARD_LEDGER_TAKEOVER_S ({self.ledger_takeover_s}) must be below SWITCHBOARD_HOP_TIMEOUT_S "
                f"({self.hop_timeout_s}): a retried turn must be able to take over a dead replica's tool call"
            )
        return self

    @model_validator(mode="after")
    def _history_window_fits(self) -> Settings:
        if self.history_keep_items > self.history_max_items:
            raise ValueError(
                f"SWITCHBOARD_HISTORY_KEEP_ITEMS ({self.history_keep_items}) must not exceed "
                f"SWITCHBOARD_HISTORY_MAX_ITEMS ({self.history_max_items})"
            )
        return self

    @property
    def history_window(self) -> HistoryWindow:
        return HistoryWindow(self.history_max_items, self.history_keep_items, self.history_max_bytes)

    def bus(self, name: str) -> Bus:
        """This process's NATS connection (not yet connected), with its credentials when configured."""
        return Bus(self.nats_servers, name=name, seed_file=self.nats_seed_file, inbox_prefix=self.nats_inbox_prefix)

    @property
    def nats_servers(self) -> list[str]:
        return self.nats_url.split(",")

    @property
    def api_key_set(self) -> frozenset[str]:
        return frozenset(k.strip() for k in self.api_keys.get_secret_value().split(",") if k.strip())
