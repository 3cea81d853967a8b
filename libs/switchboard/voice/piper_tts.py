"""Offline text-to-speech: Piper (VITS on ONNX Runtime) with the en_US "joe" voice from a wheel."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import AsyncIterable, AsyncIterator
from pathlib import Path
from typing import Any

import numpy as np

from .errors import ModelUnavailableError
from .formats import PCM_RATE, Pcm16, float_to_pcm16, resample
from .interfaces import SpeechChunk
from .models import piper_voice
from .sentences import SentenceSplitter

_PHONEMIZE = threading.Lock()  # espeak-ng (inside piper) keeps global state: one phonemizer call at a time


class PiperTts:
    """A :class:`~switchboard.voice.interfaces.TextToSpeech`; one loaded voice shared by every stream.

    Speech comes out as PCM16 at 24 kHz in chunks of ``chunk_ms``; the next sentence is synthesised
    while the current one's chunks are consumed.
    """

    def __init__(
        self,
        model: Path | None = None,
        config: Path | None = None,
        *,
        cpu_threads: int = 1,
        chunk_ms: int = 200,
        noise_scale: float | None = None,
        noise_w_scale: float | None = None,
    ) -> None:
        """``noise_scale``/``noise_w_scale`` (None: the voice's own) vary timbre and timing; 0 repeats exactly."""
        try:
            import onnxruntime
            from piper import PiperVoice
            from piper.config import PiperConfig, SynthesisConfig
        except ImportError as exc:
            raise ModelUnavailableError("piper-tts is not installed; pip install 'switchboard[voice]'") from exc
        default_model, default_config = piper_voice() if model is None else (model, config or Path(f"{model}.json"))
        opts = onnxruntime.SessionOptions()
        opts.intra_op_num_threads = cpu_threads
        opts.inter_op_num_threads = 1
        opts.log_severity_level = 3
        session = onnxruntime.InferenceSession(
            str(default_model), sess_options=opts, providers=["CPUExecutionProvider"]
        )
        voice_config = json.loads(Path(config or default_config).read_text(encoding="utf-8"))
        self._voice = PiperVoice(config=PiperConfig.from_dict(voice_config), session=session)
        self.synthesis = SynthesisConfig(noise_scale=noise_scale, noise_w_scale=noise_w_scale)
        self.native_rate: int = self._voice.config.sample_rate
        self.chunk_samples = PCM_RATE * chunk_ms // 1000

    def speak(self, sentence: str) -> Pcm16:
        """Synthesise one piece of text (PCM16 at 24 kHz), blocking; call it from a worker thread."""
        with _PHONEMIZE:
            phonemes = self._voice.phonemize(sentence)
        pieces: list[np.ndarray] = []
        for sentence_phonemes in phonemes:
            if not sentence_phonemes:
                continue
            audio: Any = self._voice.phoneme_ids_to_audio(
                self._voice.phonemes_to_ids(sentence_phonemes), self.synthesis
            )
            audio = np.asarray(audio[0] if isinstance(audio, tuple) else audio, dtype=np.float32).reshape(-1)
            peak = float(np.max(np.abs(audio))) if audio.size else 0.0
            pieces.append(audio / peak if peak > 1e-8 else np.zeros_like(audio))
        if not pieces:
            return np.zeros(0, dtype=np.int16)
        return resample(float_to_pcm16(np.concatenate(pieces)), self.native_rate, PCM_RATE)

    async def synthesize(self, text: AsyncIterable[str]) -> AsyncIterator[SpeechChunk]:
        sentences: asyncio.Queue[str | None] = asyncio.Queue()

        async def read() -> None:
            splitter = SentenceSplitter()
            try:
                async for delta in text:
                    for sentence in splitter.push(delta):
                        sentences.put_nowait(sentence)
                rest = splitter.flush()
                if rest:
                    sentences.put_nowait(rest)
            finally:
                sentences.put_nowait(None)

        reader = asyncio.create_task(read())
        ahead: asyncio.Task[tuple[str, Pcm16] | None] | None = None

        async def next_sentence() -> tuple[str, Pcm16] | None:
            sentence = await sentences.get()
            if sentence is None:
                return None
            return sentence, await asyncio.to_thread(self.speak, sentence)

        try:
            current = await next_sentence()
            while current is not None:
                ahead = asyncio.create_task(next_sentence())
                sentence, samples = current
                for i in range(0, samples.size, self.chunk_samples):
                    yield SpeechChunk(
                        samples=samples[i : i + self.chunk_samples], text=sentence, first_of_sentence=i == 0
                    )
                current = await ahead
                ahead = None
            if reader.done() and not reader.cancelled() and reader.exception() is not None:
                raise reader.exception()  # type: ignore[misc]
        finally:
            for task in (reader, ahead):
                if task is not None and not task.done():
                    task.cancel()
            await asyncio.gather(reader, *([ahead] if ahead else []), return_exceptions=True)
