"""Every server event the edge sends, as a ``TypedDict``: mypy checks each event's fields where it is built.

Static types only. A call site writes its event as a dict literal where a ``ServerEvent`` is expected
(``session.send({...})``): mypy picks the ``TypedDict`` by its ``type`` literal and checks every key and value.
At runtime it stays a plain dict (no validation, no constructor call: a ``TypedDict`` class call costs ~0.4 us
more per event than the literal), encoded with orjson. The one exception is the upstream mode's relay of
the upstream's own events (``upstream/link.py``), whose type is known at runtime only (a ``cast``).

Each GA event's fields and their required-ness are held to the official ``openai.types.realtime`` model of
the same ``type`` by ``tests/unit/test_server_events.py``; ``switchboard.*`` events are Switchboard's
platform events (opt-in, see docs/protocol.md).

Items, responses and sessions are ``dict[str, Any]``: their shapes are built (and checked against the
official models by the system contract test) in ``protocol.py``, ``items.py`` and ``voice.py``.
"""

# No ``from __future__ import annotations``: the contract test reads ``__required_keys__``, which Python 3.11
# computes wrongly from string annotations.
from typing import Any, Literal, NotRequired, TypedDict

# --- nested objects -----------------------------------------------------------------------------------------


class ErrorBody(TypedDict):
    """The ``error`` of an ``error`` event."""

    type: str
    message: str
    code: NotRequired[str | None]
    param: NotRequired[str | None]
    event_id: NotRequired[str | None]
    """The client event this error answers."""


class TranscriptionError(TypedDict, total=False):
    type: str
    code: str
    message: str
    param: str


class ContentPart(TypedDict, total=False):
    """A content part of an output item (``text`` carries ``text``; ``audio`` carries ``transcript``)."""

    type: Literal["text", "audio"]
    text: str
    transcript: str
    audio: str


class DurationUsage(TypedDict):
    type: Literal["duration"]
    seconds: float


class OutputRef(TypedDict):
    """Where an output item sits: its response and index (``**``-expanded into item events)."""

    response_id: str
    output_index: int


class PartRef(OutputRef):
    """An output item's content: its response, index and item."""

    item_id: str


# --- session ------------------------------------------------------------------------------------------------


class SessionCreated(TypedDict):
    type: Literal["session.created"]
    event_id: str
    session: dict[str, Any]


class SessionUpdated(TypedDict):
    type: Literal["session.updated"]
    event_id: str
    session: dict[str, Any]


class Error(TypedDict):
    type: Literal["error"]
    event_id: str
    error: ErrorBody


# --- conversation items -------------------------------------------------------------------------------------


class ConversationItemAdded(TypedDict):
    type: Literal["conversation.item.added"]
    event_id: str
    item: dict[str, Any]
    previous_item_id: NotRequired[str | None]


class ConversationItemDone(TypedDict):
    type: Literal["conversation.item.done"]
    event_id: str
    item: dict[str, Any]
    previous_item_id: NotRequired[str | None]


class ConversationItemRetrieved(TypedDict):
    type: Literal["conversation.item.retrieved"]
    event_id: str
    item: dict[str, Any]


class ConversationItemDeleted(TypedDict):
    type: Literal["conversation.item.deleted"]
    event_id: str
    item_id: str


class ConversationItemTruncated(TypedDict):
    type: Literal["conversation.item.truncated"]
    event_id: str
    item_id: str
    content_index: int
    audio_end_ms: int


class InputAudioTranscriptionDelta(TypedDict):
    type: Literal["conversation.item.input_audio_transcription.delta"]
    event_id: str
    item_id: str
    content_index: NotRequired[int | None]
    delta: NotRequired[str | None]
    logprobs: NotRequired[list[dict[str, Any]] | None]


class InputAudioTranscriptionCompleted(TypedDict):
    type: Literal["conversation.item.input_audio_transcription.completed"]
    event_id: str
    item_id: str
    content_index: int
    transcript: str
    usage: DurationUsage
    languages: NotRequired[list[dict[str, Any]] | None]
    logprobs: NotRequired[list[dict[str, Any]] | None]


class InputAudioTranscriptionFailed(TypedDict):
    type: Literal["conversation.item.input_audio_transcription.failed"]
    event_id: str
    item_id: str
    content_index: int
    error: TranscriptionError


# --- the input audio buffer ---------------------------------------------------------------------------------


class InputAudioBufferCleared(TypedDict):
    type: Literal["input_audio_buffer.cleared"]
    event_id: str


class InputAudioBufferCommitted(TypedDict):
    type: Literal["input_audio_buffer.committed"]
    event_id: str
    item_id: str
    previous_item_id: NotRequired[str | None]


class InputAudioBufferSpeechStarted(TypedDict):
    type: Literal["input_audio_buffer.speech_started"]
    event_id: str
    audio_start_ms: int
    item_id: str


class InputAudioBufferSpeechStopped(TypedDict):
    type: Literal["input_audio_buffer.speech_stopped"]
    event_id: str
    audio_end_ms: int
    item_id: str


class InputAudioBufferTimeoutTriggered(TypedDict):
    type: Literal["input_audio_buffer.timeout_triggered"]
    event_id: str
    audio_start_ms: int
    audio_end_ms: int
    item_id: str


# --- responses ----------------------------------------------------------------------------------------------


class ResponseCreated(TypedDict):
    type: Literal["response.created"]
    event_id: str
    response: dict[str, Any]


class ResponseDone(TypedDict):
    type: Literal["response.done"]
    event_id: str
    response: dict[str, Any]


class ResponseOutputItemAdded(TypedDict):
    type: Literal["response.output_item.added"]
    event_id: str
    response_id: str
    output_index: int
    item: dict[str, Any]


class ResponseOutputItemDone(TypedDict):
    type: Literal["response.output_item.done"]
    event_id: str
    response_id: str
    output_index: int
    item: dict[str, Any]


class ResponseContentPartAdded(TypedDict):
    type: Literal["response.content_part.added"]
    event_id: str
    response_id: str
    output_index: int
    item_id: str
    content_index: int
    part: ContentPart


class ResponseContentPartDone(TypedDict):
    type: Literal["response.content_part.done"]
    event_id: str
    response_id: str
    output_index: int
    item_id: str
    content_index: int
    part: ContentPart


class ResponseOutputTextDelta(TypedDict):
    type: Literal["response.output_text.delta"]
    event_id: str
    response_id: str
    output_index: int
    item_id: str
    content_index: int
    delta: str


class ResponseOutputTextDone(TypedDict):
    type: Literal["response.output_text.done"]
    event_id: str
    response_id: str
    output_index: int
    item_id: str
    content_index: int
    text: str


class ResponseOutputAudioDelta(TypedDict):
    type: Literal["response.output_audio.delta"]
    event_id: str
    response_id: str
    output_index: int
    item_id: str
    content_index: int
    delta: str
    """Base64 audio in the session's output format."""


class ResponseOutputAudioDone(TypedDict):
    type: Literal["response.output_audio.done"]
    event_id: str
    response_id: str
    output_index: int
    item_id: str
    content_index: int


class ResponseOutputAudioTranscriptDelta(TypedDict):
    type: Literal["response.output_audio_transcript.delta"]
    event_id: str
    response_id: str
    output_index: int
    item_id: str
    content_index: int
    delta: str


class ResponseOutputAudioTranscriptDone(TypedDict):
    type: Literal["response.output_audio_transcript.done"]
    event_id: str
    response_id: str
    output_index: int
    item_id: str
    content_index: int
    transcript: str


class ResponseFunctionCallArgumentsDelta(TypedDict):
    type: Literal["response.function_call_arguments.delta"]
    event_id: str
    response_id: str
    output_index: int
    item_id: str
    call_id: str
    delta: str


class ResponseFunctionCallArgumentsDone(TypedDict):
    type: Literal["response.function_call_arguments.done"]
    event_id: str
    response_id: str
    output_index: int
    item_id: str
    call_id: str
    name: str
    arguments: str


# --- Switchboard's platform events (opt-in) -----------------------------------------------------------------


class SwitchboardSession(TypedDict):
    type: Literal["switchboard.session"]
    event_id: str
    session_id: str
    resumed: bool
    active_agent: str
    history_items: int


SwitchboardHandoff = TypedDict(
    "SwitchboardHandoff",
    {
        "type": Literal["switchboard.handoff"], "event_id": str, "response_id": str,
        "from": str, "to": str, "requested": str, "reason": str, "outcome": str, "detail": str, "depth": int,
    },
)  # fmt: skip
"""A handoff decision in a response (functional syntax: ``from`` is a Python keyword)."""


class SwitchboardReconnect(TypedDict):
    type: Literal["switchboard.reconnect"]
    event_id: str
    reason: str
    session_id: str


ServerEvent = (
    SessionCreated | SessionUpdated | Error
    | ConversationItemAdded | ConversationItemDone | ConversationItemRetrieved | ConversationItemDeleted
    | ConversationItemTruncated | InputAudioTranscriptionDelta | InputAudioTranscriptionCompleted
    | InputAudioTranscriptionFailed
    | InputAudioBufferCleared | InputAudioBufferCommitted | InputAudioBufferSpeechStarted
    | InputAudioBufferSpeechStopped | InputAudioBufferTimeoutTriggered
    | ResponseCreated | ResponseDone | ResponseOutputItemAdded | ResponseOutputItemDone | ResponseContentPartAdded
    | ResponseContentPartDone | ResponseOutputTextDelta | ResponseOutputTextDone | ResponseOutputAudioDelta
    | ResponseOutputAudioDone | ResponseOutputAudioTranscriptDelta | ResponseOutputAudioTranscriptDone
    | ResponseFunctionCallArgumentsDelta | ResponseFunctionCallArgumentsDone
    | SwitchboardSession | SwitchboardHandoff | SwitchboardReconnect
)  # fmt: skip
"""Any event the edge sends."""
