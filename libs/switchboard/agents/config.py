"""Agents as data: the typed form of a scenario's YAML, validated when it is loaded."""

from __future__ import annotations

import functools
import re
import string
from collections.abc import Mapping
from typing import Any, Literal, Self

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PydanticUserError,
    create_model,
    field_validator,
    model_validator,
)
from pydantic_core import SchemaError, SchemaValidator, core_schema

from ..bus.subjects import check_token
from ..guardrails.rules import GuardrailsConfig

_FIELD_TYPES: dict[str, type] = {"string": str, "integer": int, "number": float, "boolean": bool}


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


REALTIME_PROVIDER = "openai-realtime"
"""The provider of an agent that runs on the OpenAI Realtime API, at the edge (speech to speech)."""


class ModelConfig(_Frozen):
    """Which model an agent uses. ``auto`` = OpenAI when ``OPENAI_API_KEY`` is set, else offline;
    ``openai-realtime``: the agent runs on the OpenAI Realtime API through the edge (docs/voice.md)."""

    provider: Literal["auto", "offline", "openai", "openai-realtime"] = "auto"
    name: str = "gpt-4.1-mini"
    base_url: str | None = None
    """OpenAI-compatible endpoint; default ``OPENAI_BASE_URL`` or OpenAI itself. For ``openai-realtime``:
    the WebSocket base (``wss://api.openai.com/v1``; default ``SWITCHBOARD_REALTIME_URL`` or OpenAI)."""
    settings: dict[str, Any] = Field(default_factory=dict)
    """Extra request parameters (temperature, max_tokens, ...)."""

    @field_validator("settings")
    @classmethod
    def _delay(cls, v: dict[str, Any]) -> dict[str, Any]:
        """``delay_s`` (the offline model's simulated latency) is read at the agent's start: a string there was
        a ValueError traceback from the agent, after ``validate`` said valid."""
        delay = v.get("delay_s", 0)
        if isinstance(delay, bool) or not isinstance(delay, int | float) or not 0 <= delay < 3600:
            raise ValueError(f"delay_s must be a number of seconds from 0 to 3600, got {delay!r}")
        return v


class ContractField(_Frozen):
    """One context field a handoff may (or must) transfer."""

    type: Literal["string", "integer", "number", "boolean"] = "string"
    required: bool = True
    description: str = ""
    pattern: str | None = None
    """A regex the value must match, in the dialect pydantic checks contracts with (no look-around)."""
    forward: bool = False
    """When the source agent does not pass this field, the platform passes on the value the source
    itself received at its own handoff (if any). Nothing crosses a handoff unless a contract says so."""

    @field_validator("pattern")
    @classmethod
    def _pattern_compiles(cls, v: str | None) -> str | None:
        if v is not None:
            try:  # the engine the contract model uses at run time, so load and run agree
                SchemaValidator(core_schema.str_schema(pattern=v))
            except SchemaError as exc:
                raise ValueError(f"invalid regex {v!r}: {_last_line(exc)}") from None
        return v


class HandoffConfig(_Frozen):
    """An allowed transfer and its contract: exactly these context fields may cross, nothing else.

    The target receives the validated contract fields of the handoff that brought it there (plus the
    platform's own ``pending_agent`` on an auth redirect); context from earlier handoffs does not
    carry over unless a field of this contract is declared ``forward: true``."""

    target: str
    description: str = ""
    contract: dict[str, ContractField] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _contract_builds(self) -> Self:
        """The contract model is built at load, not at the first handoff: a field named ``_order`` made pydantic
        raise from the agent's start (a traceback, after ``validate`` said valid), ``model_config`` was dropped
        (every handoff carrying it refused), and ``reason`` is the transfer tool's own argument."""
        if "reason" in self.contract:
            raise ValueError("contract field 'reason' is the transfer tool's own argument (why the caller moves)")
        try:
            built = set(self._contract_model.model_fields)
        except PydanticUserError as exc:
            raise ValueError(f"contract: {_last_line(exc)}") from None
        dropped = [name for name in self.contract if name not in built]
        if dropped:
            raise ValueError(f"contract field names {dropped} cannot be used; rename them")
        return self

    def contract_model(self) -> type[BaseModel]:
        """A pydantic model of the contract: declared fields only, required ones enforced (built once)."""
        return self._contract_model

    @functools.cached_property
    def _contract_model(self) -> type[BaseModel]:  # building a model costs more than a whole handoff
        fields: dict[str, Any] = {}
        for name, spec in self.contract.items():
            annotation: Any = _FIELD_TYPES[spec.type]
            default: Any = ... if spec.required else None
            if not spec.required:
                annotation = annotation | None
            fields[name] = (annotation, Field(default, description=spec.description, pattern=spec.pattern))
        return create_model(f"Contract_{self.target}", __config__=ConfigDict(extra="forbid", strict=False), **fields)

    def parameters_schema(self) -> dict[str, Any]:
        """JSON Schema of the ``transfer_to_<target>`` tool: a reason plus the contract fields."""
        schema = self.contract_model().model_json_schema()
        props = {"reason": {"type": "string", "description": "Why the caller is being transferred"}}
        props.update(schema.get("properties", {}))
        return {
            "type": "object",
            "properties": props,
            "required": ["reason", *schema.get("required", [])],
            "additionalProperties": False,
        }


class OfflineRule(_Frozen):
    """One rule of the offline deterministic model (see ``models/offline.py``)."""

    when_user_says: list[str] = Field(default_factory=list)
    """Any of these words (case-insensitive) in the latest user message."""
    when_conversation_says: list[str] = Field(default_factory=list)
    """Any of these words in any of the caller's messages so far."""
    when_intent: list[str] = Field(default_factory=list)
    """The caller's latest message matches one of these intents (declared in ``intents``)."""
    when_slots: list[str] = Field(default_factory=list)
    """All these slots are known (extracted from what the caller said, or in the context)."""
    when_slots_said: list[str] = Field(default_factory=list)
    """All these slots were pulled from the caller's latest message itself."""
    when_context: list[str] = Field(default_factory=list)
    """All these context keys are set."""
    when_authenticated: bool | None = None
    """Caller verification state must equal this."""
    after_tool: str | None = None
    """Only right after this tool returned; otherwise only at the start of a step."""
    when_result: dict[str, Any] = Field(default_factory=dict)
    """Fields the tool's JSON result must equal."""
    call: str | None = None
    """Tool to call (templated, e.g. ``transfer_to_{context.pending_agent}``)."""
    args: dict[str, Any] = Field(default_factory=dict)
    """Arguments (templated). A key ending in ``?`` is dropped when its template cannot be filled."""
    say: str | None = None
    """Reply text (templated). ``{user.text}`` is the caller's latest message."""

    @field_validator("when_user_says", "when_conversation_says")
    @classmethod
    def _no_blank_words(cls, words: list[str]) -> list[str]:
        if any(not w.strip() for w in words):  # a blank word is in every line: the rule fired for anything said
            raise ValueError(f"a blank word in {words!r} would match every line")
        return words

    @model_validator(mode="after")
    def _one_action(self) -> Self:
        if (self.call is None) == (self.say is None):
            raise ValueError("an offline rule needs exactly one of 'call' or 'say'")
        templates = {"say": self.say, "call": self.call}
        templates |= {f"args.{k}": v for k, v in self.args.items() if isinstance(v, str)}
        for where, template in templates.items():
            if template is not None:
                _check_template(where, template)
        return self


TEMPLATE_FIELDS: dict[str, frozenset[str] | None] = {
    "slots": None,
    "context": None,
    "result": None,
    "caller": frozenset({"authenticated"}),
    "user": frozenset({"text"}),
}
"""What an offline rule's templates may name: ``{namespace.key}`` (any key where the set is ``None``)."""
_TEMPLATE_FIELD = re.compile(r"^([a-z_]+)\.([A-Za-z0-9_]+)$")


def _check_template(where: str, template: str) -> None:
    """A template the offline model can render: a typo (``{slot.x}``, an unclosed brace) loaded, and the turn
    that reached the rule failed with KeyError or ValueError."""
    fields = ", ".join(f"{{{n}.{sorted(k)[0] if k else '<name>'}}}" for n, k in TEMPLATE_FIELDS.items())
    try:
        parsed = list(string.Formatter().parse(template))
    except ValueError as exc:
        raise ValueError(f"{where} template {template!r}: {exc} (use '{{{{' and '}}}}' for braces)") from None
    for _, field, spec, conversion in parsed:
        if field is None:
            continue
        match = _TEMPLATE_FIELD.match(field)
        known = TEMPLATE_FIELDS.get(match.group(1), ()) if match else ()
        if match is None or (known is not None and match.group(2) not in known):
            raise ValueError(f"{where} template {template!r}: unknown field {{{field}}} (fields: {fields})")
        if conversion not in (None, "r", "s", "a") or "{" in (spec or ""):
            raise ValueError(f"{where} template {template!r}: unsupported conversion or format in {{{field}}}")


class OfflineScript(_Frozen):
    intents: dict[str, list[str]] = Field(default_factory=dict)
    """Intent name -> example caller lines. A line takes the intent of its most similar example,
    unless the similarity is under the backend's threshold (see ``switchboard.intents``). Declare
    intents no rule tests too: they compete, so a line like theirs matches no routing intent."""
    rules: list[OfflineRule] = Field(default_factory=list)
    default: str = "Sorry, I can't help with that."

    @field_validator("intents")
    @classmethod
    def _examples(cls, intents: dict[str, list[str]]) -> dict[str, list[str]]:
        owner: dict[str, str] = {}
        for name, examples in intents.items():
            if not examples or any(not e.strip() for e in examples):
                raise ValueError(f"intent {name!r} needs at least one example utterance and no blank ones")
            for example in examples:  # a line equal to both scores the same: the first intent always won it
                other = owner.setdefault(" ".join(example.lower().split()), name)
                if other != name:
                    raise ValueError(f"intent {name!r}: example {example!r} is an example of intent {other!r} too")
        return intents

    @model_validator(mode="after")
    def _intents_declared(self) -> Self:
        for n, rule in enumerate(self.rules, 1):
            unknown = [i for i in rule.when_intent if i not in self.intents]
            if unknown:
                raise ValueError(
                    f"rule {n} tests intent {unknown[0]!r}, which is not declared (intents: {sorted(self.intents)})"
                )
        return self


Move = Literal["greet", "chitchat", "collect", "act"]
DEFAULT_MOVES: tuple[Move, ...] = ("greet", "chitchat", "collect")
CONSULT_TOOL = "consult_supervisor"
"""Built-in tool that asks the agent's supervisor; declared in ``tools`` like any other."""
TRANSFER_PREFIX = "transfer_to_"
"""A handoff is a call of the tool ``transfer_to_<target>``."""
MAX_TOOL_NAME = 64
"""The longest function name model APIs accept (OpenAI's Chat Completions and Realtime APIs)."""


class ConsultFallback(_Frozen):
    """What a front agent does when its supervisor is unavailable or its breaker is open."""

    mode: Literal["transfer", "degraded"] = "transfer"
    """``transfer``: say ``say`` and hand the caller to ``target``; ``degraded``: say ``say`` and stay."""
    target: str | None = None
    """Transfer target; default: the scenario's fallback agent."""
    say: str = "I'm having trouble reaching the right person for that, so let me transfer you."


class ConsultConfig(_Frozen):
    """The chat-supervisor pattern: this agent consults ``supervisor`` and speaks its answer."""

    supervisor: str
    """Name of an agent with ``role: supervisor``."""
    own_moves: list[Move] = Field(default_factory=lambda: list(DEFAULT_MOVES))
    """What the agent may do on its own. Without ``act`` it may hold no tools but the consult tool
    and its handoffs (enforced at load and at run time)."""
    must_consult: list[str] = Field(default_factory=list)
    """Words that make the platform consult at once, without asking the agent's model."""
    fillers: list[str] = Field(default_factory=lambda: ["One moment while I look into that."], min_length=1)
    """Said at once while the supervisor works; must never imply an outcome."""
    timeout_s: float = Field(8.0, gt=0)
    """Deadline of one consult, retries included."""
    attempts: int = Field(2, ge=1, le=5)
    """Tries per consult (retryable failures only, with jittered backoff)."""
    fallback: ConsultFallback = Field(default_factory=ConsultFallback)


class AgentConfig(_Frozen):
    name: str
    role: Literal["agent", "supervisor"] = "agent"
    """``supervisor`` agents are served by ``switchboard supervisor`` and only answer consults."""
    description: str = ""
    instructions: str
    model: ModelConfig = Field(default_factory=ModelConfig)
    tools: list[str] = Field(default_factory=list)
    handoffs: list[HandoffConfig] = Field(default_factory=list)
    requires_auth: bool = False
    """The platform routes an unverified caller to the scenario's auth agent first."""
    max_iterations: int = Field(6, ge=1, le=50)
    """Cap on model calls per agent turn."""
    offline: OfflineScript = Field(default_factory=OfflineScript)
    consult: ConsultConfig | None = None
    """Makes this a supervisor-backed agent (chat-supervisor pattern)."""

    @field_validator("name")
    @classmethod
    def _name_token(cls, v: str) -> str:
        return check_token(v, "agent name")

    def handoff_to(self, target: str) -> HandoffConfig | None:
        return next((h for h in self.handoffs if h.target == target), None)

    @property
    def upstream(self) -> bool:
        """Runs on the OpenAI Realtime API through the edge, not as an agent process."""
        return self.model.provider == REALTIME_PROVIDER


class ScenarioConfig(_Frozen):
    name: str
    description: str = ""
    entry_agent: str
    fallback_agent: str
    """The generalist that takes over when a handoff target is missing, failing or refused."""
    auth_agent: str | None = None
    max_handoff_depth: int = Field(6, ge=1, le=100)
    """Handoffs allowed per conversation; beyond it the fallback agent takes over."""
    max_hops_per_turn: int = Field(4, ge=1, le=20)
    """Agent turns allowed within one caller turn."""
    tools_module: str | None = "tools.py"
    offline_slots: dict[str, str] = Field(default_factory=dict)
    """Regexes (first group) the offline model uses to pull slots from what the caller said."""
    guardrails: GuardrailsConfig = Field(default_factory=GuardrailsConfig)
    """Rules checked on caller input (edge), agent output (agent) and every handoff (conductor)."""
    agents: list[AgentConfig]

    @field_validator("offline_slots")
    @classmethod
    def _slots_compile(cls, v: dict[str, str]) -> dict[str, str]:
        for slot, pattern in v.items():
            try:
                re.compile(pattern)
            except re.error as exc:
                raise ValueError(f"slot {slot!r}: invalid regex {pattern!r}: {exc}") from None
        return v

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        names = [a.name for a in self.agents]
        dupes = {n for n in names if names.count(n) > 1}
        if dupes:
            raise ValueError(f"duplicate agent names: {sorted(dupes)}")
        for role in ("entry_agent", "fallback_agent", "auth_agent"):
            value = getattr(self, role)
            if value is not None and value not in names:
                raise ValueError(f"{role} {value!r} is not an agent of this scenario (agents: {names})")
        roles = {a.name: a.role for a in self.agents}
        for role in ("entry_agent", "fallback_agent", "auth_agent"):
            if roles.get(getattr(self, role)) == "supervisor":
                raise ValueError(f"{role} cannot be a supervisor")
        for agent in self.agents:
            targets = [h.target for h in agent.handoffs]
            for handoff in agent.handoffs:
                if handoff.target not in names:
                    raise ValueError(f"agent {agent.name!r} hands off to unknown agent {handoff.target!r}")
                if roles[handoff.target] == "supervisor":
                    raise ValueError(f"agent {agent.name!r} hands off to supervisor {handoff.target!r}; consult it")
                if handoff.target == agent.name:  # the conductor refuses it every time (ping_pong): the fallback
                    raise ValueError(f"agent {agent.name!r} hands off to itself")
                if targets.count(handoff.target) > 1:  # two transfer_to_<target> tools, one contract ever used
                    raise ValueError(f"agent {agent.name!r} declares its handoff to {handoff.target!r} twice")
                if len(TRANSFER_PREFIX + handoff.target) > MAX_TOOL_NAME:
                    raise ValueError(
                        f"agent {agent.name!r} hands off to {handoff.target!r}: its tool {TRANSFER_PREFIX}<target> "
                        f"would be longer than the {MAX_TOOL_NAME} characters model APIs accept in a tool name"
                    )
            _check_consult(agent, roles)
            _check_upstream(agent)
            _check_offline_transfers(agent, names)
        upstream = [a.name for a in self.agents if a.upstream]
        if len(upstream) > 1:
            raise ValueError(f"at most one agent may run on the Realtime API ({REALTIME_PROVIDER}); got {upstream}")
        if any(a.requires_auth for a in self.agents) and self.auth_agent is None:
            raise ValueError("an agent requires_auth but the scenario names no auth_agent")
        return self

    def agent(self, name: str) -> AgentConfig | None:
        return next((a for a in self.agents if a.name == name), None)

    @property
    def agent_names(self) -> list[str]:
        return [a.name for a in self.agents]


def _check_consult(agent: AgentConfig, roles: Mapping[str, str]) -> None:
    if agent.role == "supervisor":
        if agent.handoffs or agent.consult or CONSULT_TOOL in agent.tools:
            raise ValueError(f"supervisor {agent.name!r} cannot hand off or consult")
        return
    consult = agent.consult
    if consult is None:
        if CONSULT_TOOL in agent.tools:
            raise ValueError(f"agent {agent.name!r} lists {CONSULT_TOOL} but has no 'consult' block")
        return
    if roles.get(consult.supervisor) != "supervisor":
        raise ValueError(f"agent {agent.name!r} consults {consult.supervisor!r}, which is not a supervisor")
    if consult.fallback.target is not None and consult.fallback.target not in roles:
        raise ValueError(f"agent {agent.name!r}: consult fallback target {consult.fallback.target!r} is unknown")
    if consult.fallback.target is not None and roles[consult.fallback.target] == "supervisor":
        raise ValueError(
            f"agent {agent.name!r}: consult fallback target {consult.fallback.target!r} is a supervisor, which "
            "takes no caller"
        )
    own_tools = [t for t in agent.tools if t != CONSULT_TOOL]
    if own_tools and "act" not in consult.own_moves:
        raise ValueError(
            f"agent {agent.name!r} may not act on its own (own_moves lacks 'act') but holds tools {own_tools}; "
            "give them to its supervisor"
        )


def _check_offline_transfers(agent: AgentConfig, names: list[str]) -> None:
    """An offline rule's ``transfer_to_<target>`` names an agent of the scenario. A templated target (e.g.
    ``transfer_to_{context.pending_agent}``) is known only at run time, where the conductor refuses an
    unknown one as it does a model's."""
    for n, rule in enumerate(agent.offline.rules, 1):
        call = rule.call
        if call is None or not call.startswith(TRANSFER_PREFIX) or "{" in call:
            continue
        target = call.removeprefix(TRANSFER_PREFIX)
        if target not in names:
            raise ValueError(
                f"agent {agent.name!r} offline rule {n} calls {call}, but {target!r} is not an agent of this "
                f"scenario (agents: {names})"
            )


def _check_upstream(agent: AgentConfig) -> None:
    if not agent.upstream:
        return
    if agent.role == "supervisor":
        raise ValueError(f"supervisor {agent.name!r} cannot run on the Realtime API ({REALTIME_PROVIDER})")
    own_tools = [t for t in agent.tools if t != CONSULT_TOOL]
    if own_tools:
        raise ValueError(
            f"agent {agent.name!r} runs on the Realtime API at the edge, where scenario tools do not run: it may "
            f"hold handoffs and {CONSULT_TOOL} only, not {own_tools}"
        )


def _last_line(exc: Exception) -> str:
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return lines[-1].removeprefix("error: ") if lines else type(exc).__name__
