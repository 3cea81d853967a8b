"""Score an agent's offline routing on a labelled set of caller lines (see tests/data/routing_*.yaml).

Two set shapes: ``cases`` (one caller line each, said at the start of a call) and ``conversations``
(lists of lines played in order, earlier lines in the history). Each line names what must happen:
a handoff target, the agent's own name (it answers itself), ``answer`` (same) or ``consult``.
Every line runs through the real ``AgentLoop`` with the scenario's ``OfflineProvider`` and tools.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from ..agents.config import AgentConfig, ScenarioConfig
from ..agents.loader import Scenario, load_scenario
from ..errors import ConfigError
from ..models.offline import OfflineProvider
from ..runtime.loop import AgentLoop
from ..schemas import ConversationItem, FunctionCallItem, FunctionCallOutputItem, MessageItem, TurnRequest, TurnResult

_SCENARIOS = Path(__file__).resolve().parents[3] / "scenarios"


class Line(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    say: str
    expect: str
    topic: str = ""


class LabelledSet(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    scenario: str
    agent: str
    cases: list[Line] = Field(default_factory=list)
    conversations: list[list[Line]] = Field(default_factory=list)

    @classmethod
    def load(cls, path: Path) -> LabelledSet:
        """The set in ``path``; a set that cannot be read or validated is a one-line ``ConfigError`` naming it."""
        try:
            raw = yaml.safe_load(path.read_text())
        except (UnicodeDecodeError, yaml.YAMLError) as exc:
            raise ConfigError(f"labelled set {path}: cannot read it: {' '.join(str(exc).split())}") from exc
        try:
            return cls.model_validate(raw)
        except ValidationError as exc:
            first = exc.errors(include_url=False)[0]
            where = ".".join(str(p) for p in first["loc"])
            more = f" (and {exc.error_count() - 1} more)" if exc.error_count() > 1 else ""
            raise ConfigError(f"labelled set {path}: {where + ': ' if where else ''}{first['msg']}{more}") from None

    def check(self, config: ScenarioConfig, path: Path | None = None) -> AgentConfig:
        """The set's agent; every line expects something a turn can end in (``answer``, ``consult``, or an agent
        of the scenario), so a mistyped label is refused instead of being counted as a miss."""
        name = f"labelled set {path}" if path else "labelled set"
        agent = config.agent(self.agent)
        if agent is None:
            raise ConfigError(f"{name}: scenario {self.scenario!r} has no agent {self.agent!r}")
        outcomes = ["answer", "consult", *config.agent_names]
        for n, line in enumerate(self.lines(), 1):
            if line.expect not in outcomes:
                raise ConfigError(
                    f"{name}: line {n} ({line.say!r}) expects {line.expect!r}, which no turn ends in "
                    f"(expect one of {outcomes})"
                )
        return agent

    def lines(self) -> list[Line]:
        return [*self.cases, *(line for conv in self.conversations for line in conv)]


class Outcome(BaseModel):
    model_config = ConfigDict(frozen=True)

    line: Line
    got: str

    @property
    def ok(self) -> bool:
        return self.got == self.line.expect


class Report(BaseModel):
    model_config = ConfigDict(frozen=True)

    outcomes: list[Outcome]
    backend: str
    per_turn_ms: float
    """Mean wall time of one offline model turn (routing included)."""

    @property
    def correct(self) -> int:
        return sum(o.ok for o in self.outcomes)

    @property
    def total(self) -> int:
        return len(self.outcomes)

    @property
    def accuracy(self) -> float:
        return self.correct / self.total if self.total else 0.0

    def rate(self, outcome: str) -> float:
        """Share of lines that ended in ``outcome`` (e.g. the consult rate)."""
        return sum(o.got == outcome for o in self.outcomes) / self.total if self.total else 0.0

    def render(self) -> str:
        by_topic: Counter[str] = Counter()
        ok_topic: Counter[str] = Counter()
        for o in self.outcomes:
            key = o.line.topic or o.line.expect
            by_topic[key] += 1
            ok_topic[key] += o.ok
        parts = ", ".join(f"{k} {ok_topic[k]}/{n}" for k, n in by_topic.items())
        lines = [f"{self.correct} of {self.total} routed as labelled ({self.accuracy:.0%}; {parts})"]
        lines.append(f"backend {self.backend}, {self.per_turn_ms:.2f} ms per turn")
        lines += [f"  MISS expected {o.line.expect:<8} got {o.got:<8} {o.line.say}" for o in self.outcomes if not o.ok]
        return "\n".join(lines)


def keywords_only(scenario: Scenario) -> Scenario:
    """The same scenario routed as before intents existed: no intents, no rule that tests one."""
    raw = scenario.config.model_dump()
    for agent in raw["agents"]:
        agent["offline"]["intents"] = {}
        agent["offline"]["rules"] = [r for r in agent["offline"]["rules"] if not r["when_intent"]]
    return Scenario(ScenarioConfig.model_validate(raw), scenario.tools, scenario.path)


def _outcome(agent: str, result: TurnResult) -> str:
    if result.outcome == "handoff" and result.handoff is not None:
        return result.handoff.target
    if result.outcome == "consult":
        return "consult"
    return agent


async def evaluate(labelled: LabelledSet, scenario: Scenario | None = None, backend: str = "auto") -> Report:
    """Run every line of ``labelled`` through its agent; ``answer`` lines expect the agent itself.
    ``backend`` picks the intent similarity backend (``switchboard.intents``)."""
    scenario = scenario or load_scenario(labelled.scenario, _SCENARIOS)
    config = labelled.check(scenario.config)
    provider = OfflineProvider(config.offline, scenario.config.offline_slots, backend=backend)
    loop = AgentLoop(config, provider, scenario.tools)

    async def sink(_: str) -> None:
        return None

    outcomes: list[Outcome] = []
    spent = 0.0
    turns = 0
    conversations: list[Sequence[Line]] = [[c] for c in labelled.cases]
    conversations += labelled.conversations
    for n, conversation in enumerate(conversations):
        history: list[ConversationItem] = []
        for t, line in enumerate(conversation):
            history.append(MessageItem(id=f"item_u{n}_{t}", role="user", text=line.say))
            request = TurnRequest(session_id=f"eval_{n}", turn_id=f"turn_{t}", agent=config.name, history=history)
            started = time.perf_counter()
            result = await loop.run(request, sink)
            spent += time.perf_counter() - started
            turns += 1
            got = _outcome(config.name, result)
            expect = config.name if line.expect == "answer" else line.expect
            outcomes.append(Outcome(line=line.model_copy(update={"expect": expect}), got=got))
            history += _after(result, config.name, f"{n}_{t}")
    return Report(outcomes=outcomes, backend=provider.backend_name, per_turn_ms=1000 * spent / max(turns, 1))


def _after(result: TurnResult, agent: str, key: str) -> list[ConversationItem]:
    """What the session history holds after the turn: the agent's items, and for a consult the
    answered consult call and a stand-in for the supervisor's spoken answer."""
    items: list[ConversationItem] = list(result.items)
    if result.outcome == "consult" and result.consult is not None:
        call_id = result.consult.call_id or f"call_policy_{key}"
        if not any(isinstance(i, FunctionCallItem) and i.call_id == call_id for i in items):
            args = json.dumps({"note": result.consult.note})
            items.append(FunctionCallItem(id=f"item_c{key}", call_id=call_id, name="consult_supervisor",
                                          arguments=args, agent=agent))  # fmt: skip
        items.append(
            FunctionCallOutputItem(id=f"item_o{key}", call_id=call_id, output='{"answered": true}', agent=agent)
        )
        items.append(MessageItem(id=f"item_a{key}", role="assistant", text="(the supervisor's answer)", agent=agent))
    return items


async def command(paths: Sequence[Path], scenarios_dir: Path, backend: str) -> int:
    """``switchboard routing-eval``: each set scored with ``backend`` and with keyword rules only."""
    for path in paths:
        labelled = LabelledSet.load(path)
        scenario = load_scenario(labelled.scenario, scenarios_dir)
        labelled.check(scenario.config, path)
        started = time.perf_counter()
        report = await evaluate(labelled, scenario, backend=backend)
        ready = time.perf_counter() - started - report.per_turn_ms * report.total / 1000
        baseline = await evaluate(labelled, keywords_only(scenario), backend=backend)
        print(f"== {path} ({labelled.scenario}/{labelled.agent})")
        print(report.render())
        consults = report.rate("consult")
        print(f"consult rate {consults:.2f}; start-up {ready:.2f} s (example index, and the backend's load once)")
        first = baseline.render().splitlines()[0]
        print(f"this scenario without its intents: {first}; consult rate {baseline.rate('consult'):.2f}")
    return 0
