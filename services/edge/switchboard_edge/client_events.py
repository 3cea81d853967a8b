"""Typed GA Realtime client events, strict: an unknown or ill-typed field is an error naming the field.

Shapes follow the installed ``openai.types.realtime`` models (``*_event.py``, ``realtime_session_create_request``,
``realtime_response_create_params``). Fields the edge accepts but does not apply (prompt, reasoning, ...)
are typed loosely (any JSON object) so a standard client's ``session.update`` is never refused; ``audio`` is
checked by ``voice.py`` when a client sets it (the voice extra is imported only then).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated, Any, ClassVar, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Discriminator, Field, Tag, TypeAdapter


def _not_root(item_id: str) -> str:
    if item_id == "root":
        raise ValueError("'root' is reserved: previous_item_id 'root' means the start of the conversation")
    return item_id


ItemId = Annotated[str, Field(max_length=64, pattern=r"^[A-Za-z0-9_-]+$"), AfterValidator(_not_root)]
"""A client's item id; not ``root``, which ``previous_item_id`` reserves for the start of the conversation."""
OutputTokens = Annotated[int, Field(strict=True, ge=1, le=4096)]
"""GA ``max_output_tokens``: an integer from 1 to 4096 (a JSON number, not a string or a boolean), or ``"inf"``."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class _ClientEvent(_Strict):
    event_id: str | None = Field(None, max_length=128)


# --- items ------------------------------------------------------------------------------------------


class InputText(_Strict):
    type: Literal["input_text"]
    text: str


class InputAudio(_Strict):
    """Caller audio inside ``conversation.item.create`` (base64 in the session's input format)."""

    type: Literal["input_audio"]
    audio: str | None = None
    transcript: str | None = None
    """Ignored on input: the edge transcribes the audio itself."""

    text: ClassVar[str] = ""
    """Audio has no text until the edge transcribes it."""


class OutputText(_Strict):
    type: Literal["output_text", "text"]
    text: str


class _ItemBase(_Strict):
    id: ItemId | None = None
    object: Literal["realtime.item"] | None = None
    status: Literal["completed", "incomplete", "in_progress"] | None = None


class _Message(_ItemBase):
    type: Literal["message"]
    content: Sequence[InputText | InputAudio | OutputText]

    @property
    def text(self) -> str:
        return "".join(part.text for part in self.content)


UserContent = Annotated[InputText | InputAudio, Field(discriminator="type")]


class UserMessage(_Message):
    role: Literal["user"]
    content: list[UserContent] = Field(min_length=1)

    @property
    def audio(self) -> list[InputAudio]:
        return [part for part in self.content if isinstance(part, InputAudio)]


class SystemMessage(_Message):
    """GA ``RealtimeConversationItemSystemMessage``: text only."""

    role: Literal["system"]
    content: list[InputText] = Field(min_length=1)


class AssistantMessage(_Message):
    role: Literal["assistant"]
    content: list[OutputText] = Field(min_length=1)


class FunctionCall(_ItemBase):
    type: Literal["function_call"]
    call_id: str = Field(min_length=1, max_length=128)
    name: str = Field(min_length=1, max_length=128)
    arguments: str


class FunctionCallOutput(_ItemBase):
    type: Literal["function_call_output"]
    call_id: str = Field(min_length=1, max_length=128)
    output: str


def _item_tag(value: Any) -> str | None:
    if isinstance(value, BaseModel):
        value = value.model_dump()
    if not isinstance(value, dict):
        return None
    if value.get("type") == "message":
        role = value.get("role")
        return "assistant_message" if role == "assistant" else "system_message" if role == "system" else "user_message"
    kind = value.get("type")
    return kind if kind in ("function_call", "function_call_output") else None


ClientItem = Annotated[
    Annotated[UserMessage, Tag("user_message")] | Annotated[SystemMessage, Tag("system_message")]
    | Annotated[AssistantMessage, Tag("assistant_message")]
    | Annotated[FunctionCall, Tag("function_call")] | Annotated[FunctionCallOutput, Tag("function_call_output")],
    Discriminator(_item_tag, custom_error_type="invalid_item", custom_error_message="unknown item type"),
]  # fmt: skip
"""Tagged by ``type`` and, for messages, ``role``."""

TAGS = frozenset({
    "user_message", "system_message", "assistant_message", "function_call", "function_call_output", "function",
    "input_text", "input_audio",
})  # fmt: skip
"""Union tags pydantic puts in an error's location; not field names, so dropped from ``param``."""

# --- tools ------------------------------------------------------------------------------------------


class FunctionTool(_Strict):
    type: Literal["function"] = "function"
    name: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_-]+$")
    description: str | None = None
    parameters: dict[str, Any] | None = None


class ToolChoiceFunction(_Strict):
    type: Literal["function"]
    name: str


ToolChoice = Literal["none", "auto", "required"] | ToolChoiceFunction


# --- events -----------------------------------------------------------------------------------------


class _ModelOptions(_Strict):
    """What a session and a single response both configure (GA)."""

    audio: dict[str, Any] | None = None
    instructions: str | None = None
    max_output_tokens: OutputTokens | Literal["inf"] | None = None
    output_modalities: list[Literal["text", "audio"]] | None = None
    parallel_tool_calls: bool | None = None
    prompt: dict[str, Any] | None = None
    reasoning: dict[str, Any] | None = None
    tool_choice: ToolChoice | None = None
    tools: list[FunctionTool] | None = None


class SessionConfig(_ModelOptions):
    """``session.update``'s session (GA ``RealtimeSessionCreateRequest``)."""

    type: Literal["realtime"] = "realtime"
    include: list[str] | None = None
    model: str | None = None
    tracing: Literal["auto"] | dict[str, Any] | None = None
    truncation: Literal["auto", "disabled"] | dict[str, Any] | None = None
    metadata: dict[str, str] | None = None
    """Not in the GA session object; kept because earlier Switchboard clients send it."""


class ResponseOptions(_ModelOptions):
    """``response.create``'s response (GA ``RealtimeResponseCreateParams``)."""

    conversation: Literal["auto", "none"] | None = None
    input: list[ClientItem] | None = None
    metadata: dict[Annotated[str, Field(max_length=64)], Annotated[str, Field(max_length=512)]] | None = Field(
        None, max_length=16
    )
    """GA ``Metadata``: up to 16 pairs, keys up to 64 characters, values up to 512."""


class SessionUpdate(_ClientEvent):
    type: Literal["session.update"]
    session: SessionConfig


class ConversationItemCreate(_ClientEvent):
    type: Literal["conversation.item.create"]
    previous_item_id: str | None = None
    item: ClientItem


class ConversationItemRetrieve(_ClientEvent):
    type: Literal["conversation.item.retrieve"]
    item_id: str


class ConversationItemDelete(_ClientEvent):
    type: Literal["conversation.item.delete"]
    item_id: str


class ConversationItemTruncate(_ClientEvent):
    type: Literal["conversation.item.truncate"]
    item_id: str
    content_index: int = Field(ge=0)
    audio_end_ms: int = Field(ge=0)


class ResponseCreate(_ClientEvent):
    type: Literal["response.create"]
    response: ResponseOptions | None = None


class ResponseCancel(_ClientEvent):
    type: Literal["response.cancel"]
    response_id: str | None = None


class InputAudioBufferAppend(_ClientEvent):
    type: Literal["input_audio_buffer.append"]
    audio: str
    """Base64 audio in the session's ``audio.input.format``."""


class InputAudioBufferCommit(_ClientEvent):
    type: Literal["input_audio_buffer.commit"]


class InputAudioBufferClear(_ClientEvent):
    type: Literal["input_audio_buffer.clear"]


ClientEvent = Annotated[
    SessionUpdate | ConversationItemCreate | ConversationItemRetrieve | ConversationItemDelete
    | ConversationItemTruncate | ResponseCreate | ResponseCancel | InputAudioBufferAppend | InputAudioBufferCommit
    | InputAudioBufferClear,
    Field(discriminator="type"),
]  # fmt: skip
client_event_adapter: TypeAdapter[ClientEvent] = TypeAdapter(ClientEvent)

SUPPORTED = (
    "session.update", "conversation.item.create", "conversation.item.retrieve", "conversation.item.delete",
    "conversation.item.truncate", "response.create", "response.cancel", "input_audio_buffer.append",
    "input_audio_buffer.commit", "input_audio_buffer.clear",
)  # fmt: skip
