"""``switchboard rollout status|set-weight|promote|abort <agent>``: drive an agent's canary.

Every command checks its input first (agent, weight, canary, gate) and changes nothing when one check
fails: the error is one line on stderr and the exit status is 1. With ``--kube`` the command also talks to
the cluster (scales the canary Deployment, reads rollout status, adopts the canary's pod spec on promote).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

from ..agents import ScenarioError, load_scenario
from ..bus import Bus, BusUnreachable
from ..options import option_error
from ..schemas import ControlAction, Rollout, RolloutState
from ..state.control import ControlAudit
from .errors import CanaryNotServing, GateRefused, RolloutError, UnknownAgent
from .gate import GatePolicy, TrackStats, judge, read_since, summarize
from .probe import serving
from .store import RolloutStore, check_weight

if TYPE_CHECKING:
    from .kube import Cluster


CONNECT_TIMEOUT_S = 10.0


def register(sub: Any) -> None:
    """Add ``rollout`` and its verbs to the ``switchboard`` argument parser."""
    p = sub.add_parser("rollout", help="canary rollout of one agent: status, set-weight, promote, abort")
    verbs = p.add_subparsers(dest="verb", required=True)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--nats-url", default=None, help="NATS URL(s); default SWITCHBOARD_NATS_URL")
    common.add_argument("--scenario", default=None, help="scenario naming the agents; default SWITCHBOARD_SCENARIO")
    common.add_argument("--kube", action="store_true", help="also act on the cluster's canary Deployment")
    common.add_argument("--kubeconfig", default=None, help="kubeconfig file (default: in-cluster, then ~/.kube/config)")
    common.add_argument("--context", default=None, help="kubeconfig context")
    common.add_argument("-n", "--namespace", default="default", help="namespace of the release")
    common.add_argument("--prefix", default="switchboard", help="Deployment name prefix (the release's full name)")
    common.add_argument("--timeout", type=float, default=300.0, help="seconds to wait for a Deployment to roll out")
    s = verbs.add_parser("status", parents=[common], help="weight, state, canary replicas and canary-vs-stable figures")
    s.add_argument("agent", nargs="?", help="one agent (default: every agent with a rollout)")
    s.add_argument("--json", action="store_true")
    s = verbs.add_parser("set-weight", parents=[common], help="start a canary or change its share of new sessions")
    s.add_argument("agent")
    s.add_argument("weight", type=int, help="percent of new sessions pinned to the canary (0-100)")
    s.add_argument("--version", default="", help="what the canary runs (shown by status)")
    s.add_argument("--canary-scenario", default=None, help="check that the canary's scenario loads this agent")
    s.add_argument("--replicas", type=int, default=1, help="with --kube: canary replicas when it is scaled to 0")
    s = verbs.add_parser("promote", parents=[common], help="make the canary's version stable (gated)")
    s.add_argument("agent")
    s.add_argument("--force", action="store_true", help="promote even if the gate finds the canary worse")
    s.add_argument("--finish", action="store_true", help="without --kube: stable now runs the canary's version")
    for name, field in GatePolicy.model_fields.items():
        flag = f"--{name.replace('_', '-')}"
        s.add_argument(
            flag, type=type(field.default), default=field.default, help=f"{field.description} (default: %(default)s)"
        )
    s = verbs.add_parser("abort", parents=[common], help="withdraw the canary: its sessions go back to stable")
    s.add_argument("agent")
    p.set_defaults(fn=main)


def main(args: argparse.Namespace) -> None:
    logging.disable(logging.WARNING)  # the command's own output says what happened; closing its connection is no news
    try:
        asyncio.run(run(args))
    except RolloutError as exc:
        print(f"switchboard rollout {args.verb}: error: {exc}", file=sys.stderr)
        sys.exit(1)


async def run(args: argparse.Namespace, out: Any = None) -> None:
    from ..settings import Settings

    out = out or sys.stdout
    settings = Settings()
    if args.verb == "set-weight":
        check_weight(args.weight)  # before anything else: a bad weight touches nothing
    policy = None
    if args.verb == "promote":  # the gate's options too
        try:
            policy = GatePolicy(**{k: getattr(args, k) for k in GatePolicy.model_fields})
        except ValidationError as exc:
            raise RolloutError(option_error(exc)) from None
    agents = _scenario_agents(args.scenario or settings.scenario, settings.scenarios_dir)
    if agents is not None and getattr(args, "agent", None) is not None and args.agent not in agents:
        raise UnknownAgent(f"unknown agent {args.agent!r} (the scenario's agents: {', '.join(agents)})")
    servers = (args.nats_url or settings.nats_url).split(",")
    bus = Bus(servers, name="rollout-cli", seed_file=settings.nats_seed_file)  # the admin NKey, if required
    try:  # the bus retries a lost server forever (right for a service); a command gives up
        await bus.connect_within(CONNECT_TIMEOUT_S)
    except BusUnreachable as exc:
        raise RolloutError(str(exc)) from None
    async with bus:
        op = Operator(bus, await RolloutStore.open(bus.js, replicas=settings.js_replicas), agents, out)
        op.control = await ControlAudit.open(bus.js, replicas=settings.js_replicas)
        if args.kube:
            try:  # the kubernetes client is an extra (switchboard[kube]), imported only when used
                from .kube import Cluster, api_client
            except ModuleNotFoundError as exc:
                if exc.name != "kubernetes" and not str(exc.name).startswith("kubernetes."):
                    raise
                raise RolloutError(
                    "--kube needs the Kubernetes client: pip install 'switchboard[kube]' (nothing was changed)"
                ) from None
            op.cluster = Cluster(api_client(args.kubeconfig, args.context), args.namespace, args.prefix)
        op.timeout_s = args.timeout
        if args.verb == "status":
            await op.status(args.agent, as_json=args.json)
        elif args.verb == "set-weight":
            await op.set_weight(args.agent, args.weight, version=args.version, canary_scenario=args.canary_scenario,
                                replicas=args.replicas)  # fmt: skip
        elif policy is not None:  # promote
            await op.promote(args.agent, force=args.force, finish=args.finish, policy=policy)
        elif args.verb == "abort":
            await op.abort(args.agent)


def _scenario_agents(scenario: str, scenarios_dir: Path) -> list[str] | None:
    """The scenario's agent names, or None when it is not available here (then agents are probed)."""
    try:
        return load_scenario(scenario, scenarios_dir).config.agent_names
    except ScenarioError:
        return None


def one_line(text: str) -> str:
    return "; ".join(line.strip() for line in text.splitlines() if line.strip())


class Operator:
    def __init__(self, bus: Bus, store: RolloutStore, agents: list[str] | None, out: Any) -> None:
        self.bus = bus
        self.store = store
        self.agents = agents
        self.out = out
        self.cluster: Cluster | None = None
        self.control: ControlAudit | None = None
        """Where each change is recorded (who, what, when) once it is made."""
        self.timeout_s = 300.0

    async def audit(self, action: ControlAction, rollout: Rollout) -> None:
        if self.control is not None:
            details = {"weight": rollout.weight, "generation": rollout.generation, "state": rollout.state.value,
                       "version": rollout.version}  # fmt: skip
            await self.control.record(action, rollout.agent, details)

    def say(self, text: str) -> None:
        print(text, file=self.out, flush=True)

    async def check_agent(self, agent: str) -> None:
        if self.agents is not None:
            if agent not in self.agents:
                raise UnknownAgent(f"unknown agent {agent!r} (the scenario's agents: {', '.join(self.agents)})")
        elif not await serving(self.bus.nc, agent, "stable"):
            raise UnknownAgent(f"unknown agent {agent!r}: no stable replica serves it")

    async def check_canary_serves(self, agent: str) -> None:
        if not await serving(self.bus.nc, agent, "canary"):
            raise CanaryNotServing(
                f"no canary replica of {agent!r} answers: it is not running, or its agent configuration did "
                "not load (see the canary's logs)"
            )

    async def stats(self, rollout: Rollout) -> dict[str, TrackStats]:
        return summarize(await read_since(self.bus.js, rollout.started_at), rollout.agent)

    async def status(self, agent: str | None, *, as_json: bool = False) -> None:
        if agent is not None:
            await self.check_agent(agent)
            current, _ = await self.store.get(agent)
            rollouts = {agent: current} if current is not None else {}
        else:
            rollouts = dict(await self.store.all())
        report: dict[str, Any] = {}
        for name, rollout in rollouts.items():
            assert rollout is not None
            stats = await self.stats(rollout)
            entry: dict[str, Any] = rollout.model_dump(mode="json", exclude={"type"})
            entry["canary_serving"] = await serving(self.bus.nc, name, "canary")
            entry["tracks"] = {
                t: {"turns": s.turns, "error_rate": round(s.error_rate, 4), "p99_ms": round(s.p99_ms, 1),
                    "handoff_failure_rate": round(s.handoff_failure_rate, 4)}
                for t, s in sorted(stats.items())
            }  # fmt: skip
            if self.cluster is not None:
                deployments = {"stable": self.cluster.stable_name(name), "canary": self.cluster.canary_name(name)}
                for track, dep in deployments.items():
                    st = await self.cluster.status(dep)
                    entry[f"{track}_deployment"] = st.line() if st else f"{dep}: not found"
            report[name] = entry
        if as_json:
            self.say(json.dumps(report, indent=2))
            return
        if not report:
            self.say(f"no rollout for {agent}" if agent else "no rollouts")
        for name, e in report.items():
            self.say(f"{name}: {e['state']}, weight {e['weight']}%, generation {e['generation']}"
                     + (f", version {e['version']}" if e["version"] else "")
                     + f", canary {'serving' if e['canary_serving'] else 'NOT serving'}")  # fmt: skip
            for track, s in e["tracks"].items():
                self.say(f"  {track:<7} {s['turns']} turns, errors {s['error_rate']:.1%}, "
                         f"handoff failures {s['handoff_failure_rate']:.1%}, p99 {s['p99_ms']} ms")  # fmt: skip
            for key in ("stable_deployment", "canary_deployment"):
                if key in e:
                    self.say(f"  {e[key]}")

    async def set_weight(
        self, agent: str, weight: int, *, version: str = "", canary_scenario: str | None = None, replicas: int = 1
    ) -> None:
        check_weight(weight)
        await self.check_agent(agent)
        if canary_scenario is not None:
            from ..settings import Settings

            try:
                scenario = load_scenario(canary_scenario, Settings().scenarios_dir)
            except ScenarioError as exc:
                why = one_line(str(exc))
                raise CanaryNotServing(f"the canary's configuration of {agent!r} does not load: {why}") from exc
            if scenario.config.agent(agent) is None:
                raise CanaryNotServing(f"the canary's scenario {canary_scenario!r} has no agent {agent!r}")
        if weight > 0:
            if self.cluster is not None:
                await self._scale_up_canary(agent, replicas)
            await self.check_canary_serves(agent)
        rollout = await self.store.set_weight(agent, weight, version=version)
        await self.audit("rollout.weight_set", rollout)
        self.say(f"{agent}: canary generation {rollout.generation} at weight {rollout.weight}% of new sessions")

    async def _scale_up_canary(self, agent: str, replicas: int) -> None:
        assert self.cluster is not None
        canary = await self.cluster.canary(agent)
        if canary.replicas == 0:
            await self.cluster.scale(canary.name, replicas)
        try:
            status = await self.cluster.wait_rolled_out(canary.name, self.timeout_s)
        except RolloutError as exc:
            if canary.replicas == 0:
                await self.cluster.scale(canary.name, 0)  # as it was: nothing changed
            raise CanaryNotServing(f"the canary of {agent!r} does not become ready ({exc})") from exc
        self.say(status.line())

    async def promote(self, agent: str, *, force: bool, finish: bool, policy: GatePolicy) -> None:
        await self.check_agent(agent)
        if finish:
            await self.audit("rollout.finished", await self.store.finish(agent))
            self.say(f"{agent}: rollout finished; every session is served by the stable track")
            return
        rollout = await self.store.running(agent, states=(RolloutState.CANARY, RolloutState.PROMOTED))
        stats = await self.stats(rollout)
        stable, canary = stats.get("stable", TrackStats()), stats.get("canary", TrackStats())
        reasons = judge(stable, canary, policy)
        self.say(f"gate: stable {stable.line()}; canary {canary.line()}")
        if reasons and not force:
            raise GateRefused(f"canary of {agent!r} refused: {'; '.join(reasons)} (--force promotes anyway)")
        await self.check_canary_serves(agent)
        if self.cluster is None:
            await self.audit("rollout.promoted", await self.store.promote(agent))
            self.say(
                f"{agent}: promoted; the canary track now serves every session of {agent}. Run the stable replicas "
                f"on the canary's version, then: switchboard rollout promote {agent} --finish"
            )
            return
        stable_dep = await self.cluster.status(self.cluster.stable_name(agent))
        await self._scale_up_canary(agent, max(stable_dep.replicas if stable_dep else 1, 1))
        await self.audit("rollout.promoted", await self.store.promote(agent))
        self.say(f"{agent}: promoted; the canary track serves every session while stable rolls out")
        await self.cluster.adopt_canary(agent)
        status = await self.cluster.wait_rolled_out(self.cluster.stable_name(agent), self.timeout_s)
        self.say(status.line())
        await self.audit("rollout.finished", await self.store.finish(agent))
        await self.cluster.scale(self.cluster.canary_name(agent), 0)
        self.say(f"{agent}: rollout finished; stable runs the promoted version, canary scaled to 0")

    async def abort(self, agent: str) -> None:
        await self.check_agent(agent)
        rollout = await self.store.abort(agent)
        await self.audit("rollout.aborted", rollout)
        self.say(f"{agent}: canary generation {rollout.generation} aborted; its sessions go to stable next turn")
        if self.cluster is not None:
            started = time.monotonic()
            await self.cluster.scale(self.cluster.canary_name(agent), 0)
            self.say(f"{self.cluster.canary_name(agent)} scaled to 0 ({time.monotonic() - started:.1f} s)")
