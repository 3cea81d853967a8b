"""The edge's audio bookkeeping without models: what a caller heard of a spoken item, session audio settings."""

from __future__ import annotations

import pytest

from switchboard.voice import SemanticVadConfig
from switchboard_edge.audio_response import PlaybackClock, SpokenItem
from switchboard_edge.protocol import ProtocolError
from switchboard_edge.voice import VoiceState

SENTENCES = [(0.0, 2000.0, "Before I can help with that, I need to verify it."), (2000.0, 3000.0, "What's your PIN?")]


def spoken(offset_ms: float = 0.0, started: float | None = 100.0) -> SpokenItem:
    return SpokenItem("item_1", PlaybackClock(started), offset_ms, 3000.0, list(SENTENCES))


@pytest.mark.parametrize(
    ("ms", "text"),
    [
        (0, ""),
        (1000, "Before I can help with"),  # half the first sentence's 10 words
        (1999, "Before I can help with that, I need to verify"),
        (2000, "Before I can help with that, I need to verify it."),
        (2600, "Before I can help with that, I need to verify it. What's"),  # 60% of 3 words
        (3000, "Before I can help with that, I need to verify it. What's your PIN?"),
        (9000, "Before I can help with that, I need to verify it. What's your PIN?"),
    ],
)
def test_text_heard_is_whole_sentences_then_the_played_share_of_words(ms: float, text: str) -> None:
    assert spoken().text_until(ms) == text


def test_heard_follows_the_playback_clock_from_the_items_offset() -> None:
    item = spoken(offset_ms=1000.0)  # a second item: plays after the first one's 1000 ms
    assert item.heard_ms(now=100.5) == 0.0  # the response's first 500 ms are the first item's
    assert item.heard_ms(now=102.0) == pytest.approx(1000.0)
    assert item.heard_ms(now=200.0) == 3000.0  # never more than its audio
    assert spoken(started=None).heard_ms(now=200.0) == 0.0  # no audio sent yet: nothing heard


def test_session_audio_settings_are_checked_whole_before_anything_changes() -> None:
    state = VoiceState()
    with pytest.raises(ProtocolError) as refused:
        state.apply({"input": {"format": {"type": "audio/pcmu"}, "turn_detection": {"type": "server_vad",
                                                                                     "threshold": 7}}})  # fmt: skip
    assert refused.value.param == "session.audio.input.turn_detection.threshold"
    assert state.input_format.type == "audio/pcm" and state.turn_detection is not None  # unchanged
    state.apply({"input": {"format": {"type": "audio/pcmu"}, "turn_detection": None}})
    assert (state.input_format.type, state.buffer.format.type) == ("audio/pcmu", "audio/pcmu")
    assert state.turn_detection is None  # push-to-talk
    state.apply({"input": {"turn_detection": {"type": "semantic_vad", "eagerness": "high"}}})
    assert state.turn_detection == SemanticVadConfig(eagerness="high")
    assert state.echo()["input"]["turn_detection"]["eagerness"] == "high"
    assert state.echo()["input"]["format"] == {"type": "audio/pcmu"}  # GA names no rate for G.711


@pytest.mark.parametrize(
    ("transcription", "param", "says"),
    [
        ({"model": "gpt-4o-transcribe-diarize"}, "model", "Whisper tiny.en"),
        ({"model": "whisper-large-v3"}, "model", "whisper-1"),
        ({"language": "fr"}, "language", "English ('en') only"),
        ({"languages": ["en", "de"]}, "languages", "English ('en') only"),
        ({"delay": "low"}, "delay", "gpt-realtime-whisper only"),
        ({"prompt": 5}, "prompt", "string"),
    ],
)
def test_transcription_settings_the_shipped_whisper_cannot_serve_are_refused_naming_the_param(
    transcription: dict[str, object], param: str, says: str
) -> None:
    state = VoiceState()
    with pytest.raises(ProtocolError) as refused:
        state.apply({"input": {"transcription": transcription}})
    assert refused.value.code == "invalid_value"
    assert refused.value.param == f"session.audio.input.transcription.{param}"
    assert says in refused.value.message and refused.value.param in refused.value.message
    assert state.transcription is None  # nothing changed


@pytest.mark.parametrize(
    "model", ["whisper-tiny.en", "tiny.en", "whisper-1", "gpt-4o-mini-transcribe", "gpt-realtime-whisper", None]
)
def test_the_shipped_whisper_is_accepted_by_its_names_and_the_prompt_reaches_it(model: str | None) -> None:
    state = VoiceState()
    state.apply({"input": {"transcription": {"model": model, "language": "en", "prompt": "Kestrel router",
                                             "keywords": ["Quillfeather"]}}})  # fmt: skip
    assert state.transcription is not None
    assert state.transcription.whisper_prompt() == "Kestrel router Quillfeather"
    assert state.echo()["input"]["transcription"]["prompt"] == "Kestrel router"


def test_noise_reduction_is_refused_clearly_and_null_is_accepted() -> None:
    state = VoiceState()
    with pytest.raises(ProtocolError) as refused:
        state.apply({"input": {"noise_reduction": {"type": "near_field"}}})
    assert refused.value.param == "session.audio.input.noise_reduction"
    assert "not available" in refused.value.message and "send null" in refused.value.message
    state.apply({"input": {"noise_reduction": None}})
    assert state.echo()["input"]["noise_reduction"] is None
