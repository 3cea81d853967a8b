"""Canary rollouts with real processes: the weight split over many sessions, and pinning across turns,
resumes, weight changes and an edge restart."""

from __future__ import annotations

import math
import signal
from pathlib import Path

import pytest

from switchboard.local.stack import Stack

from .rollouts import Caller, many, rollout_cli, wait_edge_sees
from .stacks import make_stack

pytestmark = pytest.mark.system

SESSIONS = 200
WEIGHT = 30


def binomial_bounds(n: int, p: float, sds: float = 5.0) -> tuple[int, int]:
    """Counts outside mean +- 5 standard deviations happen with probability < 1e-6 for a fair draw."""
    mean, sd = n * p, math.sqrt(n * p * (1 - p))
    return math.floor(mean - sds * sd), math.ceil(mean + sds * sd)


def track_of(stack: Stack, caller: Caller, canary_pid: int) -> list[str]:
    """The track that answered each of the caller's turns (the canary replica is its own process)."""
    out = []
    for reply in caller.replies:
        assert reply.status == "completed" and reply.agent == "triage", (reply.status, reply.agent, reply.errors)
        out.append("canary" if reply.metadata["replica"].endswith(f":{canary_pid}") else "stable")
    return out


async def test_weight_split_and_pinning_across_turns_resume_and_edge_restart(tmp_path: Path) -> None:
    with make_stack(tmp_path, agents=["triage", "generalist"]) as stack:
        canary = stack.start_agent("triage", track="canary", wait=True)
        done = rollout_cli(stack, "set-weight", "triage", str(WEIGHT), "--version", "v2")
        assert done.returncode == 0, done.stderr
        await wait_edge_sees(stack.edge_port, "triage", state="canary", weight=WEIGHT)

        callers = [Caller() for _ in range(SESSIONS)]
        await many(stack, callers, ["hello"])
        first = {c.session_id: track_of(stack, c, canary.pid)[0] for c in callers}
        on_canary = sum(t == "canary" for t in first.values())
        low, high = binomial_bounds(SESSIONS, WEIGHT / 100)
        assert low <= on_canary <= high, f"{on_canary} of {SESSIONS} sessions on the canary at weight {WEIGHT}"

        # the weight changes live; pinned sessions stay where they are, new ones follow the new weight
        sample = [c for c in callers if first[c.session_id] == "canary"][:10] + [
            c for c in callers if first[c.session_id] == "stable"
        ][:10]
        assert rollout_cli(stack, "set-weight", "triage", "100").returncode == 0
        await wait_edge_sees(stack.edge_port, "triage", state="canary", weight=100)
        await many(stack, sample, ["what can you do?"])  # a resume on the same edge
        fresh = [Caller() for _ in range(10)]
        await many(stack, fresh, ["hello"])
        assert {track_of(stack, c, canary.pid)[0] for c in fresh} == {"canary"}

        assert rollout_cli(stack, "set-weight", "triage", "0").returncode == 0
        await wait_edge_sees(stack.edge_port, "triage", state="canary", weight=0)
        fresh = [Caller() for _ in range(10)]
        await many(stack, fresh, ["hello"])
        assert {track_of(stack, c, canary.pid)[0] for c in fresh} == {"stable"}

        # an edge restart: the pins live in the session state in KV, not in the edge
        stack.kill("edge", signal.SIGTERM)
        _, port = stack.start_edge()
        await many(stack, sample, ["and now?", "thanks"], port=port)
        for c in sample:
            assert set(track_of(stack, c, canary.pid)) == {first[c.session_id]}, (c.session_id, first[c.session_id])
        assert len(sample) == 20 and all(len(c.replies) == 4 for c in sample)
