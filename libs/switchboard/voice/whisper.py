"""Offline speech-to-text: Whisper tiny.en on CTranslate2 (faster-whisper), int8 on CPU.

Whisper's encoder is trained on 30 s windows, and faster-whisper always pads to 30 s: a 3 s
utterance then costs as much as 30 s of audio. CTranslate2 accepts a shorter window, so by default
the encoder sees the utterance plus a second of padding (``window="fit"``), about 5x less CPU for a
typical turn; ``window="full"`` keeps the 30 s window. docs/voice.md has the figures.
"""

from __future__ import annotations

import asyncio
import logging
import math
import re
import zlib
from collections.abc import AsyncIterable, AsyncIterator
from pathlib import Path
from typing import Any, Literal

import numpy as np

from .errors import ModelUnavailableError
from .formats import PCM_RATE, Pcm16, pcm16_to_float, resample
from .interfaces import SpeechToText, Transcript, TranscriptEvent, TranscriptPartial
from .models import whisper_dir

log = logging.getLogger(__name__)

RATE = 16_000
FRAMES_PER_S = 100  # mel frames (10 ms hop)
MAX_FRAMES = 3000  # Whisper's 30 s window
MIN_WINDOW_FRAMES = 500  # 5 s: as cheap as a tighter window, and fewer early stops on short utterances
TOKENS_PER_S = 12  # a generous ceiling on speech; bounds a hallucinating decode
MAX_LENGTH = 448  # Whisper's text context (tokens), prompt included
MAX_PROMPT_TOKENS = 223  # the previous text may take half of it (as faster-whisper does)
MAX_COMPRESSION = 2.4  # a transcript that gzips better than this is a repetition loop (Whisper's own rule)


def _compression_ratio(text: str) -> float:
    raw = text.encode()
    return len(raw) / len(zlib.compress(raw)) if raw else 0.0


def looks_looped(text: str) -> bool:
    """Greedy Whisper sometimes repeats itself: a transcript that compresses too well or says the same
    four words twice (callers rarely do) is decoded again."""
    said = [w.strip(".,?!").lower() for w in text.split()]
    grams = [tuple(said[i : i + 4]) for i in range(len(said) - 3)]
    return _compression_ratio(text) > MAX_COMPRESSION or len(set(grams)) < len(grams)


def drop_repeats(text: str) -> str:
    """A greedy loop tells the utterance again and again: keep its first telling. A sentence (split after
    ``.?!``) that repeats an earlier one, or is the cut-off start of one, is dropped."""
    kept: list[str] = []
    for part in re.split(r"(?<=[.?!])\s+", text.strip()):
        said = part.lower().strip(" .,?!")
        if said and any(k.lower().strip(" .,?!").startswith(said) for k in kept):
            continue
        kept.append(part)
    return " ".join(kept)


class WhisperStt:
    """A :class:`~switchboard.voice.interfaces.SpeechToText`; one model shared by every stream.

    ``workers`` decodes run in parallel (CTranslate2 keeps that many model replicas' states, the
    weights once), each on ``cpu_threads`` threads.
    """

    def __init__(
        self,
        model_dir: Path | None = None,
        *,
        cpu_threads: int = 1,
        workers: int = 2,
        window: Literal["fit", "full"] = "fit",
        partial_interval_ms: int | None = None,
        no_speech_threshold: float = 0.6,
    ) -> None:
        try:
            from faster_whisper import WhisperModel
            from faster_whisper.tokenizer import Tokenizer
            from faster_whisper.transcribe import get_suppressed_tokens
        except ImportError as exc:
            raise ModelUnavailableError("faster-whisper is not installed; pip install 'switchboard[voice]'") from exc
        self._model = WhisperModel(
            str(model_dir or whisper_dir()), device="cpu", compute_type="int8",
            cpu_threads=cpu_threads, num_workers=workers,
        )  # fmt: skip
        self._tokenizer = Tokenizer(self._model.hf_tokenizer, False, task="transcribe", language="en")
        self._prompt = [*self._tokenizer.sot_sequence, self._tokenizer.no_timestamps]
        self._suppress = list(get_suppressed_tokens(self._tokenizer, (-1,)) or ())
        self.window = window
        self.partial_interval_ms = partial_interval_ms
        self.no_speech_threshold = no_speech_threshold

    def recognize(self, samples: Pcm16, prompt: str | None = None) -> str:
        """Transcribe one utterance (PCM16 at 24 kHz), blocking; call it from a worker thread. ``prompt``:
        Whisper's initial prompt (words to expect, a style to follow), as the session's
        ``transcription.prompt`` gives it."""
        audio = pcm16_to_float(resample(samples, PCM_RATE, RATE))
        window = MAX_FRAMES * RATE // FRAMES_PER_S
        tokens = self._prompt_tokens(prompt)
        parts = [
            self._recognize_window(audio[i : i + window], tokens, prompt) for i in range(0, max(audio.size, 1), window)
        ]
        return " ".join(p for p in parts if p)

    def _prompt_tokens(self, prompt: str | None) -> list[int]:
        """[previous-text marker, the prompt's last MAX_PROMPT_TOKENS tokens] + the start of transcript."""
        if not prompt or not prompt.strip():
            return self._prompt
        said = self._tokenizer.encode(" " + prompt.strip())[-MAX_PROMPT_TOKENS:]
        return [self._tokenizer.sot_prev, *said, *self._prompt]

    def with_prompt(self, prompt: str | None) -> SpeechToText:
        """This model, transcribing with ``prompt`` (one session's ``transcription.prompt``)."""
        return self if not prompt else _Prompted(self, prompt)

    def _recognize_window(self, audio: np.ndarray, prompt: list[int], initial_prompt: str | None) -> str:
        import ctranslate2

        if audio.size < RATE // 10:  # under 100 ms: nothing to hear
            return ""
        features = self._model.feature_extractor(audio)
        n = features.shape[-1]
        fitted = max(MIN_WINDOW_FRAMES, math.ceil(n / FRAMES_PER_S + 1) * FRAMES_PER_S)
        frames = MAX_FRAMES if self.window == "full" else min(MAX_FRAMES, fitted)
        # pad with what silence looks like (the normalised floor), not 0: zeros are loud in log-mel
        # space, and Whisper decoding them looped on short utterances
        padded = np.full((features.shape[0], frames), features.min(), dtype=np.float32)
        padded[:, : min(n, frames)] = features[:, :frames]
        encoded = self._model.model.encode(ctranslate2.StorageView.from_array(padded[None]), to_cpu=False)
        seconds = audio.size / RATE
        result: Any = self._model.model.generate(
            encoded, [prompt], beam_size=1, suppress_blank=True, suppress_tokens=self._suppress,
            max_length=min(MAX_LENGTH, len(prompt) + int(seconds * TOKENS_PER_S) + 8), return_no_speech_prob=True,
        )[0]  # fmt: skip
        if result.no_speech_prob > self.no_speech_threshold:
            return ""
        text: str = self._tokenizer.decode(result.sequences_ids[0]).strip()
        if looks_looped(text) and not looks_looped(drop_repeats(text)):
            # greedy decoding repeated the whole utterance (on some CPUs' int8 kernels, a process decodes the
            # same audio either way): its first telling is the transcript, with no second decode
            log.info("whisper looped; kept its first telling", extra={"audio_s": round(seconds, 2)})
            text = drop_repeats(text)
        if looks_looped(text):
            # greedy decoding fell into a loop: let faster-whisper retry with beam search and temperature fallback
            log.info("whisper repetition; decoding again", extra={"audio_s": round(seconds, 2)})
            segments, _ = self._model.transcribe(
                audio, language="en", beam_size=5, vad_filter=False, condition_on_previous_text=False,
                without_timestamps=True, initial_prompt=initial_prompt,
            )  # fmt: skip
            text = " ".join(segment.text.strip() for segment in segments)
        return text

    def transcribe(self, audio: AsyncIterable[Pcm16]) -> AsyncIterator[TranscriptEvent]:
        return self.stream(audio, None)

    async def stream(self, audio: AsyncIterable[Pcm16], prompt: str | None) -> AsyncIterator[TranscriptEvent]:
        chunks: list[Pcm16] = []
        n = 0
        partial: asyncio.Task[str] | None = None
        partial_at = 0
        step = (self.partial_interval_ms or 0) * PCM_RATE // 1000
        try:
            async for chunk in audio:
                chunks.append(chunk)
                n += chunk.size
                if partial is not None and partial.done():
                    yield TranscriptPartial(text=partial.result(), audio_ms=partial_at * 1000 / PCM_RATE)
                    partial = None
                if step and partial is None and n - partial_at >= step:
                    partial_at = n
                    partial = asyncio.create_task(asyncio.to_thread(self.recognize, np.concatenate(chunks), prompt))
            if partial is not None:
                partial.cancel()  # the final supersedes it (its thread finishes on its own)
                partial = None
            whole = np.concatenate(chunks) if chunks else np.zeros(0, dtype=np.int16)
            text = await asyncio.to_thread(self.recognize, whole, prompt)
            yield Transcript(text=text, audio_ms=n * 1000 / PCM_RATE)
        finally:
            if partial is not None:
                partial.cancel()


class _Prompted:
    """A :class:`WhisperStt` that transcribes with an initial prompt; shares the model."""

    def __init__(self, stt: WhisperStt, prompt: str) -> None:
        self.stt = stt
        self.prompt = prompt

    def transcribe(self, audio: AsyncIterable[Pcm16]) -> AsyncIterator[TranscriptEvent]:
        return self.stt.stream(audio, self.prompt)
