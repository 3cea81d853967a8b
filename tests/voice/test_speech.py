"""Real speech through the offline engines: espeak-ng talks to Whisper, Silero hears where speech
is, Piper speaks and Whisper hears it back. Models load once per test session."""

from __future__ import annotations

import asyncio
import time

import numpy as np
import pytest

from switchboard.voice import (
    PCM_RATE,
    PCMU,
    ServerVadConfig,
    SpeechStarted,
    SpeechStopped,
    SpeechToText,
    TextToSpeech,
    Transcript,
    TranscriptPartial,
    VoiceActivityDetector,
    from_pcm16_24k,
    to_pcm16_24k,
)
from switchboard.voice.piper_tts import PiperTts
from switchboard.voice.silero import SileroVad
from switchboard.voice.whisper import WhisperStt

from .conftest import Spoken, chunks, digits, espeak, silence, text_stream, words


def test_engines_implement_the_interfaces(stt: WhisperStt, tts: PiperTts) -> None:
    assert isinstance(stt, SpeechToText)
    assert isinstance(tts, TextToSpeech)
    assert isinstance(SileroVad(), VoiceActivityDetector)


async def test_whisper_transcribes_an_espeak_caller(stt: WhisperStt, order_utterance: Spoken) -> None:
    events = [e async for e in stt.transcribe(chunks(order_utterance.samples))]
    assert len(events) == 1 and isinstance(events[0], Transcript)
    said = words(events[0].text)
    assert said[:4] == ["i", "want", "to", "return"], events[0].text
    assert "order" in said and "1001" in digits(events[0].text), events[0].text
    assert events[0].audio_ms == pytest.approx(order_utterance.samples.size / 24, abs=1)


async def test_partials_arrive_while_the_caller_is_still_talking(stt: WhisperStt, order_utterance: Spoken) -> None:
    async def real_time() -> object:
        async for chunk in chunks(order_utterance.samples):
            yield chunk
            await asyncio.sleep(0.1)  # ok-sleep: audio arrives in real time, as from a caller

    stt.partial_interval_ms = 1000
    try:
        events = [e async for e in stt.transcribe(real_time())]  # type: ignore[arg-type]
    finally:
        stt.partial_interval_ms = None
    partials = [e for e in events if isinstance(e, TranscriptPartial)]
    assert partials, "no partial hypothesis before the end of the audio"
    assert "want" in words(partials[-1].text)
    assert isinstance(events[-1], Transcript) and sum(isinstance(e, Transcript) for e in events) == 1


async def test_whisper_hears_nothing_in_silence(stt: WhisperStt) -> None:
    events = [e async for e in stt.transcribe(chunks(silence(2000)))]
    assert events == [Transcript(text="", audio_ms=2000)]


def feed(vad: SileroVad, samples: np.ndarray, ms: int = 40) -> list[SpeechStarted | SpeechStopped]:
    step = PCM_RATE * ms // 1000
    return [e for i in range(0, samples.size, step) for e in vad.process(samples[i : i + step])]


def test_a_vad_cut_utterance_is_decoded_once_without_a_loop(
    stt: WhisperStt,
    tmp_path,
    caplog: pytest.LogCaptureFixture,  # type: ignore[no-untyped-def]
) -> None:
    """What the edge commits for this caller (100 ms to 3072 ms: the VAD cut and the prefix padding): with the fitted
    window padded by zeros in log-mel space (loud, not silence) greedy decoding looped, and the 30 s
    fallback took 2-7 s on a busy machine."""
    spoken = espeak("Hello, can you help me please?", tmp_path / "hello.wav", pad_s=(0.3, 1.0))
    cut = spoken.samples[PCM_RATE * 100 // 1000 : PCM_RATE * 3072 // 1000]
    with caplog.at_level("INFO", logger="switchboard.voice.whisper"):
        text = stt.recognize(cut)
    assert not [r for r in caplog.records if "repetition" in r.getMessage()]
    assert {"hello", "help", "please"} <= set(words(text)), text


def test_vad_finds_where_speech_starts_and_stops(order_utterance: Spoken, tmp_path) -> None:  # type: ignore[no-untyped-def]
    padded = espeak("I want to return order A one zero zero one", tmp_path / "padded.wav", pad_s=(1.5, 1.5))
    config = ServerVadConfig(prefix_padding_ms=300, silence_duration_ms=500)
    events = feed(SileroVad(config), padded.samples)
    assert [type(e) for e in events] == [SpeechStarted, SpeechStopped], events
    start, stop = events
    assert isinstance(start, SpeechStarted) and isinstance(stop, SpeechStopped)
    speech_end = 1500 + padded.speech_ms
    assert 1500 - 300 - 150 <= start.audio_start_ms <= 1500 - 300 + 200, start  # padding included
    assert speech_end + 500 - 400 <= stop.audio_end_ms <= speech_end + 500 + 200, (stop, speech_end)


def test_vad_settings_change_what_it_reports(tmp_path) -> None:  # type: ignore[no-untyped-def]
    hello = espeak("Hello there.", tmp_path / "hello.wav", pad_s=(0.5, 0.0)).samples
    bye = espeak("Goodbye now.", tmp_path / "bye.wav", pad_s=(0.0, 2.0)).samples
    two = np.concatenate([hello, silence(800), bye])  # a 0.8 s pause between two phrases
    patient = feed(SileroVad(ServerVadConfig(silence_duration_ms=1500)), two)
    eager = feed(SileroVad(ServerVadConfig(silence_duration_ms=200)), two)
    assert sum(isinstance(e, SpeechStopped) for e in patient) == 1, patient
    assert sum(isinstance(e, SpeechStopped) for e in eager) >= 2, eager
    deaf = feed(SileroVad(ServerVadConfig(threshold=1.0)), two)
    assert deaf == []


def test_vad_ignores_silence_and_keeps_the_session_clock_across_reset(tmp_path) -> None:  # type: ignore[no-untyped-def]
    vad = SileroVad()
    assert feed(vad, silence(1000)) == []
    vad.reset()  # input_audio_buffer.clear: state forgotten, the clock keeps counting
    padded = espeak("Hello there", tmp_path / "hello.wav", pad_s=(1.0, 1.0))
    events = feed(vad, padded.samples)
    assert isinstance(events[0], SpeechStarted)
    assert 1000 + 1000 - 300 - 150 <= events[0].audio_start_ms <= 1000 + 1000 - 300 + 200, events


async def test_tts_speaks_the_first_sentence_while_text_is_still_coming(tts: PiperTts) -> None:
    first_audio = asyncio.Event()

    async def agent_text() -> object:
        yield "Sure, I can help with that. "
        await asyncio.wait_for(first_audio.wait(), timeout=20)  # the rest only after audio came out
        yield "Your order can be returned."

    chunks_out = []
    async for chunk in tts.synthesize(agent_text()):  # type: ignore[arg-type]
        first_audio.set()
        chunks_out.append(chunk)
    sentences = [c.text for c in chunks_out if c.first_of_sentence]
    # the first piece ends at its first clause (spoken sooner), later pieces are whole sentences
    assert sentences == ["Sure,", "I can help with that.", "Your order can be returned."]
    assert all(c.duration_ms <= 200.1 for c in chunks_out)


async def test_closing_the_speech_stream_stops_it_at_once(tts: PiperTts) -> None:
    """Barge-in: aclose() ends synthesis and stops reading the agent's text."""
    text_closed = asyncio.Event()

    async def agent_still_talking() -> object:
        try:
            yield "One moment while I look into that. "
            await asyncio.Event().wait()  # the rest of the answer never comes
            yield "never spoken"
        finally:
            text_closed.set()

    stream = tts.synthesize(agent_still_talking())  # type: ignore[arg-type]
    first = await stream.__anext__()
    assert first.first_of_sentence and first.text == "One moment while I look into that."
    await asyncio.wait_for(stream.aclose(), timeout=10)
    assert text_closed.is_set()


async def test_tts_audio_is_plausible_and_whisper_hears_the_same_words(
    repeatable_tts: PiperTts, stt: WhisperStt
) -> None:
    text = "Sure, I can help with that. Your order can be returned. Shall I start the return?"
    started = time.perf_counter()
    spoken = [c async for c in repeatable_tts.synthesize(text_stream(f"{word} " for word in text.split()))]
    assert time.perf_counter() - started < 60
    audio = np.concatenate([c.samples for c in spoken])
    seconds = audio.size / PCM_RATE
    n_words = len(text.split())
    assert n_words / 4.5 <= seconds <= n_words / 1.5, seconds  # people say 1.5 to 4.5 words a second
    assert np.max(np.abs(audio)) > 10_000  # not silence
    heard = [e async for e in stt.transcribe(chunks(audio))][-1]
    assert words(heard.text) == words(text), heard.text


def test_tts_speaks_at_24khz_whatever_the_voice_rate(repeatable_tts: PiperTts) -> None:
    """Same speech, same length in seconds: Piper's 22.05 kHz output is resampled, not relabelled."""
    repeatable = repeatable_tts
    assert repeatable.native_rate == 22_050
    text = "Thank you for calling."
    ours = repeatable.speak(text).size / PCM_RATE
    native = np.concatenate([c.audio_float_array for c in repeatable._voice.synthesize(text, repeatable.synthesis)])
    assert ours == pytest.approx(native.size / repeatable.native_rate, abs=0.01)


async def test_telephony_audio_survives_g711(repeatable_tts: PiperTts, stt: WhisperStt) -> None:
    audio = np.concatenate([c.samples async for c in repeatable_tts.synthesize(text_stream(["Please hold the line."]))])
    narrow = to_pcm16_24k(from_pcm16_24k(audio, PCMU), PCMU)
    heard = [e async for e in stt.transcribe(chunks(narrow))][-1]
    assert words(heard.text) == ["please", "hold", "the", "line"], heard.text


async def test_a_repetition_loop_is_decoded_again_with_fallback(
    stt: WhisperStt, order_utterance: Spoken, monkeypatch: pytest.MonkeyPatch
) -> None:
    from switchboard.voice import whisper

    monkeypatch.setattr(whisper, "looks_looped", lambda text: True)  # every transcript now counts as a loop
    decode_again = stt._model.transcribe
    second: list[dict[str, object]] = []

    def transcribe(*args: object, **options: object) -> object:
        second.append(options)
        return decode_again(*args, **options)

    monkeypatch.setattr(stt._model, "transcribe", transcribe)
    text = stt.recognize(order_utterance.samples)
    assert words(text)[:4] == ["i", "want", "to", "return"] and "1001" in digits(text), text
    assert [options["beam_size"] for options in second] == [5]  # the text above came from the second decode


def test_loops_are_recognised() -> None:
    from switchboard.voice.whisper import looks_looped

    assert looks_looped("Can you tell me when my package will arrive? Can you tell me when my package will arrive? Can")
    assert looks_looped("My email is " + "ta" * 40)
    assert not looks_looped("Sure, I can help with that. Your order can be returned. Shall I start the return?")


def test_a_looped_telling_keeps_its_first_and_other_speech_is_left_alone() -> None:
    from switchboard.voice.whisper import drop_repeats, looks_looped

    looped = "Hello, can you help me please? Hello, can you help me please? Hello, can you help me"
    assert drop_repeats(looped) == "Hello, can you help me please?" and not looks_looped(drop_repeats(looped))
    said = "Sure, I can help with that. Your order can be returned. Shall I start the return?"
    assert drop_repeats(said) == said
    assert looks_looped(drop_repeats("My email is " + "ta" * 40))  # not a repeated telling: still decoded again
