"""A capacity model: edges, per-agent replicas and the NATS cluster for N concurrent calls.

It multiplies measured per-turn costs by the turn rate the calls make, and divides by what one process
can take at a target utilization. The costs come from a measurements file (``make bench`` writes
``bench/results/latest.json``; its layout may change, so it is read defensively and every figure can
be given explicitly instead), so the sizing can be refreshed whenever the hot path changes.

What it covers: the platform's own work per turn (edge, agent runner, NATS request/reply, JetStream KV
and audit writes) and, for voice calls whose speech the edge runs (offline VAD, STT and TTS), the cores
a talking session keeps busy (``edge_voice_cores_per_call``, measured by ``make bench-voice``; 0 for
text calls). What it does not: model inference (an external API's capacity and latency enter only as
the time a turn holds an agent's in-flight slot).
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from .options import option_error


class Costs(BaseModel):
    """Measured per-turn costs (CPU milliseconds per caller turn, one hop) and per-process limits."""

    model_config = ConfigDict(use_attribute_docstrings=True)  # the docstrings are `capacity --help`'s

    source: str = "defaults"
    """Where the figures came from."""
    edge_cpu_ms: float = Field(1.24, gt=0)
    """Edge CPU per plain turn."""
    edge_cpu_ms_per_handoff: float = Field(0.8, ge=0)
    """Extra edge CPU for each handoff within a turn."""
    agent_cpu_ms: float = Field(0.41, gt=0)
    """Agent runner CPU per turn it serves (offline model: excludes a real model client's parsing)."""
    nats_cpu_ms: float = Field(0.41, gt=0)
    """nats-server CPU per turn: request/reply, deltas, and the JetStream writes (measured at R1)."""
    nats_replication_factor: float = Field(2.0, ge=1)
    """Cluster CPU at ``js_replicas`` = 3 over R1 (every node stores each KV and audit write; request/reply
    is not replicated). Assumed, not measured here: the benchmark runs one nats-server."""
    edge_kib_per_session: float = Field(33.0, gt=0)
    """Edge memory per open session."""
    sessions_per_edge: int = Field(1000, ge=1)
    """Sessions one edge process is measured to hold (the target the benchmark checks)."""
    edge_voice_cores_per_call: float = Field(0.0, ge=0)
    """Edge cores a talking voice session keeps busy with its speech (VAD, STT, TTS in the edge): 0.052 at a
    7.2 s turn cycle by ``make bench-voice`` (docs/voice.md). 0: text calls, or speech done elsewhere."""


def _dig(data: Any, *path: str) -> Any:
    for key in path:
        if not isinstance(data, dict) or key not in data:
            return None
        data = data[key]
    return data


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) and value > 0 else None


def costs_from_bench(path: Path) -> Costs:
    """Per-turn costs from a ``make bench`` result; any figure it lacks keeps its default (named in source)."""
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"{path}: not a `make bench` result ({exc})") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path}: not a `make bench` result (a JSON {type(data).__name__}, not an object)")
    sb = _dig(data, "switchboard") or {}
    phase: dict[str, Any] = next(
        (sb[k] for k in ("plain_paced", "plain_unloaded", "plain") if isinstance(sb.get(k), dict)), {}
    )
    per_turn = _dig(phase, "cpu", "per_turn_ms") or {}
    found: dict[str, float] = {}
    if (v := _number(per_turn.get("edge"))) is not None:
        found["edge_cpu_ms"] = v
    agents = [_number(v) for k, v in per_turn.items() if str(k).startswith("agent:")]
    if agent := max((a for a in agents if a is not None), default=None):
        found["agent_cpu_ms"] = agent
    if (v := _number(per_turn.get("nats-server"))) is not None:
        found["nats_cpu_ms"] = v
    handoff = _dig(sb.get("handoff_unloaded") or sb.get("handoff") or {}, "cpu", "per_turn_ms") or {}
    plain_edge = _number(_dig(sb.get("plain_unloaded") or {}, "cpu", "per_turn_ms", "edge"))
    if (h := _number(handoff.get("edge"))) is not None and plain_edge is not None and h > plain_edge:
        found["edge_cpu_ms_per_handoff"] = h - plain_edge
    if (v := _number(_dig(sb, "edge_idle", "kib_per_session"))) is not None:
        found["edge_kib_per_session"] = v
    if (v := _number(_dig(data, "targets", "sessions_per_edge", "value"))) is not None:
        found["sessions_per_edge"] = int(v)
    missing = sorted(set(Costs.model_fields) - set(found) - {"source"})
    note = f"{path} ({data.get('timestamp', 'undated')})" + (f"; defaults for {', '.join(missing)}" if missing else "")
    return Costs(source=note, **found)


class Workload(BaseModel):
    calls: int = Field(10_000, ge=1)
    """Concurrent calls."""
    turn_interval_s: float = Field(8.0, gt=0)
    """Seconds between a call's turns (caller speaks, agent answers): 8 s is a typical voice pace."""
    handoffs_per_turn: float = Field(0.1, ge=0)
    """Handoffs per turn on average (each adds a hop to another agent)."""
    model_latency_s: float = Field(1.0, ge=0)
    """How long a turn holds its agent's in-flight slot (the model's answer time)."""
    shares: dict[str, float] = Field(default_factory=dict)
    """Share of agent hops each agent takes (normalized; empty: one agent takes all)."""


class Limits(BaseModel):
    utilization: float = Field(0.6, gt=0, le=1)
    """Target CPU utilization of every process (headroom for bursts and a lost replica)."""
    agent_max_inflight: int = Field(256, ge=1)
    """``SWITCHBOARD_AGENT_MAX_INFLIGHT``."""
    nats_cores_per_node: float = Field(2.0, gt=0)
    """CPU of one NATS node."""
    js_replicas: int = Field(3, ge=1, le=5)
    """Replicas of the sessions KV and audit stream."""
    spare: int = Field(1, ge=0)
    """Extra replicas per component, so losing one process keeps the rest under the target."""


Figure = int | float


class Plan(BaseModel):
    turns_per_s: float
    hops_per_s: float
    edge: dict[str, Figure]
    agents: dict[str, dict[str, Figure]]
    nats: dict[str, Figure]
    costs: Costs


def plan(workload: Workload, costs: Costs, limits: Limits | None = None) -> Plan:
    limits = limits or Limits()
    util = limits.utilization
    turns = workload.calls / workload.turn_interval_s
    hops = turns * (1 + workload.handoffs_per_turn)
    edge_cores = turns * (costs.edge_cpu_ms + workload.handoffs_per_turn * costs.edge_cpu_ms_per_handoff) / 1000
    voice_cores = workload.calls * costs.edge_voice_cores_per_call
    by_cpu = math.ceil((edge_cores + voice_cores) / util)  # one core per edge process (one event loop)
    by_sessions = math.ceil(workload.calls / costs.sessions_per_edge)
    edges = max(by_cpu, by_sessions) + limits.spare
    shares = workload.shares or {"agent": 1.0}
    total = sum(shares.values()) or 1.0
    per_replica_cpu = util * 1000 / costs.agent_cpu_ms
    per_replica_slots = limits.agent_max_inflight / workload.model_latency_s if workload.model_latency_s else math.inf
    per_replica = min(per_replica_cpu, per_replica_slots * util)
    agents = {}
    for name, share in shares.items():
        rate = hops * share / total
        agents[name] = {
            "hops_per_s": round(rate, 1), "cores": round(rate * costs.agent_cpu_ms / 1000, 3),
            "inflight": round(rate * workload.model_latency_s, 1),
            "replicas": math.ceil(rate / per_replica) + limits.spare if rate else 0,
        }  # fmt: skip
    nats_cores_r1 = hops * costs.nats_cpu_ms / 1000
    nats_cores = nats_cores_r1 * (costs.nats_replication_factor if limits.js_replicas > 1 else 1.0)
    nodes = max(limits.js_replicas, math.ceil(nats_cores / (limits.nats_cores_per_node * util)))
    edge = {
        "replicas": edges, "cores": round(edge_cores, 3), "voice_cores": round(voice_cores, 3),
        "replicas_for_cpu": by_cpu, "replicas_for_sessions": by_sessions,
        "memory_mib": round(workload.calls * costs.edge_kib_per_session / 1024),
    }  # fmt: skip
    kv_writes = turns * 2  # the caller's item, then the committed response (compare-and-set each)
    nats = {
        "nodes": nodes, "cores": round(nats_cores, 3), "kv_writes_per_s": round(kv_writes),
        "audit_appends_per_s": round(turns * (1 + workload.handoffs_per_turn)),
    }  # fmt: skip
    return Plan(turns_per_s=round(turns, 1), hops_per_s=round(hops, 1), edge=edge, agents=agents, nats=nats,
                costs=costs)  # fmt: skip


def render(p: Plan, workload: Workload) -> str:
    lines = [
        f"{workload.calls} concurrent calls, a turn every {workload.turn_interval_s:g} s: {p.turns_per_s:g} turns/s, "
        f"{p.hops_per_s:g} agent hops/s ({workload.handoffs_per_turn:g} handoffs per turn)",
        f"costs from {p.costs.source}",
        f"  edge            {p.edge['replicas']:>4} replicas   ({p.edge['cores']:g} cores of work; "
        + (f"{p.edge['voice_cores']:g} cores of speech; " if p.edge["voice_cores"] else "")
        + f"{p.edge['replicas_for_cpu']} for CPU, {p.edge['replicas_for_sessions']} for sessions; "
        f"{p.edge['memory_mib']:g} MiB of session memory)",
    ]
    for name, a in p.agents.items():
        lines.append(
            f"  agent {name:<10}{a['replicas']:>4} replicas   ({a['hops_per_s']:g} hops/s, {a['cores']:g} cores, "
            f"{a['inflight']:g} turns in flight)"
        )
    n = p.nats
    lines.append(
        f"  nats            {n['nodes']:>4} nodes      ({n['cores']:g} cores; sessions KV {n['kv_writes_per_s']:g} "
        f"writes/s, audit {n['audit_appends_per_s']:g} appends/s)"
    )
    return "\n".join(lines)


def command(args: Any) -> None:
    """``switchboard capacity``: print (or ``--json``) the plan for the given workload; a bad figure exits 1
    with one line naming its option."""
    try:
        result, workload = _plan_of(args)
    except ValidationError as exc:
        sys.exit(f"switchboard capacity: error: {option_error(exc, _OPTIONS)}")
    except ValueError as exc:
        sys.exit(f"switchboard capacity: error: {exc}")
    print(result.model_dump_json(indent=2) if args.json else render(result, workload))


_MEASUREMENTS = "bench/results/latest.json"
"""The measurements ``capacity`` reads unless told otherwise (when present)."""

_OPTIONS = {"--nats-cores-per-node": "--nats-cores", "--shares": "--share"}
"""Model fields whose command-line option is named differently."""


def _plan_of(args: Any) -> tuple[Plan, Workload]:
    measured = Path(args.measurements or _MEASUREMENTS)
    if args.measurements and not measured.is_file():  # named: it must be there (the default may be absent)
        raise ValueError(f"--measurements {args.measurements}: no such file")
    costs = costs_from_bench(measured) if measured.is_file() else Costs()
    overrides = {k: v for k in Costs.model_fields if (v := getattr(args, k, None)) is not None}
    if overrides:  # validated like the file's figures: a negative or zero cost is refused
        note = f"{costs.source}; given: {', '.join(overrides)}"
        costs = Costs.model_validate(costs.model_dump() | overrides | {"source": note})
    shares = {}
    for item in args.share or []:
        name, sep, value = item.partition("=")
        try:
            shares[name] = float(value) if sep and name else -1.0
        except ValueError:
            shares[name] = -1.0
        if shares[name] < 0:
            raise ValueError(f"--share {item!r}: expected agent=weight with a weight >= 0")
    agents = _scenario_agents(args.scenario)
    if unknown := sorted(set(shares) - set(agents)) if agents != ["agent"] else []:
        raise ValueError(f"--share: the scenario has no agent {', '.join(unknown)} (its agents: {', '.join(agents)})")
    if not shares:
        shares = {name: 1.0 for name in agents}
    workload = Workload(
        calls=args.calls, turn_interval_s=args.turn_interval_s, handoffs_per_turn=args.handoffs_per_turn,
        model_latency_s=args.model_latency_s, shares=shares,
    )  # fmt: skip
    limits = Limits(utilization=args.utilization, js_replicas=args.js_replicas, nats_cores_per_node=args.nats_cores)
    return plan(workload, costs, limits), workload


def _scenario_agents(scenario: str | None) -> list[str]:
    from .agents import ScenarioError, load_scenario
    from .settings import Settings

    settings = Settings()
    try:
        config = load_scenario(scenario or settings.scenario, settings.scenarios_dir).config
    except ScenarioError:
        if scenario:  # named: it must load
            raise
        return ["agent"]  # the default scenario is not here (run outside the project): one kind of agent
    return [a.name for a in config.agents if a.role == "agent"]


def register(sub: Any) -> None:
    p = sub.add_parser("capacity", help="size edges, agent replicas and NATS for N concurrent calls")
    p.add_argument("--measurements", default=None, help=f"a `make bench` result (default {_MEASUREMENTS}, if present)")
    p.add_argument("--calls", type=int, default=10_000, help="concurrent calls (default: %(default)s)")
    p.add_argument(
        "--turn-interval-s", type=float, default=8.0, help="seconds between one call's turns (default: %(default)s)"
    )
    p.add_argument(
        "--handoffs-per-turn", type=float, default=0.1, help="handoffs per caller turn (default: %(default)s)"
    )
    p.add_argument(
        "--model-latency-s", type=float, default=1.0, help="how long a turn holds an agent slot (default: %(default)s)"
    )
    p.add_argument("--share", action="append", help="agent=weight of agent hops (default: equal, scenario's agents)")
    p.add_argument("--scenario", default=None, help="whose agents --share names; default SWITCHBOARD_SCENARIO")
    p.add_argument("--utilization", type=float, default=0.6, help="target CPU utilization (default: %(default)s)")
    p.add_argument("--js-replicas", type=int, default=3, help="JetStream replicas (default: %(default)s)")
    p.add_argument("--nats-cores", type=float, default=2.0, help="cores of one NATS node (default: %(default)s)")
    for name, field in Costs.model_fields.items():
        if name != "source":
            p.add_argument(
                f"--{name.replace('_', '-')}", type=float, default=None,
                help=f"{field.description} Default: the measurements' figure if they have one, else {field.default}",
            )  # fmt: skip
    p.add_argument("--json", action="store_true", help="the plan as JSON")
    p.set_defaults(fn=command)


__all__ = ["Costs", "Limits", "Plan", "Workload", "costs_from_bench", "plan", "register", "render"]
