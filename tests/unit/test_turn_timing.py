"""End of turn without models: semantic VAD's verdict on the words and its waits, server VAD's idle timer."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import numpy as np
import pytest

from switchboard.voice import (
    SemanticTurnDetector,
    SemanticVadConfig,
    ServerVadConfig,
    SpeechStarted,
    SpeechStopped,
    TurnDetector,
    end_of_turn,
)
from switchboard.voice.formats import Pcm16
from switchboard.voice.semantic_vad import WAITS
from switchboard.voice.turn_detection import PROBE_MS
from switchboard_edge.turn_timing import IdleTimer, PauseJudge

FRAME_MS = 32.0


@pytest.mark.parametrize(
    ("text", "verdict"),
    [
        ("I want a refund for my order.", "complete"),
        ("Can you kick my balance?", "complete"),
        ("Who is this for?", "complete"),  # a wh-question ends even on a preposition
        ("Can you tell me about?", "unfinished"),  # Whisper hears the rising tone of a cut-off question
        ("My order number is.", "unfinished"),
        ("Yes, it is.", "complete"),
        ("I think so.", "complete"),
        ("I want a refund for", "unfinished"),
        ("I was charged twice and...", "unfinished"),
        ("My order number is…", "unfinished"),
        ("I would like to return, um", "unfinished"),
        ("So I was wondering if", "unfinished"),
        ("I need help with my account,", "unfinished"),
        ("I want a refund for.", "unfinished"),  # Whisper often closes a cut-off phrase with a period
        ("I think so", "unknown"),
        ("", "unknown"),
    ],
)
def test_the_words_say_whether_the_turn_is_over(text: str, verdict: str) -> None:
    assert end_of_turn(text) == verdict


def run(detector: SemanticTurnDetector, pattern: list[float], judge: str | None = None) -> list[tuple[str, float]]:
    """Feed speech probabilities frame by frame; judge the first pause with ``judge`` as soon as it is asked."""
    events: list[tuple[str, float]] = []
    for i, p in enumerate(pattern):
        ev = detector.frame(p, i * FRAME_MS, (i + 1) * FRAME_MS)
        if ev is not None:
            events.append((ev.type, ev.audio_start_ms if isinstance(ev, SpeechStarted) else ev.audio_end_ms))
        token = detector.pause()
        if token is not None and judge is not None:
            assert detector.judge(token, judge) is not None
    return events


@pytest.mark.parametrize("eagerness", ["low", "medium", "high", "auto"])
@pytest.mark.parametrize("said", ["I want a refund.", "I want a refund for", "I want a"])
def test_semantic_vad_waits_as_long_as_the_eagerness_allows_for_what_was_said(eagerness: str, said: str) -> None:
    detector = SemanticTurnDetector(SemanticVadConfig(eagerness=eagerness))  # type: ignore[arg-type]
    speech = [0.9] * 30  # ~1 s of speech, then 10 s of silence
    events = run(detector, speech + [0.0] * 320, judge=said)
    assert [e[0] for e in events] == ["speech_started", "speech_stopped"]
    wait = events[1][1] - len(speech) * FRAME_MS
    expected = WAITS["medium" if eagerness == "auto" else eagerness][end_of_turn(said)]
    assert expected <= wait < expected + FRAME_MS
    assert detector.speech_end_ms == len(speech) * FRAME_MS


def test_an_unjudged_pause_holds_the_turn_up_to_the_maximum_and_speech_forgets_the_verdict() -> None:
    detector = SemanticTurnDetector(SemanticVadConfig(eagerness="high"))
    events = run(detector, [0.9] * 30 + [0.0] * 100)  # asked, never answered (a slow transcription)
    assert events[-1] == ("speech_stopped", pytest.approx(30 * FRAME_MS + WAITS["high"]["unfinished"], abs=FRAME_MS))
    again = SemanticTurnDetector(SemanticVadConfig(eagerness="high"))
    run(again, [0.9] * 30 + [0.0] * 6)
    token = again.pause()  # asked already inside run (no judge): no second token for the same pause
    assert token is None and again.verdict is None
    run(again, [0.9] * 5)  # speech resumes: a verdict on the old pause is ignored
    assert again.judge(0, "I want a refund.") is None and again.verdict is None


def test_a_pause_is_judged_once_it_lasts_the_probe_time() -> None:
    detector = SemanticTurnDetector(SemanticVadConfig())
    short = int(PROBE_MS // FRAME_MS)  # 4 frames: 128 ms
    run(detector, [0.9] * 10 + [0.0] * short)
    assert detector.pause() is None  # a gap between words
    detector.frame(0.0, (10 + short) * FRAME_MS, (11 + short) * FRAME_MS)
    assert detector.pause() is not None


async def test_the_idle_timer_fires_after_playback_and_the_timeout_and_is_cancelled_cleanly() -> None:
    fired: list[tuple[int, int]] = []
    rang = asyncio.Event()

    async def fire(start: int, end: int) -> None:
        fired.append((start, end))
        rang.set()

    began = time.monotonic()
    timer = IdleTimer(fire, lambda: (time.monotonic() - began) * 1000)  # the audio clock: ms since the test began
    timer.arm(began + 0.05, 50)
    await asyncio.wait_for(rang.wait(), 5)
    [(start, end)] = fired
    assert start >= 50, "counting started before playback ended"
    assert end - start >= 49, "fired before the timeout"  # 49: each end is rounded to the ms
    assert not timer.armed

    timer.arm(time.monotonic(), 10_000)
    task = timer._task
    timer.cancel()  # speech
    assert task is not None and not timer.armed
    await asyncio.gather(task, return_exceptions=True)
    assert task.cancelled()

    timer.arm(time.monotonic(), 10_000)
    task = timer._task
    await timer.aclose()  # the session ends: nothing left running, and nothing arms again
    assert task is not None and task.cancelled()
    timer.arm(time.monotonic(), 10)
    assert not timer.armed and len(fired) == 1


@pytest.mark.parametrize(("said", "ends"), [("I want a refund.", True), ("I want a refund for", False)])
def test_a_verdict_ends_the_turn_on_the_silence_already_heard_when_no_more_audio_comes(said: str, ends: bool) -> None:
    detector = SemanticTurnDetector(SemanticVadConfig())
    run(detector, [0.9] * 30 + [0.0] * 15)  # a client sent its utterance and 480 ms of silence, then nothing
    assert detector.judge(0, said) is not None
    stop = detector.due()
    assert (stop is not None) is ends
    if stop is not None:
        assert stop.audio_end_ms == 45 * FRAME_MS and detector.speech_end_ms == 30 * FRAME_MS
        assert not detector.speaking and detector.due() is None


async def test_server_vad_transcribes_at_the_pause_and_the_turn_that_ends_there_reuses_it() -> None:
    """With plain server VAD too, the words are transcribed once the caller has paused ``PROBE_MS``, while the
    turn's 500 ms of silence are still being waited for; the turn that then ends takes that transcript (no
    second decode). Speech after the probe makes it stale: the turn is decoded whole at its end."""
    decoded: list[int] = []

    async def transcribe(audio: Pcm16) -> str:
        decoded.append(audio.size)
        return f"{audio.size} samples"

    async def never(ev: SpeechStopped, detector: TurnDetector) -> None:
        raise AssertionError("server VAD's wait does not follow the words")

    async def feed(
        detector: TurnDetector, judge: PauseJudge, pattern: list[float], start: int, stt: Any = transcribe
    ) -> list[str]:
        events = []
        for i, p in enumerate(pattern, start):
            ev = detector.frame(p, i * FRAME_MS, (i + 1) * FRAME_MS)
            if ev is not None:
                events.append(ev.type)
            judge.after_audio(detector, lambda i=i: np.zeros(i, dtype=np.int16), stt, never)
            await asyncio.sleep(0)  # ok-sleep: one loop step, as between two audio appends
        return events

    detector, judge = TurnDetector(ServerVadConfig()), PauseJudge()
    assert await feed(detector, judge, [0.9] * 20 + [0.0] * 20, 0) == ["speech_started", "speech_stopped"]
    probe = judge.transcript(detector)
    assert probe is not None and await probe == f"{20 + int(PROBE_MS // FRAME_MS)} samples"
    assert len(decoded) == 1  # one decode for the turn: the probe's

    # A pause, then more words: the next pause's probe (which heard them all) is the one used.
    pattern = [0.9] * 20 + [0.0] * 8 + [0.9] * 20 + [0.0] * 20
    assert await feed(detector, judge, pattern, 100) == ["speech_started", "speech_stopped"]
    probe = judge.transcript(detector)
    assert probe is not None and await probe == f"{100 + 20 + 8 + 20 + int(PROBE_MS // FRAME_MS)} samples"

    # The same, but the first pause's decode is still running at the second pause (one at a time): its words
    # are stale, so the turn gets no transcript from a probe and is decoded whole at its end.
    gate = asyncio.Event()

    async def slow(audio: Pcm16) -> str:
        await gate.wait()
        return "stale"

    detector = TurnDetector(ServerVadConfig())
    assert await feed(detector, judge, pattern, 0, slow) == ["speech_started", "speech_stopped"]
    assert judge.transcript(detector) is None
    gate.set()
    assert judge.transcript(TurnDetector(ServerVadConfig())) is None  # another detector's turn: not this probe
    await judge.aclose()
