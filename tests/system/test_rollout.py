"""Canary rollouts with real processes: the weight split over many sessions, and pinning across turns,
resumes, weight changes and an edge restart."""

from __future__ import annotations

import asyncio
import math
import shutil
import signal
from pathlib import Path

import pytest
import yaml

from switchboard.bus import Bus
from switchboard.local.ports import free_port
from switchboard.local.stack import Stack
from switchboard.schemas import MessageItem
from switchboard.state import SessionStore

from .rollouts import Caller, Traffic, edge_rollouts, many, rollout_cli, wait_edge_sees
from .stacks import ROOT, make_stack

pytestmark = pytest.mark.system

SESSIONS = 400
WEIGHT = 30


def binomial_bounds(n: int, p: float, sds: float = 4.5) -> tuple[int, int]:
    """Counts outside mean +- 4.5 standard deviations happen with probability < 1e-5 for a fair draw. With 400
    sessions at weight 30 that is 78-162: a canary share off by half (15 % or 60 %) falls outside (at 200
    sessions and 5 sd, 27-93, a halved weight passed about 3 times in 4)."""
    mean, sd = n * p, math.sqrt(n * p * (1 - p))
    return math.floor(mean - sds * sd), math.ceil(mean + sds * sd)


def track_of(stack: Stack, caller: Caller, canary_pid: int) -> list[str]:
    """The track that answered each of the caller's turns (the canary replica is its own process)."""
    out = []
    for reply in caller.replies:
        assert reply.status == "completed" and reply.agent == "triage", (reply.status, reply.agent, reply.errors)
        out.append("canary" if f":{canary_pid}:" in reply.metadata["replica"] else "stable")
    return out


async def test_weight_split_and_pinning_across_turns_resume_and_edge_restart(tmp_path: Path) -> None:
    with make_stack(tmp_path, agents=["triage", "generalist"]) as stack:
        canary = stack.start_agent("triage", track="canary", wait=True)
        done = rollout_cli(stack, "set-weight", "triage", str(WEIGHT), "--version", "v2")
        assert done.returncode == 0, done.stderr
        await wait_edge_sees(stack, "triage", state="canary", weight=WEIGHT)

        callers = [Caller() for _ in range(SESSIONS)]
        await many(stack, callers, ["hello"])
        first = {c.session_id: track_of(stack, c, canary.pid)[0] for c in callers}
        on_canary = sum(t == "canary" for t in first.values())
        low, high = binomial_bounds(SESSIONS, WEIGHT / 100)
        print(f"\nweight {WEIGHT}: {on_canary} of {SESSIONS} new sessions on the canary (bounds {low}-{high})")
        assert low <= on_canary <= high, f"{on_canary} of {SESSIONS} sessions on the canary at weight {WEIGHT}"

        # the weight changes live; pinned sessions stay where they are, new ones follow the new weight
        sample = [c for c in callers if first[c.session_id] == "canary"][:10] + [
            c for c in callers if first[c.session_id] == "stable"
        ][:10]
        assert rollout_cli(stack, "set-weight", "triage", "100").returncode == 0
        await wait_edge_sees(stack, "triage", state="canary", weight=100)
        await many(stack, sample, ["what can you do?"])  # a resume on the same edge
        fresh = [Caller() for _ in range(10)]
        await many(stack, fresh, ["hello"])
        assert {track_of(stack, c, canary.pid)[0] for c in fresh} == {"canary"}

        assert rollout_cli(stack, "set-weight", "triage", "0").returncode == 0
        await wait_edge_sees(stack, "triage", state="canary", weight=0)
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


def tracks_in(traffic: Traffic, caller: Caller, phase: str, stack: Stack, canary_pid: int) -> set[str]:
    tracks = track_of(stack, caller, canary_pid)
    return {t for t, tag in zip(tracks, traffic.tags(caller), strict=True) if tag == phase}


async def test_abort_and_promote_mid_traffic_lose_no_turn(tmp_path: Path) -> None:
    with make_stack(tmp_path, agents=["triage", "generalist"]) as stack:
        canary = stack.start_agent("triage", track="canary", wait=True)
        assert (await asyncio.to_thread(rollout_cli, stack, "set-weight", "triage", "50")).returncode == 0
        await wait_edge_sees(stack, "triage", state="canary", weight=50)
        first = Traffic(stack, [Caller() for _ in range(8)])
        first.start()
        await first.wait_turns_in("start", 2)
        assert {track_of(stack, c, canary.pid)[0] for c in first.callers} == {"stable", "canary"}

        # abort while the conversations talk: canary sessions move to stable at their next turn
        first.phase = "aborting"
        done = await asyncio.to_thread(rollout_cli, stack, "abort", "triage")
        assert done.returncode == 0, done.stderr
        await wait_edge_sees(stack, "triage", state="aborted")
        first.phase = "aborted"
        stack.kill("agent:triage@canary", signal.SIGTERM)  # drains the turns it still runs
        await first.wait_turns_in("aborted", 2)
        assert all(tracks_in(first, c, "aborted", stack, canary.pid) == {"stable"} for c in first.callers)

        # a new canary generation; new sessions reach it by weight, the old ones stay pinned to stable
        canary = stack.start_agent("triage", track="canary", wait=True)
        assert (await asyncio.to_thread(rollout_cli, stack, "set-weight", "triage", "50")).returncode == 0
        await wait_edge_sees(stack, "triage", state="canary", weight=50)
        first.phase = second_phase = "second"
        second = Traffic(stack, [Caller() for _ in range(8)], phase=second_phase)
        second.start()
        await second.wait_turns_in("second", 2)
        await first.wait_turns_in("second", 1)
        assert all(tracks_in(first, c, "second", stack, canary.pid) == {"stable"} for c in first.callers)
        pinned = {c.session_id: track_of(stack, c, canary.pid)[0] for c in second.callers}
        assert set(pinned.values()) == {"stable", "canary"}, pinned

        # promote (the gate judges on the turns so far): every session goes to the promoted version
        first.phase = second.phase = "promoting"
        done = await asyncio.to_thread(
            rollout_cli, stack, "promote", "triage", "--min-turns", "5", "--p99-slack-ms", "5000"
        )
        assert done.returncode == 0, done.stdout + done.stderr
        assert "gate: stable" in done.stdout
        await wait_edge_sees(stack, "triage", state="promoted")
        first.phase = second.phase = "promoted"
        await asyncio.gather(first.wait_turns_in("promoted", 2), second.wait_turns_in("promoted", 2))
        for traffic in (first, second):
            assert all(tracks_in(traffic, c, "promoted", stack, canary.pid) == {"canary"} for c in traffic.callers)

        # stable now runs the promoted version: finish, and the canary's sessions go to stable
        first.phase = second.phase = "finishing"
        done = await asyncio.to_thread(rollout_cli, stack, "promote", "triage", "--finish")
        assert done.returncode == 0, done.stderr
        await wait_edge_sees(stack, "triage", state="finished")
        first.phase = second.phase = "finished"
        await asyncio.gather(first.wait_turns_in("finished", 2), second.wait_turns_in("finished", 2))
        stack.kill("agent:triage@canary#2", signal.SIGTERM)
        for traffic in (first, second):
            assert all(tracks_in(traffic, c, "finished", stack, canary.pid) == {"stable"} for c in traffic.callers)
        await asyncio.gather(first.finish(), second.finish())

        # every turn answered by triage (never the fallback), and every one of them is in the session history
        async with Bus(stack.nats_urls, name="check") as bus:
            store = await SessionStore.open(bus.js)
            for caller in first.callers + second.callers:
                track_of(stack, caller, canary.pid)  # asserts completed and answered by triage
                history = await store.transcript(caller.session_id)  # the archive and the hot window
                users = [i.text for i in history if isinstance(i, MessageItem) and i.role == "user"]
                answers = [i for i in history if isinstance(i, MessageItem) and i.role == "assistant"]
                assert users == caller.said
                assert len(answers) == len(caller.replies) == len(caller.said)


def slow_scenario(tmp: Path, delay_s: float) -> Path:
    """The retail scenario with a slower triage model: a canary "with a new model"."""
    folder = tmp / "retail-slow"
    shutil.copytree(ROOT / "scenarios" / "retail", folder)
    data = yaml.safe_load((folder / "scenario.yaml").read_text())
    data["agents"][0]["model"].setdefault("settings", {})["delay_s"] = delay_s
    (folder / "scenario.yaml").write_text(yaml.safe_dump(data))
    return folder


async def test_the_gate_refuses_a_slower_canary_and_a_failing_one(tmp_path: Path) -> None:
    with make_stack(tmp_path, agents=["triage", "generalist"]) as stack:
        slow = stack.start_agent("triage", track="canary", wait=True,
                                 env={"SWITCHBOARD_SCENARIO": str(slow_scenario(tmp_path, 1.0))})  # fmt: skip
        assert (await asyncio.to_thread(rollout_cli, stack, "set-weight", "triage", "50")).returncode == 0
        await wait_edge_sees(stack, "triage", state="canary", weight=50)
        await many(stack, [Caller() for _ in range(60)], ["hello"])
        done = await asyncio.to_thread(rollout_cli, stack, "promote", "triage", "--min-turns", "5")
        assert done.returncode == 1, done.stdout
        assert "canary of 'triage' refused: turn latency p99" in done.stderr
        assert edge_rollouts(stack)["triage"]["state"] == "canary"  # nothing changed

        # a canary whose model fails: the fallback answers its callers, and the gate counts the errors
        assert (await asyncio.to_thread(rollout_cli, stack, "abort", "triage")).returncode == 0
        stack.kill(slow.name, signal.SIGTERM)
        failing_env = {"OPENAI_API_KEY": "sk-canary", "OPENAI_BASE_URL": f"http://127.0.0.1:{free_port()}/v1"}
        stack.start_agent("triage", track="canary", wait=True, env=failing_env)
        assert (await asyncio.to_thread(rollout_cli, stack, "set-weight", "triage", "50")).returncode == 0
        await wait_edge_sees(stack, "triage", state="canary", weight=50)
        callers = [Caller() for _ in range(40)]
        await many(stack, callers, ["hello"])
        assert {c.replies[0].agent for c in callers} == {"triage", "generalist"}
        lenient_latency = ["--min-turns", "5", "--p99-slack-ms", "1e5"]
        done = await asyncio.to_thread(rollout_cli, stack, "promote", "triage", *lenient_latency)
        assert done.returncode == 1, done.stdout
        assert "canary of 'triage' refused: error rate 100.0% vs stable 0.0%" in done.stderr
        assert edge_rollouts(stack)["triage"]["state"] == "canary"
        done = await asyncio.to_thread(rollout_cli, stack, "status", "triage")
        assert "canary  " in done.stdout and "errors 100.0%" in done.stdout


async def test_a_dead_canary_does_not_open_the_breaker_of_stable(tmp_path: Path) -> None:
    """The edge's breaker for an agent must not be shared by its tracks: a canary whose replicas died
    fails its turns (the fallback answers), and once it is aborted, stable's callers reach the agent at
    once, not the fallback for the breaker's cool-down."""
    env = {"SWITCHBOARD_BREAKER_THRESHOLD": "2", "SWITCHBOARD_BREAKER_COOLDOWN_S": "300"}
    with make_stack(tmp_path, agents=["triage", "generalist"], env=env) as stack:
        canary = stack.start_agent("triage", track="canary", wait=True)
        assert (await asyncio.to_thread(rollout_cli, stack, "set-weight", "triage", "100")).returncode == 0
        await wait_edge_sees(stack, "triage", state="canary", weight=100)
        stack.kill(canary.name)  # SIGKILL: the canary crash-loops, no replica of it subscribes
        on_dead_canary = [Caller() for _ in range(3)]  # one after another: the breaker's threshold is consecutive
        await many(stack, on_dead_canary, ["hello"], limit=1)
        assert [c.replies[0].agent for c in on_dead_canary] == ["generalist"] * 3

        assert (await asyncio.to_thread(rollout_cli, stack, "abort", "triage")).returncode == 0
        await wait_edge_sees(stack, "triage", state="aborted")
        after_abort = [Caller() for _ in range(3)]
        await many(stack, after_abort, ["hello"], limit=1)
        for c in after_abort:
            assert c.replies[0].agent == "triage", (c.replies[0].agent, c.replies[0].errors, c.replies[0].text)
