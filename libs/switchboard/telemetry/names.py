"""Span names and attribute keys: the one place they are spelled.

Keys follow the OpenTelemetry semantic conventions where one exists (``messaging.*`` for the
NATS hops, ``gen_ai.*`` for model and tool calls, ``error.type``); the rest live under
``switchboard.*``. Span names are ``<component>.<what>``, low-cardinality (never an id in a name).

Content — caller text, model output, tool arguments and results, and the model-written handoff
reason — goes on a span only through :func:`switchboard.telemetry.set_content`, which does nothing
unless ``SWITCHBOARD_TRACE_CONTENT=1``. The keys that hold content are listed in ``CONTENT_KEYS``.
"""

from __future__ import annotations

from typing import Final

# --- span names --------------------------------------------------------------------------------

SPAN_EDGE_RESPONSE: Final = "edge.response"
"""The edge, ``response.create`` to ``response.done`` (one caller turn)."""
SPAN_CONDUCTOR_HOP: Final = "conductor.hop"
"""The conductor's request to one agent within a turn, until its result (or failure)."""
SPAN_AGENT_TURN: Final = "agent.turn"
"""An agent replica running one turn request (model -> tools -> model ...)."""
SPAN_MODEL_CALL: Final = "model.call"
"""One model call (``gen_ai.operation.name`` = ``chat``)."""
SPAN_TOOL_CALL: Final = "tool.call"
"""One tool execution (``gen_ai.operation.name`` = ``execute_tool``)."""
SPAN_HANDOFF: Final = "handoff"
"""A handoff decision: guardrails, and where the caller went."""
SPAN_SUPERVISOR_CONSULT: Final = "supervisor.consult"
"""A front agent consulting a supervisor (chat-supervisor pattern), retries included."""
SPAN_SUPERVISOR_ANSWER: Final = "supervisor.answer"
"""A supervisor replica answering one consult request."""
SPAN_UPSTREAM_RESPONSE: Final = "upstream.response"
"""One response of the upstream OpenAI Realtime model (the upstream agent's turn, at the edge)."""
UPSTREAM_RESPONSE_ID: Final = "switchboard.upstream.response_id"
UPSTREAM_STATUS: Final = "switchboard.upstream.status"
SPAN_RETRY_ATTEMPT: Final = "retry.attempt"
"""One attempt of a retried call (``switchboard.retry.attempt`` is 1-based)."""

# --- messaging (OTel semconv) ------------------------------------------------------------------

MESSAGING_SYSTEM: Final = "messaging.system"
MESSAGING_SYSTEM_NATS: Final = "nats"
MESSAGING_DESTINATION_NAME: Final = "messaging.destination.name"
"""The subject (only low-cardinality ones: request subjects, never reply inboxes)."""
MESSAGING_OPERATION_TYPE: Final = "messaging.operation.type"
MESSAGING_OPERATION_SEND: Final = "send"
MESSAGING_OPERATION_PROCESS: Final = "process"
MESSAGING_OPERATION_NAME: Final = "messaging.operation.name"
"""The system-specific operation: ``publish`` for a send, ``process`` for a handler."""
MESSAGING_MESSAGE_ID: Final = "messaging.message.id"
MESSAGING_CONSUMER_GROUP_NAME: Final = "messaging.consumer.group.name"
"""The NATS queue group of the consumer."""
MESSAGING_MESSAGE_BODY_SIZE: Final = "messaging.message.body.size"

# --- GenAI (OTel semconv) ----------------------------------------------------------------------

GEN_AI_SYSTEM: Final = "gen_ai.system"
"""``openai``, or ``switchboard.offline`` for the offline deterministic provider."""
GEN_AI_PROVIDER_NAME: Final = "gen_ai.provider.name"
"""The newer semconv name of ``gen_ai.system``; set both while backends migrate."""
GEN_AI_OPERATION_NAME: Final = "gen_ai.operation.name"
GEN_AI_OPERATION_CHAT: Final = "chat"
GEN_AI_OPERATION_EXECUTE_TOOL: Final = "execute_tool"
GEN_AI_OPERATION_INVOKE_AGENT: Final = "invoke_agent"
GEN_AI_REQUEST_MODEL: Final = "gen_ai.request.model"
GEN_AI_RESPONSE_MODEL: Final = "gen_ai.response.model"
GEN_AI_RESPONSE_FINISH_REASONS: Final = "gen_ai.response.finish_reasons"
GEN_AI_USAGE_INPUT_TOKENS: Final = "gen_ai.usage.input_tokens"
GEN_AI_USAGE_OUTPUT_TOKENS: Final = "gen_ai.usage.output_tokens"
GEN_AI_AGENT_NAME: Final = "gen_ai.agent.name"
GEN_AI_TOOL_NAME: Final = "gen_ai.tool.name"
GEN_AI_TOOL_CALL_ID: Final = "gen_ai.tool.call.id"
GEN_AI_CONVERSATION_ID: Final = "gen_ai.conversation.id"
"""The session id, on ``gen_ai`` spans (as the semconv asks)."""
GEN_AI_INPUT_MESSAGES: Final = "gen_ai.input.messages"
"""Content: the messages sent to the model (JSON)."""
GEN_AI_OUTPUT_MESSAGES: Final = "gen_ai.output.messages"
"""Content: the model's answer (JSON)."""
GEN_AI_TOOL_CALL_ARGUMENTS: Final = "gen_ai.tool.call.arguments"
"""Content: a tool call's arguments (JSON)."""
GEN_AI_TOOL_CALL_RESULT: Final = "gen_ai.tool.call.result"
"""Content: a tool call's result (JSON)."""

# --- general (OTel semconv) --------------------------------------------------------------------

ERROR_TYPE: Final = "error.type"
"""Low-cardinality class of a failure: an ``ErrorCode`` value, an exception class name, ``timeout``."""
SERVICE_NAME: Final = "service.name"
SERVICE_NAMESPACE: Final = "service.namespace"
SERVICE_INSTANCE_ID: Final = "service.instance.id"

# --- switchboard.* -----------------------------------------------------------------------------

SESSION_ID: Final = "switchboard.session.id"
TURN_ID: Final = "switchboard.turn.id"
RESPONSE_ID: Final = "switchboard.response.id"
AGENT: Final = "switchboard.agent"
"""The agent that runs or is called (same value as ``gen_ai.agent.name`` on agent spans)."""
REPLICA: Final = "switchboard.replica"
HOP: Final = "switchboard.hop"
"""0-based index of the hop within the caller turn."""

HANDOFF_FROM: Final = "switchboard.handoff.from"
HANDOFF_TO: Final = "switchboard.handoff.to"
"""Where the caller went (the final target, after guardrails)."""
HANDOFF_REQUESTED: Final = "switchboard.handoff.requested"
"""The target the model asked for (may be unknown to the scenario)."""
HANDOFF_REASON: Final = "switchboard.handoff.reason"
"""Content (model-written): set only through ``set_content``."""
HANDOFF_DEPTH: Final = "switchboard.handoff.depth"
HANDOFF_OUTCOME: Final = "switchboard.handoff.outcome"
"""A ``HandoffOutcome`` value: ``accepted``, ``refused_graph``, ``unavailable`` ..."""

RETRY_ATTEMPT: Final = "switchboard.retry.attempt"
"""1-based attempt number."""
RETRY_REASON: Final = "switchboard.retry.reason"
BREAKER_TARGET: Final = "switchboard.breaker.target"
BREAKER_STATE: Final = "switchboard.breaker.state"
"""``closed``, ``half_open`` or ``open``."""

CONSULT_ID: Final = "switchboard.consult.id"
CONSULT_SUPERVISOR: Final = "switchboard.consult.supervisor"
CONSULT_OUTCOME: Final = "switchboard.consult.outcome"
CONSULT_ATTEMPTS: Final = "switchboard.consult.attempts"
CONSULT_NOTE: Final = "switchboard.consult.note"
"""Content (model-written note to the supervisor): set only through ``set_content``."""

CONTENT_KEYS: Final = frozenset(
    {
        GEN_AI_INPUT_MESSAGES,
        GEN_AI_OUTPUT_MESSAGES,
        GEN_AI_TOOL_CALL_ARGUMENTS,
        GEN_AI_TOOL_CALL_RESULT,
        HANDOFF_REASON,
        CONSULT_NOTE,
    }
)
"""Attribute keys that carry conversation content (gated by ``SWITCHBOARD_TRACE_CONTENT``)."""
