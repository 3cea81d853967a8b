"""The offline deterministic model: scripted rules instead of an LLM, so ``make run`` needs no key.

It is not a language model. Each agent's YAML declares ordered rules; a rule matches on
keywords in the caller's latest message, on its *intent* (the declared intent whose example lines
it is most similar to, see ``switchboard.intents``), on *slots* (values pulled from what the caller
said by the scenario's regexes, or present in the handoff context), on context keys, on whether the
caller is verified, or on the result of the tool that just returned. The first matching rule
either calls a tool (including ``transfer_to_<agent>`` handoffs) or says a templated reply.
Templates use ``{slots.x}``, ``{context.x}``, ``{result.x}``, ``{caller.x}`` and ``{user.text}``. It speaks
through the same interface as a real provider, so the agent loop runs the same code either way.
"""

from __future__ import annotations

import asyncio
import functools
import json
import re
import string
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from ..agents.config import TRANSFER_PREFIX, OfflineRule, OfflineScript
from ..intents import IntentMatch, IntentMatcher, get_embedder
from ..schemas import ConversationItem, FunctionCallItem, FunctionCallOutputItem, MessageItem
from .base import ModelRequest, ModelResponse, TextSink, ToolCall

_FORMATTER = string.Formatter()
SlotFinder = Callable[[str], tuple[tuple[str, str], ...]]
"""A caller line -> the (slot, value) pairs the scenario's slot patterns find in it, in pattern order."""
SLOT_CACHE_SIZE = 4096
"""Caller lines whose slots an offline provider remembers (a few hundred conversations' worth)."""
_WHOLE_FIELD = re.compile(r"^\{([a-z_]+)\.([A-Za-z0-9_]+)\}$")


class _Missing(Exception):
    pass


class _Namespace:
    def __init__(self, values: Mapping[str, Any]) -> None:
        self._values = values

    def __getattr__(self, key: str) -> Any:
        value = self._values.get(key)
        if value is None or value == "":
            raise _Missing(key)
        return value


class _View:
    """What the rules look at, derived from the request."""

    def __init__(self, request: ModelRequest, slots_in: SlotFinder, matcher: IntentMatcher | None) -> None:
        items = request.items
        user_texts = [i.text for i in items if isinstance(i, MessageItem) and i.role == "user"]
        self._user_texts = user_texts
        self.user_raw = user_texts[-1] if user_texts else ""
        self.user_text = self.user_raw.lower()
        self.slots: dict[str, Any] = {k: v for k, v in request.context.items() if isinstance(v, str | int | float)}
        self.said: set[str] = set()
        """Slots found in the latest message itself."""
        latest = len(user_texts) - 1
        for n, text in enumerate(user_texts):
            for name, value in slots_in(text):
                self.slots[name] = value
                if n == latest:
                    self.said.add(name)
        self._matcher = matcher
        self._intent: tuple[IntentMatch | None] | None = None  # computed at most once, if a rule asks
        self.context = request.context
        self.authenticated = request.caller_authenticated
        self.tool, self.result = _last_tool_result(items)
        self.call_count = sum(isinstance(i, FunctionCallItem) for i in items)

    @functools.cached_property
    def all_user_text(self) -> str:
        """Everything the caller said, lower-cased (built only for a rule that looks at it)."""
        return " ".join(self._user_texts).lower()

    async def intent(self) -> IntentMatch | None:
        """The latest message's intent. A backend that releases the GIL (the embedding model) runs
        in a worker thread, so the other turns this process serves keep going meanwhile."""
        if self._intent is None:
            matcher, text = self._matcher, self.user_raw
            if matcher is None:
                self._intent = (None,)
            elif (seen := matcher.cached(text))[0]:
                self._intent = (seen[1],)  # scored before: no thread hop
            elif matcher.embedder.offload:
                self._intent = (await asyncio.to_thread(matcher.match, text),)
            else:
                self._intent = (matcher.match(text),)
        return self._intent[0]

    def namespaces(self) -> dict[str, _Namespace]:
        result = self.result if isinstance(self.result, dict) else {}
        return {
            "slots": _Namespace(self.slots),
            "context": _Namespace(self.context),
            "result": _Namespace(result),
            "caller": _Namespace({"authenticated": self.authenticated}),
            "user": _Namespace({"text": self.user_raw}),
        }


def _last_tool_result(items: Sequence[ConversationItem]) -> tuple[str | None, Any]:
    if not items or not isinstance(items[-1], FunctionCallOutputItem):
        return None, None
    out = items[-1]
    name = next(
        (i.name for i in reversed(items) if isinstance(i, FunctionCallItem) and i.call_id == out.call_id),
        None,
    )
    if name is None or name.startswith(TRANSFER_PREFIX):  # a handoff's answer, not this agent's tool
        return None, None
    try:
        return name, json.loads(out.output)
    except ValueError:
        return name, out.output


def _render(template: str, ns: Mapping[str, _Namespace]) -> Any:
    whole = _WHOLE_FIELD.match(template)
    if whole:  # a lone field keeps its type (numbers stay numbers)
        return getattr(ns[whole.group(1)], whole.group(2))
    return _FORMATTER.vformat(template, (), ns)


def _render_args(args: Mapping[str, Any], ns: Mapping[str, _Namespace]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in args.items():
        optional = key.endswith("?")
        name = key.rstrip("?")
        try:
            out[name] = _render(value, ns) if isinstance(value, str) else value
        except _Missing:
            if not optional:
                raise
    return out


def _matches(rule: OfflineRule, view: _View) -> bool:
    if (rule.after_tool is None) != (view.tool is None) or rule.after_tool not in (None, view.tool):
        return False
    if rule.when_user_says and not any(w.lower() in view.user_text for w in rule.when_user_says):
        return False
    if rule.when_conversation_says and not any(w.lower() in view.all_user_text for w in rule.when_conversation_says):
        return False
    if any(view.slots.get(s) in (None, "") for s in rule.when_slots):
        return False
    if any(s not in view.said for s in rule.when_slots_said):
        return False
    if any(not view.context.get(k) for k in rule.when_context):
        return False
    if rule.when_authenticated is not None and rule.when_authenticated != view.authenticated:
        return False
    result = view.result if isinstance(view.result, dict) else {}
    return all(result.get(k) == v for k, v in rule.when_result.items())


async def _intent_matches(rule: OfflineRule, view: _View) -> bool:
    """Tested after every other condition of the rule: the only one that costs more than a lookup."""
    if not rule.when_intent:
        return True
    intent = await view.intent()
    return intent is not None and intent.intent in rule.when_intent


class OfflineProvider:
    """Deterministic rule-following model for one agent."""

    def __init__(
        self, script: OfflineScript, slot_patterns: Mapping[str, str], *, delay_s: float = 0.0, backend: str = "auto"
    ) -> None:
        self._script = script
        self.delay_s = delay_s
        """Simulated model latency per call (``model.settings.delay_s``), for chaos tests and benchmarks."""
        patterns = {k: re.compile(v) for k, v in slot_patterns.items()}  # (?i) in a pattern if wanted

        @functools.lru_cache(maxsize=SLOT_CACHE_SIZE)
        def slots_in(text: str) -> tuple[tuple[str, str], ...]:
            found = ((name, pattern, pattern.search(text)) for name, pattern in patterns.items())
            return tuple((name, m.group(1) if p.groups else m.group(0)) for name, p, m in found if m)

        self.slots_in: SlotFinder = slots_in
        """The slots each caller line holds: every turn looks at the whole conversation's lines again, so
        each line is searched once (a 40-item history cost the patterns' 60 searches per turn)."""
        self.matcher = IntentMatcher(script.intents, get_embedder(backend)) if script.intents else None
        """Matches caller lines to the declared intents; built at start so no turn pays for it."""

    @property
    def backend_name(self) -> str:
        """The similarity backend in use, or ``keywords`` when the agent declares no intents."""
        return self.matcher.embedder.name if self.matcher is not None else "keywords"

    async def complete(self, request: ModelRequest, on_text: TextSink) -> ModelResponse:
        if self.delay_s:
            await asyncio.sleep(self.delay_s)
        view = _View(request, self.slots_in, self.matcher)
        ns = view.namespaces()
        for rule in self._script.rules:
            if not _matches(rule, view) or not await _intent_matches(rule, view):
                continue
            try:
                if rule.call is not None and request.tool_choice == "none":
                    continue
                if rule.call is not None:
                    name = str(_render(rule.call, ns))
                    args = _render_args(rule.args, ns)
                    call = ToolCall(f"call_off{view.call_count}", name, json.dumps(args))
                    return ModelResponse(tool_calls=(call,))
                text = str(_render(rule.say or "", ns))
            except _Missing:
                continue
            return await _speak(text, on_text, request.max_output_tokens)
        return await _speak(self._script.default, on_text, request.max_output_tokens)

    async def aclose(self) -> None:
        return None


async def _speak(text: str, on_text: TextSink, max_tokens: int | None = None) -> ModelResponse:
    """Say ``text`` word by word (a word is a token), at most ``max_tokens`` of them."""
    words = re.findall(r"\S+\s*", text)[:max_tokens]
    text = "".join(words) if max_tokens is not None else text
    for word in words:
        await on_text(word)
    return ModelResponse(text=text, output_tokens=len(words))
