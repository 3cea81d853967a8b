"""Switchboard v1 wire schemas: every message that crosses the bus."""

from ._base import SCHEMA_MAJOR, SCHEMA_VERSION, TYPE_PREFIX, WireModel
from .audit import HandoffDecision, HandoffOutcome, TurnRecord
from .consult import ConsultReply, ConsultRequest, ConsultResult, consult_reply_adapter
from .control import ControlAction, ControlRecord
from .conversation import (
    ConversationItem,
    FunctionCallItem,
    FunctionCallOutputItem,
    MessageItem,
    conversation_item_adapter,
)
from .errors import ErrorCode, ErrorReply
from .rollout import Rollout, RolloutState, Track, TrackPin
from .session import SessionState
from .turn import (
    CallerIdentity,
    CancelRequest,
    ClientTool,
    ConsultAsk,
    HandoffRequest,
    Heartbeat,
    TurnDelta,
    TurnReply,
    TurnRequest,
    TurnResult,
    Usage,
    turn_reply_adapter,
)

EXPORTED_MODELS: tuple[type[WireModel], ...] = (
    TurnRequest,
    TurnDelta,
    TurnResult,
    HandoffRequest,
    HandoffDecision,
    ErrorReply,
    SessionState,
    ConsultRequest,
    ConsultResult,
    Heartbeat,
    CancelRequest,
    TurnRecord,
    Rollout,
    ControlRecord,
)
"""Models whose JSON Schema is exported to ``schemas/v1`` and guarded by the compatibility test."""

__all__ = [
    "EXPORTED_MODELS",
    "SCHEMA_MAJOR",
    "SCHEMA_VERSION",
    "TYPE_PREFIX",
    "CallerIdentity",
    "CancelRequest",
    "ClientTool",
    "ConsultAsk",
    "ConsultReply",
    "ConsultRequest",
    "ConsultResult",
    "ControlAction",
    "ControlRecord",
    "ConversationItem",
    "ErrorCode",
    "ErrorReply",
    "FunctionCallItem",
    "FunctionCallOutputItem",
    "HandoffDecision",
    "HandoffOutcome",
    "HandoffRequest",
    "Heartbeat",
    "MessageItem",
    "Rollout",
    "RolloutState",
    "SessionState",
    "Track",
    "TrackPin",
    "TurnDelta",
    "TurnRecord",
    "TurnReply",
    "TurnRequest",
    "TurnResult",
    "Usage",
    "WireModel",
    "consult_reply_adapter",
    "conversation_item_adapter",
    "turn_reply_adapter",
]
