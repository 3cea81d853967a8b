"""The actions that inject faults and recover from them: signals to agent, supervisor and edge
processes, nats-server nodes killed and restarted, the scripted model provider's failure switch."""

from __future__ import annotations

import http.client
import json
import re
import signal
import time
import urllib.request

from ...bus.subjects import AUDIT_STREAM
from ...local.nats_cluster import NatsCluster
from ...local.stack import Proc, Stack
from ...state import LEDGER_BUCKET
from .effects import effect_labels
from .errors import ChaosError
from .faults import SESSIONS_STREAM, FaultAction, FaultEnv


def live_procs(stack: Stack, prefix: str) -> list[Proc]:
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
    except (OSError, http.client.HTTPException):  # the process died mid-answer
        return None
    found = re.search(rf'^switchboard_inflight_requests{{service="{re.escape(service)}"}} ([0-9.]+)$', text, re.M)
    return int(float(found.group(1))) if found else None


MIN_INFLIGHT = 3
"""A replica is signalled once it runs this many requests (or at least one after 3 s of waiting)."""


def kill_oldest(role: str, name: str, sig: signal.Signals = signal.SIGKILL) -> FaultAction:
    def inject(env: FaultEnv) -> str:
        live = live_procs(env.stack, f"{role}:{name}")
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


def start_replica(name: str) -> FaultAction:
    def recover(env: FaultEnv) -> str:
        proc = env.stack.start_agent(name, wait=True)
        return f"started {proc.name} (pid {proc.pid})"

    return recover


def sigcont(env: FaultEnv) -> str:
    label = str(env.state.pop("victim"))
    env.stack.proc(label).popen.send_signal(signal.SIGCONT)
    return f"SIGCONT {label}"


def kill_edge(env: FaultEnv) -> str:
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


def start_edge(env: FaultEnv) -> str:
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


def kill_nats(leader: bool) -> FaultAction:
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


def restart_nats(env: FaultEnv) -> str:
    cluster = env.stack.nats_cluster
    node = int(env.state.pop("node"))
    started = time.monotonic()
    cluster.restart(node)
    lead = cluster.wait_stream_leader(SESSIONS_STREAM, 30)
    return f"restarted nats n{node} (healthy after {time.monotonic() - started:.1f}s; {SESSIONS_STREAM} leader n{lead})"


def model_on(env: FaultEnv) -> str:
    assert env.model is not None
    env.model.faulty = True
    f = env.model.faults
    return (
        f"model provider fails {f.p_500:.0%} of calls with 500, {f.p_429:.0%} with 429, "
        f"answers {f.p_slow:.0%} {f.slow_s}s late"
    )


def model_off(env: FaultEnv) -> str:
    assert env.model is not None
    env.model.faulty = False
    return f"model provider healthy again ({env.model.stats()})"
