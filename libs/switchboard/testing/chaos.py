"""Chaos harness: real processes, really killed (SIGKILL) or stopped (SIGSTOP) while turns run.

A run starts the whole system for one fault (:class:`FaultSpec`), drives ``sessions`` concurrent
conversations over real WebSockets until ``turns`` caller turns were attempted, injects the fault
``injections`` times while turns are in flight (each time followed by the fault's recovery), and
then checks what the caller was told against what the system stored:

* **completed**: ``response.done`` (completed) from the agent that should answer, naming the label
  the caller asked about (every chaos reply repeats it, so a mixed-up answer is caught);
* **completed by fallback**: completed, but answered by the fallback agent (or after a failed consult);
* **failed**: ``response.done`` with ``failed``/``cancelled``, an unexpected answer, or nothing at all
  within ``turn_timeout_s`` (a hang). The reasons are kept verbatim;
* **lost**: completed (or fallback) for the caller, but its user message or the reply it heard is
  missing from the session history in JetStream KV afterwards;
* **duplicated**: side effects beyond one per label, counted in the tool's own SQLite store, so a
  double execution shows even when the idempotency key changed between the two;
* latency p50/p99/max of every turn, and of the turns that overlapped a fault window.

A real client is simulated: a connection that drops is reopened on any live edge with
``?session_id=<id>``; the turn whose ``response.done`` never arrived is asked again, re-sending the
same client item id (so an already-committed message is not duplicated: the edge answers
``item_id_exists`` and the client only asks for the response again).

The workload runs on the ``chaos`` scenario (``chaos/scenarios/chaos`` in the repository): the
offline model sleeps ``delay_s`` per call so kills land inside turns, and ``record_effect`` writes
the effect rows. :class:`ChaosModel` answers the same way over HTTP for the model-provider fault.
"""

from __future__ import annotations

import asyncio
import json
import math
import random
import re
import secrets
import signal
import sqlite3
import time
import urllib.request
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake

from ..bus import Bus
from ..bus.subjects import AUDIT_STREAM, SESSIONS_BUCKET
from ..local.nats_cluster import NatsCluster
from ..local.stack import Proc, Stack
from ..schemas import MessageItem, TurnRecord
from ..state import LEDGER_BUCKET, AuditLog, SessionStore
from .scripted_openai import ScriptedOpenAIServer, ScriptedReply

SCENARIO = "chaos"
FALLBACK_AGENT = "generalist"
EFFECTS_DB = "chaos_effects.sqlite"
EFFECTS_DB_ENV = "CHAOS_EFFECTS_DB"
"""Where the chaos scenario's ``record_effect`` writes its witness database (set by the harness)."""
SESSIONS_STREAM = f"KV_{SESSIONS_BUCKET}"

Outcome = Literal["pending", "completed", "fallback", "failed"]
Progress = Callable[[str], None]


class ChaosError(Exception):
    """A turn could not be carried out; the message is the clear error the caller would see."""


# --- workloads ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Workload:
    """What the callers say, and who should answer.

    ``clerk``: the desk hands the first turn to the clerk specialist, which then answers every turn;
    even turns ask for an effect (``record_effect``), odd turns leave a note. ``consult``: every
    turn is ``ask effect <label>``; the desk consults the supervisor, which records the effect.
    """

    name: Literal["clerk", "consult"]

    def text(self, turn: int, label: str) -> str:
        if self.name == "consult":
            return f"ask effect {label}"
        return f"effect {label}" if turn % 2 == 0 else f"note {label}"

    def is_effect(self, text: str) -> bool:
        return "effect" in text

    def primary(self, agent: str | None, metadata: Mapping[str, Any]) -> bool:
        if self.name == "consult":
            return agent == "desk" and metadata.get("supervisor") == "consulted"
        return agent == "clerk"


CLERK = Workload("clerk")
CONSULT = Workload("consult")


# --- the scripted model for the provider fault -------------------------------------------------------


@dataclass
class ModelFaults:
    """Per-call fault rates of :class:`ChaosModel` while its fault is on."""

    p_500: float = 0.10
    p_429: float = 0.10
    p_slow: float = 0.10
    slow_s: float = 1.5
    base_delay_s: float = 0.2
    """Every answer's latency (the offline model's ``delay_s`` in the offline runs)."""


@dataclass
class ChaosModel:
    """The chaos scenario's agents as an OpenAI-compatible responder, failing a fraction of calls.

    Agents are recognised by ``Chaos agent <name>`` in their instructions and behave like their
    offline rules. While ``faulty`` is set, each call fails with HTTP 500 (``p_500``) or 429
    (``p_429``), or answers after ``slow_s`` extra (``p_slow``).
    """

    faults: ModelFaults = field(default_factory=ModelFaults)
    seed: int = 0
    faulty: bool = False
    calls: int = 0
    errors_500: int = 0
    errors_429: int = 0
    slow: int = 0
    _rng: random.Random = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self._rng = random.Random(self.seed)

    def stats(self) -> dict[str, int]:
        return {"calls": self.calls, "http_500": self.errors_500, "http_429": self.errors_429, "slow": self.slow}

    def __call__(self, body: dict[str, Any]) -> ScriptedReply:
        self.calls += 1
        delay = self.faults.base_delay_s
        if self.faulty:
            roll = self._rng.random()
            f = self.faults
            if roll < f.p_500:
                self.errors_500 += 1
                return ScriptedReply(status=500, delay_s=delay)
            if roll < f.p_500 + f.p_429:
                self.errors_429 += 1
                return ScriptedReply(status=429, delay_s=delay / 4)
            if roll < f.p_500 + f.p_429 + f.p_slow:
                self.slow += 1
                delay += f.slow_s
        messages: list[dict[str, Any]] = body.get("messages") or []
        system = str(messages[0].get("content") or "") if messages and messages[0].get("role") == "system" else ""
        found = re.search(r"Chaos agent (\w+)", system)
        agent = found.group(1) if found else "unknown"
        users = [m for m in messages if m.get("role") == "user"]
        said = str(users[-1].get("content") or "") if users else ""
        last = messages[-1] if messages else {}
        if last.get("role") == "tool" and _tool_name(messages, str(last.get("tool_call_id"))) == "record_effect":
            try:
                label = json.loads(str(last.get("content") or "{}")).get("label", "")
            except ValueError:
                label = ""
            return ScriptedReply(text=f"{agent} recorded [{label}]", delay_s=delay)
        low = said.lower()
        if agent == "generalist" and "ask" in low.split():
            return ScriptedReply(tool_calls=[("transfer_to_desk", {"reason": "asks the desk"})], delay_s=delay)
        if agent == "desk" and "ask" in low.split():  # handed back to the desk: no policy consult then
            return ScriptedReply(tool_calls=[("consult_supervisor", {"note": said})], delay_s=delay)
        if agent in ("desk", "generalist") and ("effect" in low or "note" in low):
            return ScriptedReply(tool_calls=[("transfer_to_clerk", {"reason": "asks the clerk"})], delay_s=delay)
        if agent in ("clerk", "supervisor") and "effect" in low:
            return ScriptedReply(tool_calls=[("record_effect", {"label": said})], delay_s=delay)
        verb = "noted" if agent == "clerk" else "heard"
        return ScriptedReply(text=f"{agent} {verb} [{said}]", delay_s=delay)


def _tool_name(messages: Sequence[dict[str, Any]], call_id: str) -> str | None:
    for message in reversed(messages):
        for call in message.get("tool_calls") or []:
            if call.get("id") == call_id:
                return str(call["function"]["name"])
    return None


# --- faults --------------------------------------------------------------------------------------------


@dataclass
class FaultEnv:
    """What a fault acts on: the running stack, the live edges, the scripted model (if any)."""

    stack: Stack
    edges: list[tuple[str, int]]
    """Live edges as (process label, port); clients reconnect to these."""
    model: ChaosModel | None = None
    state: dict[str, Any] = field(default_factory=dict)
    """Scratch space between a fault's inject and recover."""
    data_dir: Path | None = None
    """The folder of the effects witness database (``EFFECTS_DB``, where ``record_effect`` writes)."""
    in_flight: Callable[[int], list[str]] = lambda _port: []
    """Texts of the effect turns now in flight through the edge on this port (set by the run)."""
    in_flight_turns: Callable[[int], list[str]] = lambda _port: []
    """Texts of all the turns now in flight through the edge on this port (set by the run)."""

    def edge_ports(self) -> list[int]:
        return [port for _, port in self.edges]


FaultAction = Callable[[FaultEnv], str]


@dataclass(frozen=True)
class FaultSpec:
    """One fault: the system it needs, how it is injected, and how the system is brought back."""

    name: str
    title: str
    description: str
    """What the fault does and what the platform is expected to do about it (for the README)."""
    workload: Workload
    inject: FaultAction
    recover: FaultAction
    replicas: Mapping[str, int]
    """Processes per agent (supervisors included); agents not listed are not started."""
    edges: int = 1
    nats_cluster: int = 1
    env: Mapping[str, str] = field(default_factory=dict)
    model: ModelFaults | None = None
    """Use the scripted OpenAI-compatible server (:class:`ChaosModel`) instead of the offline model."""
    hold_s: float = 0.0
    """How long the fault lasts before ``recover`` (a kill is instantaneous; an outage is held)."""
    hold_until: float | None = None
    """Hold until this fraction of the turns has started instead (a fault spanning most of the run)."""
    expect_fallback: bool = False
    """Whether completed-by-fallback turns are the expected way of answering during this fault."""
    injections: int | None = None
    """Overrides ``ChaosConfig.injections`` (a fault whose recovery takes most of a run is injected once)."""
    first_at: float | None = None
    """Overrides ``ChaosConfig.first_at`` (inject early when recovery should show within the run)."""


def _live(stack: Stack, prefix: str) -> list[Proc]:
    return [p for p in stack.procs if (p.name == prefix or p.name.startswith(prefix + "#")) and p.alive()]


def inflight_requests(proc: Proc, service: str) -> int | None:
    """``switchboard_inflight_requests`` of an agent or supervisor process (from its metrics port)."""
    port = None
    for line in proc.lines:
        if '"metrics_port"' in line and " ready" in line:
            try:
                port = json.loads(line).get("metrics_port")
            except ValueError:
                continue
    if not port:
        return None
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=1) as resp:
            text = resp.read().decode()
    except OSError:
        return None
    found = re.search(rf'^switchboard_inflight_requests{{service="{re.escape(service)}"}} ([0-9.]+)$', text, re.M)
    return int(float(found.group(1))) if found else None


MIN_INFLIGHT = 3
"""A replica is signalled once it runs this many requests (or at least one after 3 s of waiting)."""


def _kill_oldest(role: str, name: str, sig: signal.Signals = signal.SIGKILL) -> FaultAction:
    def inject(env: FaultEnv) -> str:
        live = _live(env.stack, f"{role}:{name}")
        if not live:
            raise ChaosError(f"no live {role}:{name} to signal")
        victim = live[0]
        deadline = time.monotonic() + 3.0
        inflight = inflight_requests(victim, name)
        # land inside turns: wait for MIN_INFLIGHT requests in the victim (after 3 s, one will do)
        while (inflight or 0) < MIN_INFLIGHT:
            late = time.monotonic() - deadline
            if (late > 0 and inflight) or late > 5:
                break
            time.sleep(0.005)
            inflight = inflight_requests(victim, name)
        env.state["victim"] = victim.name
        env.state["hit"] = inflight
        if sig == signal.SIGKILL:
            env.stack.kill(victim.name, sig)
        else:
            victim.popen.send_signal(sig)
        busy = f", {inflight} request(s) in flight in it" if inflight is not None else ""
        return f"{sig.name} {victim.name} (pid {victim.pid}{busy}; {len(live) - 1} other replica(s) running)"

    return inject


def _start_replica(name: str) -> FaultAction:
    def recover(env: FaultEnv) -> str:
        proc = env.stack.start_agent(name, wait=True)
        return f"started {proc.name} (pid {proc.pid})"

    return recover


def _sigcont(env: FaultEnv) -> str:
    label = str(env.state.pop("victim"))
    env.stack.proc(label).popen.send_signal(signal.SIGCONT)
    return f"SIGCONT {label}"


def effect_labels(data_dir: Path) -> set[str]:
    """Labels whose effect ``record_effect`` has written."""
    path = data_dir / EFFECTS_DB
    if not path.exists():
        return set()
    try:
        with sqlite3.connect(path, timeout=5) as db:
            return {row[0] for row in db.execute("SELECT label FROM effects")}
    except sqlite3.Error:
        return set()


def _kill_edge(env: FaultEnv) -> str:
    """SIGKILL the oldest live edge once one of its in-flight turns has had its side effect (and the
    caller has not had the reply yet): the moment where asking again is most dangerous."""
    label, port = env.edges[0]
    proc = env.stack.proc(label)
    deadline = time.monotonic() + 3.0
    caught: list[str] = []
    while env.data_dir is not None and time.monotonic() < deadline and not caught:
        pending = env.in_flight(port)
        caught = sorted(set(pending) & effect_labels(env.data_dir)) if pending else []
        if not caught:
            time.sleep(0.005)
    env.edges.pop(0)
    env.state["hit"] = len(env.in_flight_turns(port))
    env.stack.kill(label, signal.SIGKILL)
    moment = f"; {len(caught)} in-flight turn(s) had had their effect" if caught else ""
    return f"SIGKILL {label} (pid {proc.pid}, port {port}{moment}); clients move to {[lbl for lbl, _ in env.edges]}"


def _start_edge(env: FaultEnv) -> str:
    proc, port = env.stack.start_edge()
    env.edges.append((proc.name, port))
    return f"started {proc.name} on port {port}"


JETSTREAM_ASSETS = (SESSIONS_STREAM, f"KV_{LEDGER_BUCKET}", AUDIT_STREAM)


def nats_roles(cluster: NatsCluster) -> dict[int, list[str]]:
    """What each live node leads: ``meta`` (the JetStream meta leader) and the streams of Switchboard."""
    roles: dict[int, list[str]] = {i: [] for i in range(cluster.size) if cluster.alive(i)}
    meta = cluster.leader_index()
    if meta is not None:
        roles[meta].append("meta")
    for stream in JETSTREAM_ASSETS:
        lead = cluster.stream_leader_index(stream)
        if lead is not None:
            roles[lead].append(stream)
    return roles


def _kill_nats(leader: bool) -> FaultAction:
    def inject(env: FaultEnv) -> str:
        cluster = env.stack.nats_cluster
        lead = cluster.wait_stream_leader(SESSIONS_STREAM, 30)
        roles = nats_roles(cluster)
        if leader:
            victim = lead
        else:  # a follower of the sessions stream that leads as little else as possible
            victim = min((i for i in roles if i != lead), key=lambda i: len(roles[i]))
        env.state["node"] = victim
        cluster.kill(victim)
        led = ", ".join(roles.get(victim, [])) or "nothing"
        role = "leader" if leader else f"follower (leader n{lead})"
        return f"SIGKILL nats n{victim}, the {SESSIONS_STREAM} {role}; it led: {led}"

    return inject


def _restart_nats(env: FaultEnv) -> str:
    cluster = env.stack.nats_cluster
    node = int(env.state.pop("node"))
    started = time.monotonic()
    cluster.restart(node)
    lead = cluster.wait_stream_leader(SESSIONS_STREAM, 30)
    return f"restarted nats n{node} (healthy after {time.monotonic() - started:.1f}s; {SESSIONS_STREAM} leader n{lead})"


def _model_on(env: FaultEnv) -> str:
    assert env.model is not None
    env.model.faulty = True
    f = env.model.faults
    return (
        f"model provider fails {f.p_500:.0%} of calls with 500, {f.p_429:.0%} with 429, "
        f"answers {f.p_slow:.0%} {f.slow_s}s late"
    )


def _model_off(env: FaultEnv) -> str:
    assert env.model is not None
    env.model.faulty = False
    return f"model provider healthy again ({env.model.stats()})"


def fault_catalog() -> dict[str, FaultSpec]:
    """Every fault the chaos suite knows, by name (the CLI's ``--faults``)."""
    clerks = {"desk": 1, "clerk": 2, "generalist": 1}
    specs = [
        FaultSpec(
            name="replica-kill",
            title="Specialist replica killed mid-turn (another replica runs)",
            description="SIGKILL one of two `clerk` replicas while turns run in it. The edge notices the "
            "missing heartbeats after `SWITCHBOARD_IDLE_TIMEOUT_S` and retries the same turn (same `turn_id`) "
            "on the other replica; the side-effect ledger replays or takes over the effect. A new replica is "
            "started after each kill.",
            workload=CLERK,
            inject=_kill_oldest("agent", "clerk"),
            recover=_start_replica("clerk"),
            replicas=clerks,
        ),
        FaultSpec(
            name="replica-stop",
            title="Specialist replica stopped (SIGSTOP) mid-turn (another replica runs)",
            description="SIGSTOP one of two `clerk` replicas for 4 s, then SIGCONT. Its connection stays "
            "open, so NATS keeps routing turns to the frozen replica; each is noticed by the idle timeout and "
            "retried, with a 1-in-2 chance of landing on the frozen replica again. When resumed, it finishes "
            "its turns: their late replies are dropped, their effects replayed by the ledger.",
            workload=CLERK,
            inject=_kill_oldest("agent", "clerk", signal.SIGSTOP),
            recover=_sigcont,
            replicas=clerks,
            hold_s=4.0,
            expect_fallback=True,
        ),
        FaultSpec(
            name="only-replica-kill",
            title="The only specialist replica killed (fallback path)",
            description="SIGKILL the only `clerk` replica and leave it dead for 3 s before starting a new "
            "one. Turns in flight and turns asked meanwhile are answered by the `generalist` fallback "
            "(counted separately as completed by fallback), which sends the caller back to the clerk once "
            "the clerk is up and the edge's breaker for it has closed again.",
            workload=CLERK,
            inject=_kill_oldest("agent", "clerk"),
            recover=_start_replica("clerk"),
            replicas={"desk": 1, "clerk": 1, "generalist": 1},
            hold_s=3.0,
            expect_fallback=True,
            injections=1,
            first_at=0.1,
        ),
        FaultSpec(
            name="supervisor-kill",
            title="Supervisor killed mid-consult (2 replicas)",
            description="Chat-supervisor: every turn is a consult (`ask effect <label>`) and the supervisor "
            "runs the side-effecting tool. SIGKILL one of two supervisor replicas while consults run in it; "
            "the consult is retried on the other replica once the heartbeats stop, with the same consult id, "
            "so the ledger replays the effect. A new replica is started after each kill.",
            workload=CONSULT,
            inject=_kill_oldest("supervisor", "supervisor"),
            recover=_start_replica("supervisor"),
            replicas={"desk": 1, "supervisor": 2, "generalist": 1},
        ),
        FaultSpec(
            name="edge-kill",
            title="Edge killed while clients are connected (2 edges)",
            description="SIGKILL the edge holding the clients' WebSockets, at the moment one of its turns "
            "has had its side effect but not yet its reply. Each client reconnects to the other edge with "
            "`?session_id=<id>` and resumes from the session in JetStream KV; a turn whose `response.done` "
            "never arrived is asked again (same client item id, then `response.create`). A new edge is "
            "started after each kill, so the next kill moves every client again.",
            workload=CLERK,
            inject=_kill_edge,
            recover=_start_edge,
            replicas={"desk": 1, "clerk": 1, "generalist": 1},
            edges=2,
        ),
        FaultSpec(
            name="nats-leader",
            title="NATS node leading the sessions KV stream killed (3-node cluster)",
            description="3-node JetStream cluster, buckets and streams with 3 replicas. SIGKILL the node "
            f"leading `{SESSIONS_STREAM}`; its clients reconnect to the other nodes, KV and stream operations "
            "ride out the election (`StateRetry`), replies lost with the node are noticed by the idle timeout "
            "and the turn retried. The node is restarted after 3 s.",
            workload=CLERK,
            inject=_kill_nats(True),
            recover=_restart_nats,
            replicas=clerks,
            nats_cluster=3,
            hold_s=3.0,
        ),
        FaultSpec(
            name="nats-follower",
            title="NATS follower node killed (3-node cluster)",
            description=f"As above, but the killed node follows `{SESSIONS_STREAM}` (and, of the nodes that "
            "do, leads the fewest other JetStream assets: with 3 nodes it usually still leads the meta group, "
            "the ledger or the audit stream, whose election the turns then ride out). Restarted after 3 s.",
            workload=CLERK,
            inject=_kill_nats(False),
            recover=_restart_nats,
            replicas=clerks,
            nats_cluster=3,
            hold_s=3.0,
        ),
        FaultSpec(
            name="model-faults",
            title="Model provider slow, failing with 500s and 429s",
            description="Agents call a real OpenAI-compatible HTTP server (`ScriptedOpenAIServer`) which, for "
            "most of the run, answers 10% of calls with HTTP 500, 10% with 429 and 10% 1.5 s late. Agents "
            "retry model calls with jittered backoff (3 tries); a call that fails every try sends the turn to "
            "the fallback.",
            workload=CLERK,
            inject=_model_on,
            recover=_model_off,
            replicas=clerks,
            model=ModelFaults(),
            hold_until=0.9,
            expect_fallback=True,
            injections=1,
        ),
    ]
    return {s.name: s for s in specs}


DEFAULT_FAULTS = (
    "replica-kill", "replica-stop", "only-replica-kill", "supervisor-kill", "edge-kill", "nats-leader",
    "nats-follower", "model-faults",
)  # fmt: skip


# --- the run -------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ChaosConfig:
    turns: int = 200
    """Caller turns to attempt (rounded up to a multiple of ``sessions``)."""
    sessions: int = 8
    """Concurrent conversations, each a closed loop of turns."""
    injections: int = 2
    """Times the fault is injected (each followed by its recovery)."""
    first_at: float = 0.2
    last_at: float = 0.65
    """Injections happen when these fractions of the turns have started (evenly spaced between)."""
    window_s: float = 3.0
    """A fault window lasts from the injection until ``window_s`` after the recovery finished."""
    turn_timeout_s: float = 45.0
    """A turn without ``response.done`` for this long is a hang (failed without a clear error)."""
    pace_s: float = 0.5
    """Each session starts a turn at most this often (a caller's think time; 0 = back to back)."""
    seed: int = 0


@dataclass
class ChaosTurn:
    client: int
    index: int
    text: str
    item_id: str
    effect: bool
    started: float = 0.0
    ended: float = 0.0
    outcome: Outcome = "pending"
    agent: str | None = None
    reply: str = ""
    detail: str = ""
    """Failed: the error the caller saw. Fallback: why (the handoff's detail)."""
    asks: int = 0
    """Times the turn was asked (more than one after a dropped connection)."""
    warnings: list[str] = field(default_factory=list)
    """Error events seen in a turn that still completed."""
    answered_twice: bool = False
    """The stored history has this turn's reply twice: its first ask was committed, then asked again."""

    @property
    def latency_ms(self) -> float:
        return (self.ended - self.started) * 1000


@dataclass
class Injection:
    at: float
    injected: str
    turns_in_flight: int
    """Turns in flight (client-side) when the fault was injected."""
    victim_requests: int | None = None
    """Requests in flight in the signalled process (a replica), or turns on the killed edge."""
    recovered_at: float | None = None
    recovered: str = ""
    window_end: float = 0.0


@dataclass
class FaultReport:
    fault: str
    title: str
    turns_attempted: int
    completed: int
    completed_by_fallback: int
    failed: int
    lost: int
    duplicated_side_effects: int
    effect_turns: int
    effects_recorded: int
    missing_side_effects: int
    """Completed effect turns whose effect is not in the store (the caller was told it happened)."""
    orphan_side_effects: int
    """Effects of turns the caller was told failed or fell back (informational)."""
    re_executions: int
    """Runs of the tool beyond one per idempotency key (ledger takeovers; the effect did not double)."""
    hangs: int
    """Failed turns without any answer within the client's timeout."""
    reconnects: int
    re_asked_turns: int
    re_asked_after_commit: int
    """Re-asked turns whose first ask had been committed (only ``response.done`` was lost)."""
    duplicated_after_committed_reask: int
    """Of the duplicated effects, those of re-asked turns whose first ask had been committed."""
    platform_retried_turns: int | None
    """Turns whose edge record shows a retried agent or supervisor call (the fault landed inside them)."""
    turns_in_fault_window: int
    fallback_span_s: float | None
    """From the first injection to the end of the last turn answered by fallback: how long callers
    were served by the fallback (None when nothing fell back)."""
    latency_ms: dict[str, float]
    fault_latency_ms: dict[str, float]
    """Turns that overlapped a fault window (injection to ``window_s`` after its recovery)."""
    calm_latency_ms: dict[str, float]
    """Turns that overlapped no fault window."""
    failure_reasons: dict[str, int]
    fallback_reasons: dict[str, int]
    lost_details: list[str]
    duplicate_details: list[str]
    injections: list[dict[str, Any]]
    model_calls: dict[str, int] | None
    sessions: int
    wall_s: float
    ok: bool
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def percentiles(values: Sequence[float]) -> dict[str, float]:
    """Nearest-rank p50, p99 and max (ms, rounded); zeros when empty."""
    if not values:
        return {"n": 0, "p50": 0.0, "p99": 0.0, "max": 0.0}
    ordered = sorted(values)

    def rank(p: float) -> float:
        return ordered[max(0, math.ceil(p / 100 * len(ordered)) - 1)]

    return {"n": len(ordered), "p50": round(rank(50), 1), "p99": round(rank(99), 1), "max": round(ordered[-1], 1)}


class _Clock:
    def __init__(self) -> None:
        self.t0 = time.monotonic()

    def now(self) -> float:
        return time.monotonic() - self.t0


class ChaosClient:
    """One caller: a WebSocket to some live edge, reopened with the session id whenever it drops."""

    def __init__(self, index: int, env: FaultEnv, api_key: str, clock: _Clock, workload: Workload) -> None:
        self.index = index
        self.env = env
        self.api_key = api_key
        self.clock = clock
        self.workload = workload
        self.ws: ClientConnection | None = None
        self.session_id: str | None = None
        self.port: int | None = None
        self.reconnects = 0
        self.current: ChaosTurn | None = None

    async def connect(self, deadline: float) -> None:
        error: BaseException | None = None
        while time.monotonic() < deadline:
            ports = self.env.edge_ports()
            if ports:
                first = self.index % len(ports)
                for port in ports[first:] + ports[:first]:
                    try:
                        await self._open(port, deadline)
                        return
                    except (OSError, InvalidHandshake, ConnectionClosed, TimeoutError, ChaosError) as exc:
                        error = exc
            await asyncio.sleep(0.1)  # every edge refused: one is being replaced; try again shortly
        raise ChaosError(f"could not reconnect to any edge: {error!r}")

    async def _open(self, port: int, deadline: float) -> None:
        query = "model=switchboard&switchboard_events=1" + (f"&session_id={self.session_id}" if self.session_id else "")
        headers = {"Authorization": f"Bearer {self.api_key}"}
        timeout = max(0.1, min(5.0, deadline - time.monotonic()))
        ws = await asyncio.wait_for(
            connect(f"ws://127.0.0.1:{port}/v1/realtime?{query}", additional_headers=headers, max_size=None),
            timeout,
        )
        try:
            created = await self._recv(ws, time.monotonic() + timeout)
            info = await self._recv(ws, time.monotonic() + timeout)
        except BaseException:
            await ws.close()
            raise
        if created.get("type") != "session.created" or info.get("type") != "switchboard.session":
            await ws.close()
            raise ChaosError(f"unexpected session start: {created.get('type')}, {info.get('type')}")
        if self.session_id is not None and (info.get("session_id") != self.session_id or not info.get("resumed")):
            await ws.close()
            raise ChaosError(f"session {self.session_id} was not resumed: {info}")
        self.session_id = str(info["session_id"])
        self.ws, self.port = ws, port

    @staticmethod
    async def _recv(ws: ClientConnection, deadline: float) -> dict[str, Any]:
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError
        raw = await asyncio.wait_for(ws.recv(), left)
        event = json.loads(raw)
        if not isinstance(event, dict):
            raise ChaosError(f"server sent a non-object event: {raw!r}")
        return event

    async def _send(self, event: dict[str, Any]) -> None:
        assert self.ws is not None
        await self.ws.send(json.dumps(event))

    async def close(self) -> None:
        ws, self.ws = self.ws, None
        if ws is not None:
            try:
                await ws.close()
            except Exception:  # noqa: BLE001 - closing a dead connection
                pass

    async def turn(self, t: ChaosTurn, timeout_s: float) -> None:
        self.current = t
        t.started = self.clock.now()
        deadline = time.monotonic() + timeout_s
        try:
            while True:
                try:
                    if self.ws is None:
                        await self.connect(deadline)
                    t.asks += 1
                    await self._ask(t, deadline)
                    return
                except (ConnectionClosed, OSError):
                    self.ws = None
                    self.reconnects += 1
                    if time.monotonic() >= deadline:
                        raise TimeoutError from None
        except TimeoutError:
            t.outcome, t.detail = "failed", f"hang: no response.done within {timeout_s:.0f}s"
            await self.close()  # the edge cancels the response; the next turn reconnects and resumes
        except ChaosError as exc:
            t.outcome, t.detail = "failed", str(exc)
        finally:
            t.ended = self.clock.now()
            self.current = None

    async def _ask(self, t: ChaosTurn, deadline: float) -> None:
        assert self.ws is not None
        item = {"type": "message", "role": "user", "id": t.item_id, "content": [{"type": "input_text", "text": t.text}]}
        for _ in range(5):
            await self._send({"type": "conversation.item.create", "item": item})
            conflict = False
            while True:
                event = await self._recv(self.ws, deadline)
                kind = event.get("type")
                if kind == "conversation.item.added" and (event.get("item") or {}).get("id") == t.item_id:
                    break
                if kind == "error":
                    err = event.get("error") or {}
                    if err.get("code") == "item_id_exists":  # committed before the connection dropped
                        break
                    if err.get("code") == "session_conflict":  # the edge reloaded the session: send again
                        conflict = True
                        break
                    raise ChaosError(f"message refused: {err.get('code')}: {err.get('message')}")
            if not conflict:
                break
        else:
            raise ChaosError("message refused: session_conflict five times")
        await self._send({"type": "response.create"})
        errors: list[str] = []
        handoffs: list[dict[str, Any]] = []
        while True:
            event = await self._recv(self.ws, deadline)
            kind = event.get("type")
            if kind == "error":
                err = event.get("error") or {}
                errors.append(f"{err.get('code')}: {err.get('message')}")
            elif kind == "switchboard.handoff":
                handoffs.append(event)
            elif kind == "response.done":
                self._classify(t, event.get("response") or {}, errors, handoffs)
                return

    def _classify(
        self, t: ChaosTurn, response: dict[str, Any], errors: list[str], handoffs: list[dict[str, Any]]
    ) -> None:
        status = response.get("status")
        metadata = response.get("metadata") or {}
        t.agent = metadata.get("agent")
        done = [o for o in response.get("output") or [] if o.get("status") == "completed"]
        t.reply = "".join(str(c.get("text", "")) for c in (done[-1].get("content") or [])) if done else ""
        if status != "completed":
            t.outcome = "failed"
            t.detail = "; ".join(errors) or f"response {status} without an error event"
            return
        t.warnings.extend(errors)
        unavailable = [h for h in handoffs if h.get("outcome") == "unavailable"]
        if self.workload.primary(t.agent, metadata) and f"[{t.text}]" in t.reply:
            t.outcome = "completed"
        elif t.agent == FALLBACK_AGENT or metadata.get("supervisor") == "failed" or unavailable:
            t.outcome = "fallback"
            why = str(unavailable[0].get("detail", "")) if unavailable else f"answered by {t.agent}"
            t.detail = _reason(why)
        else:
            t.outcome = "failed"
            t.detail = f"unexpected answer from {t.agent}: {t.reply[:120]!r}"


def _reason(detail: str) -> str:
    """A failure or fallback detail without its per-turn specifics (ids, numbers), for counting."""
    detail = re.sub(r"switchboard\.v1\.[\w.]+", "<subject>", detail)
    detail = re.sub(r"\b(sess|resp|item)_\w+", "<id>", detail)
    return re.sub(r"\d+(\.\d+)?", "N", detail)[:160]


class ChaosRun:
    """Drives the workload on a started stack, injects the fault, and checks the outcome."""

    def __init__(
        self,
        spec: FaultSpec,
        env: FaultEnv,
        config: ChaosConfig,
        *,
        data_dir: Path,
        progress: Progress | None = None,
    ) -> None:
        self.spec = spec
        self.env = env
        self.config = config
        self.data_dir = data_dir
        self.progress = progress or (lambda _msg: None)
        self.clock = _Clock()
        self.nonce = f"r{secrets.randbelow(9000) + 1000}"
        self.per_session = max(1, math.ceil(config.turns / config.sessions))
        self.clients = [
            ChaosClient(i, env, env.stack.api_key, self.clock, spec.workload) for i in range(config.sessions)
        ]
        self.turns: list[ChaosTurn] = []
        self.injections: list[Injection] = []
        self.started = 0
        self.finished = 0
        self._load_done = asyncio.Event()
        self._changed = asyncio.Event()
        env.data_dir = data_dir
        env.in_flight = lambda port: [t.text for t in self._in_flight(port) if t.effect]
        env.in_flight_turns = lambda port: [t.text for t in self._in_flight(port)]

    def _in_flight(self, port: int) -> list[ChaosTurn]:
        # called from the fault's thread: a snapshot of plain attributes is enough here
        return [t for c in list(self.clients) if (t := c.current) is not None and c.port == port]

    def _plan(self, client: int) -> list[ChaosTurn]:
        out = []
        for k in range(self.per_session):
            label = f"{self.nonce}s{client:03d}t{k:03d}"
            text = self.spec.workload.text(k, label)
            out.append(ChaosTurn(client, k, text, f"item_{label}", self.spec.workload.is_effect(text)))
        return out

    async def _converse(self, client: ChaosClient) -> None:
        rng = random.Random(self.config.seed * 1000 + client.index)
        await asyncio.sleep(rng.uniform(0, self.config.pace_s))  # ok-sleep: callers do not start in lockstep
        for t in self._plan(client.index):
            self.turns.append(t)
            self.started += 1
            self._changed.set()
            began = time.monotonic()
            await client.turn(t, self.config.turn_timeout_s)
            self._changed.set()
            think = self.config.pace_s - (time.monotonic() - began)
            if think > 0:
                await asyncio.sleep(think)  # ok-sleep: the caller's think time before the next turn
            self.finished += 1
            if self.finished % max(1, self.total // 4) == 0:
                self.progress(f"{self.spec.name}: {self._tally()} of {self.total} turns")

    @property
    def total(self) -> int:
        return self.per_session * self.config.sessions

    def _tally(self) -> str:
        counts = Counter(t.outcome for t in self.turns if t.outcome != "pending")
        return f"{counts['completed']} completed, {counts['fallback']} by fallback, {counts['failed']} failed"

    @property
    def planned_injections(self) -> int:
        return self.spec.injections if self.spec.injections is not None else self.config.injections

    def _thresholds(self) -> list[float]:
        n, c = self.planned_injections, self.config
        first = self.spec.first_at if self.spec.first_at is not None else c.first_at
        if n <= 1:
            return [first][:n]
        return [first + k * (c.last_at - first) / (n - 1) for k in range(n)]

    async def _until(self, condition: Callable[[], bool]) -> None:
        """Wait until ``condition()`` holds or the load is done, re-checking whenever a turn starts or ends."""
        while not condition() and not self._load_done.is_set():
            self._changed.clear()
            try:
                await asyncio.wait_for(self._changed.wait(), 0.1)
            except TimeoutError:
                pass

    async def _faults(self) -> None:
        for fraction in self._thresholds():
            await self._until(lambda: self.started >= fraction * self.total)  # noqa: B023 - awaited here
            await self._until(lambda: any(c.current is not None for c in self.clients))  # turns in flight
            if self._load_done.is_set():
                self.progress(f"{self.spec.name}: load finished before the injection at {fraction:.0%}")
                return
            in_flight = sum(c.current is not None for c in self.clients)
            at = self.clock.now()
            what = await asyncio.to_thread(self.spec.inject, self.env)
            injection = Injection(at, what, in_flight, self.env.state.pop("hit", None))
            self.injections.append(injection)
            self.progress(f"{self.spec.name}: t={at:.1f}s injected: {what} ({in_flight} turns in flight)")
            if self.spec.hold_until is not None:
                until = self.spec.hold_until * self.total
                await self._until(lambda: self.started >= until)  # noqa: B023 - awaited here
            elif self.spec.hold_s:
                try:
                    await asyncio.wait_for(self._load_done.wait(), self.spec.hold_s)
                except TimeoutError:
                    pass
            injection.recovered_at = self.clock.now()
            injection.recovered = await asyncio.to_thread(self.spec.recover, self.env)
            injection.window_end = self.clock.now() + self.config.window_s
            self.progress(f"{self.spec.name}: t={self.clock.now():.1f}s recovered: {injection.recovered}")

    async def run(self) -> FaultReport:
        started = time.monotonic()
        self.progress(
            f"{self.spec.name}: {self.total} turns over {self.config.sessions} sessions, "
            f"{self.planned_injections} injection(s)"
        )
        deadline = time.monotonic() + 30
        await asyncio.gather(*(c.connect(deadline) for c in self.clients))
        faults = asyncio.create_task(self._faults())
        try:
            await asyncio.gather(*(self._converse(c) for c in self.clients))
        finally:
            self._load_done.set()
            await faults  # a fault mid-hold still recovers (a NATS node is restarted before checking KV)
            for c in self.clients:
                await c.close()
        return await self._report(time.monotonic() - started)

    def dump(self, path: Path) -> None:
        """Every turn as one JSON line (client, text, outcome, agent, reply, detail, timing), for diagnosis."""
        with open(path, "w") as out:
            for t in sorted(self.turns, key=lambda t: (t.client, t.index)):
                out.write(json.dumps(asdict(t) | {"session_id": self.clients[t.client].session_id}) + "\n")

    async def _report(self, wall_s: float) -> FaultReport:
        self.dump(self.data_dir.parent / "turns.jsonl")
        lost = await self._lost()
        retried = await self._platform_retries()
        dup_labels, effects, missing, orphan, reexec = self._effects()
        dup = sum(n - 1 for n in dup_labels.values())
        dup_details = [f"{label!r} took effect {n} times" for label, n in dup_labels.items()]
        twice = {t.text for t in self.turns if t.answered_twice}
        dup_after_commit = sum(n - 1 for label, n in dup_labels.items() if label in twice)
        by = Counter(t.outcome for t in self.turns)
        in_window = [t for t in self.turns if any(self._overlaps(t, i) for i in self.injections)]
        failed = [t for t in self.turns if t.outcome == "failed"]
        report = FaultReport(
            fault=self.spec.name, title=self.spec.title, turns_attempted=len(self.turns),
            completed=by["completed"], completed_by_fallback=by["fallback"], failed=by["failed"],
            lost=len(lost), duplicated_side_effects=dup, effect_turns=sum(t.effect for t in self.turns),
            effects_recorded=effects, missing_side_effects=missing, orphan_side_effects=orphan,
            re_executions=reexec, hangs=sum(t.detail.startswith("hang") for t in failed),
            reconnects=sum(c.reconnects for c in self.clients), re_asked_turns=sum(t.asks > 1 for t in self.turns),
            re_asked_after_commit=sum(t.answered_twice for t in self.turns),
            duplicated_after_committed_reask=dup_after_commit,
            platform_retried_turns=retried, turns_in_fault_window=len(in_window),
            fallback_span_s=self._fallback_span(),
            latency_ms=percentiles([t.latency_ms for t in self.turns]),
            fault_latency_ms=percentiles([t.latency_ms for t in in_window]),
            calm_latency_ms=percentiles([t.latency_ms for t in self.turns if t not in in_window]),
            failure_reasons=dict(Counter(_reason(t.detail) for t in failed).most_common()),
            fallback_reasons=dict(
                Counter(t.detail for t in self.turns if t.outcome == "fallback").most_common()
            ),
            lost_details=lost[:20], duplicate_details=dup_details[:20],
            injections=[asdict(i) for i in self.injections],
            model_calls=self.env.model.stats() if self.env.model else None,
            sessions=self.config.sessions, wall_s=round(wall_s, 1), ok=False,
        )  # fmt: skip
        report.ok = (
            report.lost == 0
            and report.duplicated_side_effects == 0
            and report.missing_side_effects == 0
            and report.completed + report.completed_by_fallback + report.failed == report.turns_attempted
            and len(self.injections) >= min(1, self.planned_injections)
        )
        if len(self.injections) < self.planned_injections:
            report.notes.append(
                f"only {len(self.injections)} of {self.planned_injections} injections happened before the load ended"
            )
        return report

    def _fallback_span(self) -> float | None:
        ends = [t.ended for t in self.turns if t.outcome == "fallback"]
        if not ends or not self.injections:
            return None
        return round(max(ends) - self.injections[0].at, 1)

    @staticmethod
    def _overlaps(t: ChaosTurn, i: Injection) -> bool:
        return t.started < i.window_end and t.ended > i.at

    async def _lost(self) -> list[str]:
        """Turns the caller saw complete whose message or reply is not in the stored history."""
        out: list[str] = []
        async with Bus(self.env.stack.nats_urls, name="chaos-check") as bus:
            store = await SessionStore.open(bus.js)
            for client in self.clients:
                turns = [t for t in self.turns if t.client == client.index and t.outcome in ("completed", "fallback")]
                if not turns:
                    continue
                history = await store.transcript(client.session_id) if client.session_id else []
                users = [n for n, item in enumerate(history) if isinstance(item, MessageItem) and item.role == "user"]
                for t in turns:
                    pos = next((n for n in users if history[n].id == t.item_id), None)
                    if pos is None:
                        out.append(f"{client.session_id}: user message {t.text!r} missing")
                        continue
                    end = next((n for n in users if n > pos), len(history))
                    said = [
                        i.text for i in history[pos + 1 : end] if isinstance(i, MessageItem) and i.role == "assistant"
                    ]
                    if t.reply not in said:
                        out.append(f"{client.session_id}: reply to {t.text!r} missing ({t.reply[:60]!r} not in {said})")
                    t.answered_twice = t.asks > 1 and said.count(t.reply) > 1
        return out

    async def _platform_retries(self) -> int | None:
        try:
            async with Bus(self.env.stack.nats_urls, name="chaos-audit") as bus:
                audit = AuditLog(bus.js)
                retried = 0
                for client in self.clients:
                    if client.session_id is None:
                        continue
                    records = await audit.read_timeline(client.session_id, timeout_s=5)
                    retried += sum(isinstance(r, TurnRecord) and r.retries > 0 for r in records)
                return retried
        except Exception:  # noqa: BLE001 - the audit figure is informational
            return None

    def _effects(self) -> tuple[dict[str, int], int, int, int, int]:
        """(effects per duplicated label, effect rows, missing, orphan, re-executions)."""
        path = self.data_dir / EFFECTS_DB
        rows: dict[str, int] = {}
        executions: dict[str, int] = {}
        if path.exists():
            with sqlite3.connect(path, timeout=30) as db:
                try:
                    rows = dict(db.execute("SELECT label, COUNT(*) FROM effects GROUP BY label").fetchall())
                    executions = dict(db.execute("SELECT key, COUNT(*) FROM executions GROUP BY key").fetchall())
                except sqlite3.OperationalError:
                    pass
        ours = {t.text: t for t in self.turns}
        mine = {label: n for label, n in rows.items() if label in ours}
        missing = sum(1 for t in self.turns if t.effect and t.outcome == "completed" and t.text not in mine)
        orphan = sum(1 for label in mine if ours[label].outcome != "completed")
        reexec = sum(n - 1 for n in executions.values() if n > 1)
        return {k: n for k, n in mine.items() if n > 1}, sum(mine.values()), missing, orphan, reexec


async def run_fault(
    spec: FaultSpec,
    config: ChaosConfig,
    *,
    var_dir: Path,
    scenarios_dir: Path,
    progress: Progress | None = None,
    env: Mapping[str, str] | None = None,
) -> FaultReport:
    """Start the system ``spec`` needs under ``var_dir``, run the fault, stop everything, report."""
    say = progress or (lambda _msg: None)
    model = ChaosModel(spec.model, seed=config.seed) if spec.model is not None else None
    server = ScriptedOpenAIServer(responder=model) if model is not None else None
    if server is not None:
        await server.start()
    try:
        stack_env = {"SWITCHBOARD_SCENARIOS_DIR": str(scenarios_dir), "OPENAI_API_KEY": ""}
        if server is not None:
            stack_env |= {"OPENAI_API_KEY": "sk-chaos", "OPENAI_BASE_URL": server.base_url}
        witness = var_dir / "data"
        stack_env[EFFECTS_DB_ENV] = str(witness / EFFECTS_DB)
        stack_env |= dict(spec.env) | dict(env or {})
        first = [name for name, n in spec.replicas.items() if n > 0]
        stack = Stack(
            var_dir, scenario=SCENARIO, agents=first, api_key=f"chaos-{secrets.token_hex(8)}",
            nats_cluster=spec.nats_cluster, env=stack_env,
        )  # fmt: skip
        t0 = time.monotonic()
        try:
            await asyncio.to_thread(_start, stack, spec)
            fenv = FaultEnv(stack, [("edge", stack.edge_port)], model)
            for _ in range(spec.edges - 1):
                proc, port = await asyncio.to_thread(stack.start_edge)
                fenv.edges.append((proc.name, port))
            say(f"{spec.name}: system up in {time.monotonic() - t0:.1f}s ({len(stack.procs)} processes)")
            run = ChaosRun(spec, fenv, config, data_dir=witness, progress=say)
            return await run.run()
        finally:
            for proc in stack.procs:  # a stopped process would ignore SIGTERM
                if proc.alive():
                    proc.popen.send_signal(signal.SIGCONT)
            await asyncio.to_thread(stack.stop)
    finally:
        if server is not None:
            await server.stop()


def _start(stack: Stack, spec: FaultSpec) -> None:
    try:
        stack.start()
        for name, n in spec.replicas.items():
            for _ in range(n - 1):
                stack.start_agent(name, wait=True)
    except BaseException:
        stack.stop()
        raise


# --- rendering -----------------------------------------------------------------------------------------


def markdown_table(reports: Sequence[FaultReport]) -> str:
    """The figures as a Markdown table, one row per fault."""
    head = (
        "| Fault | Turns | Completed | By fallback | Failed | Lost | Duplicated effects | Reconnects / re-asked "
        "| Retried by platform | p50 / p99 in fault windows | p50 / p99 outside |\n"
        "|---|---|---|---|---|---|---|---|---|---|---|"
    )
    rows = []
    for r in reports:
        fw, calm = r.fault_latency_ms, r.calm_latency_ms
        retried = "n/a" if r.platform_retried_turns is None else str(r.platform_retried_turns)
        rows.append(
            f"| {r.title} (`{r.fault}`) | {r.turns_attempted} | {r.completed} | {r.completed_by_fallback} "
            f"| {r.failed} | **{r.lost}** | **{r.duplicated_side_effects}** | {r.reconnects} / {r.re_asked_turns} "
            f"| {retried} | {_ms(fw['p50'])} / {_ms(fw['p99'])} ({int(fw['n'])} turns) "
            f"| {_ms(calm['p50'])} / {_ms(calm['p99'])} ({int(calm['n'])} turns) |"
        )
    return "\n".join([head, *rows])


def _ms(v: float) -> str:
    return f"{v / 1000:.2f} s" if v >= 1000 else f"{v:.0f} ms"
