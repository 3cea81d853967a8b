"""Test doubles shipped with Switchboard."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .kube_api import ScriptedKubeAPI
    from .scripted_openai import ScriptedModeration, ScriptedOpenAIServer, ScriptedReply
    from .scripted_realtime import ScriptedRealtimeServer, ScriptedResponse

__all__ = [
    "ScriptedKubeAPI",
    "ScriptedModeration",
    "ScriptedOpenAIServer",
    "ScriptedRealtimeServer",
    "ScriptedReply",
    "ScriptedResponse",
]


def __getattr__(name: str) -> Any:
    # Imported lazily so ``python -m switchboard.testing.scripted_openai`` runs without a warning.
    if name == "ScriptedKubeAPI":
        from . import kube_api

        return kube_api.ScriptedKubeAPI
    if name in ("ScriptedRealtimeServer", "ScriptedResponse"):
        from . import scripted_realtime

        return getattr(scripted_realtime, name)
    if name in __all__:
        from . import scripted_openai

        return getattr(scripted_openai, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
