"""Choosing a similarity backend: by name, or ``auto`` = the best one installed. One instance per
process, so every agent a process serves shares one loaded model."""

from __future__ import annotations

import logging
import threading
import time
from typing import Literal, get_args

from ..errors import ConfigError
from ._base import Embedder
from ._errors import EmbedderUnavailable
from ._minilm import MiniLMEmbedder
from ._ngrams import NgramEmbedder

log = logging.getLogger(__name__)

BackendName = Literal["auto", "minilm", "ngram"]
BACKENDS: tuple[str, ...] = get_args(BackendName)
_loaded: dict[str, Embedder] = {}
_lock = threading.Lock()


def get_embedder(name: str = "auto") -> Embedder:
    """The named backend (loaded once per process). ``auto`` prefers ``minilm`` and falls back to
    ``ngram`` when the embeddings extra is not installed; an explicit ``minilm`` raises instead."""
    if name not in BACKENDS:
        choices = ", ".join(BACKENDS)
        raise ConfigError(f"SWITCHBOARD_INTENT_BACKEND: unknown intent backend {name!r} (choose from {choices})")
    with _lock:
        if name != "auto":
            return _load(name)
        chosen = _loaded.get("auto")
        if chosen is None:
            try:
                chosen = _load("minilm")
            except EmbedderUnavailable as exc:  # not installed: as documented; installed but damaged: say so
                level = logging.WARNING if exc.damaged else logging.INFO
                log.log(level, "intent backend fallback", extra={"backend": "ngram", "reason": str(exc)})
                chosen = _load("ngram")
            _loaded["auto"] = chosen  # decided once per process: no retried import, no repeated log
        return chosen


def _load(name: str) -> Embedder:
    embedder = _loaded.get(name)
    if embedder is None:
        started = time.perf_counter()
        embedder = MiniLMEmbedder() if name == "minilm" else NgramEmbedder()
        _loaded[name] = embedder
        log.info(
            "intent backend loaded", extra={"backend": name, "load_ms": round(1000 * (time.perf_counter() - started))}
        )
    return embedder
