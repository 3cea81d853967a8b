"""Tools: Python callables registered by name; typed parameters become the JSON Schema."""

from __future__ import annotations

import asyncio
import inspect
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, get_args, get_type_hints

from pydantic import BaseModel, ConfigDict, ValidationError, create_model

from ..errors import SwitchboardError
from ..schemas import CallerIdentity
from .config import CONSULT_TOOL, MAX_TOOL_NAME, TRANSFER_PREFIX

if TYPE_CHECKING:
    from ..state.store import ToolStore

Seeder = Callable[["ToolStore"], Awaitable[None]]
"""Fills a scenario's store at agent start; must only create what is absent (``Collection.seed``)."""


@dataclass(frozen=True)
class ToolSpec:
    """A function the model may call, described by a JSON Schema of its parameters.

    Defined here, with the tools it describes: agents are data that model providers read
    (``switchboard.models`` imports ``switchboard.agents``, never the reverse)."""

    name: str
    description: str
    parameters: dict[str, Any]


class ToolError(SwitchboardError):
    """A tool refused or failed; the message goes back to the model as the tool's output."""


@dataclass
class ToolContext:
    """What the platform tells a tool about the call. Declare a parameter of this type to get it."""

    session_id: str
    agent: str
    caller: CallerIdentity
    identity_tool: bool = False
    verified: CallerIdentity | None = field(default=None)
    turn_id: str = ""
    idempotency_key: str = ""
    """For side-effecting tools: the same for every run of this call (retries and takeovers included);
    pass it to whatever the tool changes so the effect cannot happen twice."""
    deadline: float | None = None
    """Unix time by which the caller needs the turn's answer (the hop deadline), when known."""
    tool_store: ToolStore | None = field(default=None, repr=False)
    """The store behind ``store``; the platform sets it."""

    @property
    def store(self) -> ToolStore:
        """The scenario's shared data store (the same for every replica). Use it from ``async def`` tools."""
        if self.tool_store is None:
            raise ToolError("no data store is configured for this agent")
        return self.tool_store

    def verify_caller(self, customer_id: str) -> None:
        """Mark the caller as verified; only tools registered with ``identity=True`` may do this."""
        if not self.identity_tool:
            raise ToolError("this tool is not allowed to verify callers")
        self.verified = CallerIdentity(authenticated=True, customer_id=customer_id, verified_by=self.agent)
        self.caller = self.verified


@dataclass(frozen=True)
class Owns:
    """A tool argument that names a caller-owned record: the platform loads ``<collection>.<value>`` from
    the scenario's store and runs the tool only if the record's ``owner_field`` is the verified caller's
    customer id. The refusal reads the same whether the record is missing or someone else's."""

    argument: str
    collection: str
    owner_field: str = "customer_id"
    upper: bool = False
    """Compare the id upper-cased (ids like order numbers that callers say in any case)."""

    async def check(self, tool: str, arguments: Any, ctx: ToolContext) -> None:
        value = str(getattr(arguments, self.argument, "") or "")
        record_id = value.upper() if self.upper else value
        refusal = ToolError(f"no {self.argument.removesuffix('_id')} {value} on this customer's account")
        if not ctx.caller.authenticated or not ctx.caller.customer_id:
            raise refusal
        try:
            raw = await ctx.store.raw(self.collection, record_id)
        except ValueError:  # not a valid id at all
            raise refusal from None
        if raw is None or raw.get(self.owner_field) != ctx.caller.customer_id:
            raise refusal


@dataclass(frozen=True)
class Tool:
    name: str
    description: str
    fn: Callable[..., Any]
    params: type[BaseModel]
    context_param: str | None
    requires_auth: bool = False
    """The platform refuses the call unless the caller is verified."""
    identity: bool = False
    """The tool may call ``ToolContext.verify_caller``."""
    side_effect: bool = False
    """The tool changes something: it runs at most once per turn through the side-effect ledger."""
    owns: tuple[Owns, ...] = ()
    """Arguments naming records the verified caller must own; checked by the platform before the call."""

    def spec(self) -> ToolSpec:
        schema = self.params.model_json_schema()
        schema.pop("title", None)
        schema["additionalProperties"] = False
        return ToolSpec(self.name, self.description, schema)

    async def invoke(self, arguments: dict[str, Any], ctx: ToolContext) -> Any:
        if self.requires_auth and not ctx.caller.authenticated:
            raise ToolError(f"{self.name} requires a verified caller; verify the caller first")
        try:
            parsed = self.params.model_validate(arguments)
        except ValidationError as exc:
            raise ToolError(f"invalid arguments for {self.name}: {exc.errors(include_url=False)}") from exc
        for ownership in self.owns:  # whatever the model asked: the platform decides, before the tool runs
            await ownership.check(self.name, parsed, ctx)
        kwargs = dict(parsed)
        if self.context_param:
            kwargs[self.context_param] = ctx
        if inspect.iscoroutinefunction(self.fn):
            return await self.fn(**kwargs)
        # a plain function may block (files, sockets, sleep): run it off the event loop
        result = await asyncio.to_thread(self.fn, **kwargs)
        return await result if inspect.isawaitable(result) else result


class ToolRegistry:
    """A scenario's tools; its ``tools.py`` exposes one as ``registry``."""

    def __init__(self) -> None:
        self._tools: dict[str, Tool] = {}
        self.seeders: list[Seeder] = []
        """Run at every agent start, before it takes turns (see ``seed``)."""

    def seed(self, fn: Seeder) -> Seeder:
        """Register ``async def fn(store)`` to seed the scenario's store at agent start.

        Every replica of every agent with tools runs it, at once if they start together, so it must
        only create what is absent (``Collection.seed``) and never overwrite live data.
        """
        self.seeders.append(fn)
        return fn

    def tool(
        self,
        *,
        name: str | None = None,
        requires_auth: bool = False,
        identity: bool = False,
        side_effect: bool = False,
        owns: Owns | tuple[Owns, ...] = (),
    ) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
        checks = owns if isinstance(owns, tuple) else (owns,)

        def register(fn: Callable[..., Any]) -> Callable[..., Any]:
            t = build_tool(
                fn, name=name, requires_auth=requires_auth or bool(checks), identity=identity,
                side_effect=side_effect, owns=checks,
            )  # fmt: skip
            if t.name in self._tools:
                raise ValueError(f"tool {t.name!r} registered twice")
            self._tools[t.name] = t
            return fn

        return register

    def include(self, other: ToolRegistry, *names: str) -> None:
        """Share tools registered elsewhere (another scenario's registry) under the same names,
        with the other registry's seeders (this scenario's store needs the same data)."""
        self.seeders.extend(s for s in other.seeders if s not in self.seeders)
        for name in names:
            tool = other.get(name)
            if tool is None:
                raise ValueError(f"no tool {name!r} to include (known: {other.names()})")
            self._tools[name] = tool

    def get(self, name: str) -> Tool | None:
        return self._tools.get(name)

    def names(self) -> list[str]:
        return sorted(self._tools)


_TOOL_NAME = re.compile(rf"^[A-Za-z0-9_-]{{1,{MAX_TOOL_NAME}}}$")
"""What model APIs accept as a function name (OpenAI's Chat Completions and Realtime APIs)."""


def _check_name(name: str) -> str:
    if not _TOOL_NAME.match(name):
        raise ValueError(
            f"tool name {name!r}: use 1-{MAX_TOOL_NAME} letters, digits, '_' or '-' (what model APIs accept)"
        )
    if name == CONSULT_TOOL or name.startswith(TRANSFER_PREFIX):
        raise ValueError(f"tool name {name!r} is the platform's ({CONSULT_TOOL}, {TRANSFER_PREFIX}<agent>)")
    return name


def build_tool(
    fn: Callable[..., Any],
    *,
    name: str | None = None,
    requires_auth: bool = False,
    identity: bool = False,
    side_effect: bool = False,
    owns: tuple[Owns, ...] = (),
) -> Tool:
    tool_name = _check_name(name or fn.__name__)
    hints = get_type_hints(fn)
    fields: dict[str, Any] = {}
    context_param = None
    for pname, param in inspect.signature(fn).parameters.items():
        annotation = hints.get(pname, Any)
        if annotation is ToolContext or ToolContext in get_args(annotation):
            context_param = pname
            continue
        if param.kind not in (param.POSITIONAL_OR_KEYWORD, param.KEYWORD_ONLY):  # the tool is called by keyword
            raise ValueError(
                f"tool {tool_name!r}: parameter {param} is {param.kind.description}; the model passes arguments by name"
            )
        default = ... if param.default is inspect.Parameter.empty else param.default
        fields[pname] = (annotation, default)
    params = create_model(f"{tool_name}_params", __config__=ConfigDict(extra="forbid"), **fields)
    dropped = [p for p in fields if p not in params.model_fields]  # pydantic keeps _private and model_config
    if dropped:  # out of the schema: the model could never pass them, and every call would fail
        raise ValueError(f"tool {tool_name!r}: parameter names {dropped} cannot be JSON arguments; rename them")
    doc = inspect.getdoc(fn) or tool_name
    return Tool(tool_name, doc, fn, params, context_param, requires_auth, identity, side_effect, owns)
