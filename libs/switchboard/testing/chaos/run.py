"""A chaos run: start the system one fault needs, drive the callers, inject the fault, check, report.

A run drives ``sessions`` concurrent conversations over real WebSockets until ``turns`` caller turns
were attempted, injects the fault ``injections`` times while turns are in flight (each time followed
by the fault's recovery), and then checks what the caller was told against what the system stored
(see the package's docstring for the outcomes it counts).
"""

from __future__ import annotations

import asyncio
import json
import math
import random
import secrets
import signal
import time
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path

from ...local.stack import Stack
from ..scripted_openai import ScriptedOpenAIServer
from .checks import lost_turns, platform_retries
from .client import ChaosClient, Clock
from .effects import EFFECTS_DB, EFFECTS_DB_ENV, create_witness, tally_effects
from .faults import FaultEnv, FaultSpec
from .model import ChaosModel
from .report import FaultReport
from .stats import percentiles, reason
from .workload import SCENARIO, ChaosTurn

Progress = Callable[[str], None]


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
        self.clock = Clock()
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
        sessions = {c.index: c.session_id for c in self.clients}
        lost = await lost_turns(self.env.stack.nats_urls, sessions, self.turns)
        retried = await platform_retries(self.env.stack.nats_urls, sessions.values())
        effects = tally_effects(self.data_dir, self.turns)
        dup = sum(n - 1 for n in effects.duplicated.values())
        dup_details = [f"{label!r} took effect {n} times" for label, n in effects.duplicated.items()]
        twice = {t.text for t in self.turns if t.answered_twice}
        dup_after_commit = sum(n - 1 for label, n in effects.duplicated.items() if label in twice)
        by = Counter(t.outcome for t in self.turns)
        in_window = [t for t in self.turns if any(self._overlaps(t, i) for i in self.injections)]
        failed = [t for t in self.turns if t.outcome == "failed"]
        report = FaultReport(
            fault=self.spec.name, title=self.spec.title, turns_attempted=len(self.turns),
            completed=by["completed"], completed_by_fallback=by["fallback"], failed=by["failed"],
            lost=len(lost), duplicated_side_effects=dup, effect_turns=sum(t.effect for t in self.turns),
            effects_recorded=effects.recorded, missing_side_effects=effects.missing, orphan_side_effects=effects.orphan,
            re_executions=effects.re_executions, hangs=sum(t.hung for t in failed),
            reconnects=sum(c.reconnects for c in self.clients), re_asked_turns=sum(t.asks > 1 for t in self.turns),
            re_asked_after_commit=sum(t.answered_twice for t in self.turns),
            duplicated_after_committed_reask=dup_after_commit,
            platform_retried_turns=retried, turns_in_fault_window=len(in_window),
            fallback_span_s=self._fallback_span(),
            latency_ms=percentiles([t.latency_ms for t in self.turns]),
            fault_latency_ms=percentiles([t.latency_ms for t in in_window]),
            calm_latency_ms=percentiles([t.latency_ms for t in self.turns if t not in in_window]),
            failure_reasons=dict(Counter(reason(t.detail) for t in failed).most_common()),
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
        stack_env[EFFECTS_DB_ENV] = str(create_witness(witness / EFFECTS_DB))
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
