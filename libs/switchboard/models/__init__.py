"""Model providers: OpenAI-compatible Chat Completions and the offline deterministic model."""

from ..agents.tools import ToolSpec
from .base import ModelError, ModelProvider, ModelRequest, ModelResponse, TextSink, ToolCall
from .factory import build_provider, check_realtime_keys, resolve_provider_name
from .offline import OfflineProvider

__all__ = [
    "ModelError",
    "ModelProvider",
    "ModelRequest",
    "ModelResponse",
    "OfflineProvider",
    "TextSink",
    "ToolCall",
    "ToolSpec",
    "build_provider",
    "check_realtime_keys",
    "resolve_provider_name",
]
