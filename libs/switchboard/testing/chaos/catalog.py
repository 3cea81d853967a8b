"""Every fault the chaos suite knows: what it does, the system it needs, and what is expected."""

from __future__ import annotations

import signal

from .actions import (
    kill_edge,
    kill_nats,
    kill_oldest,
    model_off,
    model_on,
    restart_nats,
    sigcont,
    start_edge,
    start_replica,
)
from .faults import SESSIONS_STREAM, FaultSpec
from .model import ModelFaults
from .workload import CLERK, CONSULT


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
            inject=kill_oldest("agent", "clerk"),
            recover=start_replica("clerk"),
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
            inject=kill_oldest("agent", "clerk", signal.SIGSTOP),
            recover=sigcont,
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
            inject=kill_oldest("agent", "clerk"),
            recover=start_replica("clerk"),
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
            inject=kill_oldest("supervisor", "supervisor"),
            recover=start_replica("supervisor"),
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
            inject=kill_edge,
            recover=start_edge,
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
            inject=kill_nats(True),
            recover=restart_nats,
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
            inject=kill_nats(False),
            recover=restart_nats,
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
            inject=model_on,
            recover=model_off,
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
