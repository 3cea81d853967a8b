"""Voice activity detection with the Silero VAD ONNX model that ships inside faster-whisper."""

from __future__ import annotations

from functools import cache
from pathlib import Path
from typing import Any

import numpy as np

from .errors import ModelUnavailableError
from .formats import PCM_RATE, Pcm16, Resampler, pcm16_to_float
from .interfaces import VadEvent
from .semantic_vad import SemanticTurnDetector, SemanticVadConfig, TurnDetection
from .turn_detection import ServerVadConfig, TurnDetector

RATE = 16_000
FRAME = 512  # 32 ms at 16 kHz, the model's frame
CONTEXT = 64  # samples of the previous frame the model sees


def model_path() -> Path:
    try:
        from faster_whisper.utils import get_assets_path
    except ImportError as exc:
        raise ModelUnavailableError("Silero VAD needs the voice extra: pip install 'switchboard[voice]'") from exc
    return Path(get_assets_path()) / "silero_vad_v6.onnx"


@cache
def _session() -> Any:
    """One ONNX session per process, shared by every stream (state lives in each stream)."""
    import onnxruntime

    opts = onnxruntime.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.inter_op_num_threads = 1
    opts.log_severity_level = 4
    return onnxruntime.InferenceSession(str(model_path()), sess_options=opts, providers=["CPUExecutionProvider"])


class SileroVad:
    """A :class:`~switchboard.voice.interfaces.VoiceActivityDetector` for one audio stream."""

    def __init__(self, config: TurnDetection | None = None) -> None:
        self.detector = SemanticTurnDetector(config) if isinstance(config, SemanticVadConfig) else TurnDetector(config)
        self._session = _session()
        self._resampler = Resampler(PCM_RATE, RATE)
        self._pending = np.zeros(0, dtype=np.float32)
        self._state = np.zeros((2, 1, 1, 128), dtype=np.float32)  # h, c
        self._context = np.zeros(CONTEXT, dtype=np.float32)
        self._frames = 0  # 16 kHz frames scored since the stream started

    @property
    def config(self) -> ServerVadConfig:
        return self.detector.config

    def probability(self, frame: np.ndarray) -> float:
        """Speech probability of one 512-sample frame at 16 kHz (advances the model state)."""
        x = np.concatenate([self._context, frame])[None, :]
        out, h, c = self._session.run(None, {"input": x, "h": self._state[0], "c": self._state[1]})
        self._state = np.stack([h, c])
        self._context = frame[-CONTEXT:]
        return float(np.asarray(out).reshape(-1)[0])

    def process(self, samples: Pcm16) -> list[VadEvent]:
        narrow = pcm16_to_float(self._resampler.push(samples))
        buf = np.concatenate([self._pending, narrow]) if self._pending.size else narrow
        events: list[VadEvent] = []
        n = buf.size // FRAME
        for i in range(n):
            start_ms = self._frames * FRAME / RATE * 1000
            self._frames += 1
            p = self.probability(buf[i * FRAME : (i + 1) * FRAME])
            event = self.detector.frame(p, start_ms, self._frames * FRAME / RATE * 1000)
            if event is not None:
                events.append(event)
        self._pending = buf[n * FRAME :]
        return events

    def reset(self) -> None:
        self._state[:] = 0
        self._context[:] = 0
        self.detector.reset(self._frames * FRAME / RATE * 1000)
