"""When a caller's turn ends besides plain silence: server VAD's idle timeout; the caller's pauses.

:class:`IdleTimer` (``turn_detection.idle_timeout_ms``, server VAD): once the last response's audio has
played, a caller silent for the timeout gets ``input_audio_buffer.timeout_triggered``; the edge then
commits the silent buffer as an empty caller turn and answers it, so the agent can ask whether the
caller is still there. One timer per session, re-armed by each response, stopped by speech, a new
response or the session's end.

:class:`PauseJudge`: when the caller pauses mid-turn (``PROBE_MS`` of silence), the words so far are
transcribed once in a worker thread, while the VAD still waits for the silence that ends the turn. If the
turn then ends with no more speech, that transcript is the turn's transcript: the decode is done by the
time the turn ends, and costs the caller no wait. Semantic VAD is also told whether those words read as
finished (:class:`~switchboard.voice.SemanticTurnDetector`), which sets how long the pause may last.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable

from switchboard.voice import SpeechStopped, TurnDetector
from switchboard.voice.formats import Pcm16

log = logging.getLogger(__name__)


class IdleTimer:
    """Calls ``fire(audio_start_ms, audio_end_ms)`` when the caller stays silent ``timeout_ms`` after playback."""

    def __init__(self, fire: Callable[[int, int], Awaitable[None]], audio_clock: Callable[[], float]) -> None:
        self._fire = fire
        self._clock = audio_clock
        """The session's audio clock (ms of caller audio appended)."""
        self._task: asyncio.Task[None] | None = None
        self._closed = False

    @property
    def armed(self) -> bool:
        return self._task is not None

    def arm(self, played_at: float, timeout_ms: int) -> None:
        """Start counting at ``played_at`` (``time.monotonic()`` when the response's audio will have played)."""
        self.cancel()
        if not self._closed:
            self._task = asyncio.create_task(self._run(played_at, timeout_ms))

    def cancel(self) -> None:
        if self._task is not None:
            self._task.cancel()
            self._task = None

    async def aclose(self) -> None:
        self._closed = True
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    async def _run(self, played_at: float, timeout_ms: int) -> None:
        await asyncio.sleep(max(0.0, played_at - time.monotonic()))  # ok-sleep: the caller is still listening
        start = self._clock()
        await asyncio.sleep(timeout_ms / 1000)  # ok-sleep: this wait is the feature
        self._task = None  # fired: the turn it starts must not cancel it
        try:
            await self._fire(round(start), round(self._clock()))
        except Exception:  # the session closed meanwhile, or the turn was refused: nothing to retry
            log.warning("idle timeout turn failed", exc_info=True)


class PauseJudge:
    """One session's pause probes: at most one transcription of the words so far at a time."""

    def __init__(self) -> None:
        self._probe: tuple[TurnDetector, float, asyncio.Task[str]] | None = None
        """The latest probe: (its detector, detector ms its audio reaches, its transcript)."""

    def after_audio(
        self,
        detector: TurnDetector,
        samples: Callable[[], Pcm16],
        transcribe: Callable[[Pcm16], Awaitable[str]],
        stopped: Callable[[SpeechStopped, TurnDetector], Awaitable[None]],
    ) -> None:
        """Ask ``detector`` whether a pause began; if so, transcribe ``samples()`` (the buffer) and judge them.
        A verdict that ends the turn on the silence already heard calls ``stopped`` at once: a client may
        have sent its last audio (a burst, not a microphone)."""
        if self._probe is not None and not self._probe[2].done():
            return  # one decode at a time: the pause waits as long as an unjudged one
        token = detector.pause()
        if token is None:
            return

        async def judge() -> str:
            started = time.perf_counter()
            try:
                text = await transcribe(audio)
            except BaseException:
                detector.judge(token, "")  # no words: the pause waits as an unjudged one
                raise
            verdict = detector.judge(token, text)
            stt_ms = round((time.perf_counter() - started) * 1000)
            log.info("pause transcribed", extra={"verdict": verdict, "stt_ms": stt_ms, "words": len(text.split())})
            end = detector.due()
            if end is not None:
                try:
                    await stopped(end, detector)  # its transcript is this one (awaited by a new task)
                except Exception:  # the session closed meanwhile, or the commit was refused
                    log.warning("ending the turn after its verdict failed", exc_info=True)
            return text

        audio = samples()
        task = asyncio.create_task(judge())
        task.add_done_callback(lambda t: t.cancelled() or t.exception())  # a failure unused by a turn is not an error
        self._probe = (detector, detector.heard_until_ms, task)

    def transcript(self, detector: TurnDetector) -> asyncio.Task[str] | None:
        """The probe that heard every word of the turn ``detector`` just ended (its speech ended at
        ``speech_end_ms``); None if the caller spoke again after it (or another detector made it)."""
        if self._probe is None or self._probe[0] is not detector or self._probe[1] < detector.speech_end_ms:
            return None
        probe, self._probe = self._probe[2], None
        return probe

    async def aclose(self) -> None:
        if self._probe is not None:
            self._probe[2].cancel()
            await asyncio.gather(self._probe[2], return_exceptions=True)
            self._probe = None
