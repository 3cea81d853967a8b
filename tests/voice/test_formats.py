"""Formats, codecs, the bounded input buffer and sentence splitting: no models needed."""

from __future__ import annotations

import base64
import subprocess
from pathlib import Path

import numpy as np
import pytest

from switchboard.voice import (
    PCM16_24K,
    PCMA,
    PCMU,
    AudioDecodeError,
    AudioFormat,
    AudioFormatError,
    AudioLengthError,
    AudioLimits,
    AudioTooLargeError,
    EmptyAudioError,
    InputAudioBuffer,
    Resampler,
    SentenceSplitter,
    ServerVadConfig,
    SpeechStarted,
    SpeechStopped,
    TurnDetector,
    decode_base64,
    from_pcm16_24k,
    resample,
    to_pcm16_24k,
)
from switchboard.voice.formats import alaw_decode, alaw_encode, ulaw_decode, ulaw_encode


def tone(ms: int, rate: int = 24_000, hz: float = 440.0, amplitude: float = 0.5) -> np.ndarray:
    t = np.arange(rate * ms // 1000) / rate
    return (np.sin(2 * np.pi * hz * t) * amplitude * 32767).astype(np.int16)


def test_bad_base64_is_a_typed_error() -> None:
    with pytest.raises(AudioDecodeError, match="not valid base64"):
        decode_base64("not base64!!")
    with pytest.raises(AudioDecodeError, match="not valid base64"):
        decode_base64("AAAA$$$$")  # stray characters are refused, not silently dropped
    assert decode_base64(base64.b64encode(b"\x01\x02").decode()) == b"\x01\x02"


def test_odd_byte_count_is_half_a_sample() -> None:
    buffer = InputAudioBuffer()
    with pytest.raises(AudioLengthError, match="even number of bytes"):
        buffer.append_base64(base64.b64encode(b"\x00\x01\x02").decode())
    assert buffer.duration_ms == 0


def test_pcm_allows_only_24khz_and_g711_only_8khz() -> None:
    with pytest.raises(AudioFormatError, match="only a rate of 24000 Hz, not 16000"):
        AudioFormat(type="audio/pcm", rate=16_000)
    with pytest.raises(AudioFormatError, match="only a rate of 8000 Hz"):
        AudioFormat(type="audio/pcmu", rate=24_000)
    assert AudioFormat(type="audio/pcma").rate == 8_000
    assert PCM16_24K.duration_ms(48_000) == 1000


def test_oversized_chunk_is_refused_before_decoding() -> None:
    buffer = InputAudioBuffer(AudioLimits(max_chunk_bytes=1000))
    with pytest.raises(AudioTooLargeError, match="over the 1000-byte limit") as info:
        buffer.append_base64(base64.b64encode(bytes(2000)).decode())
    assert (info.value.limit, info.value.unit) == (1000, "bytes")
    with pytest.raises(AudioTooLargeError):  # the size is judged from the text: no decoding of a huge payload
        decode_base64("!" * 4000, max_bytes=1000)  # not base64 at all: decoding it first would say so instead
    buffer.append_base64(base64.b64encode(bytes(1000)).decode())
    assert buffer.duration_ms == pytest.approx(1000 / 2 / 24)


def test_buffer_duration_is_bounded_and_a_refused_chunk_changes_nothing() -> None:
    buffer = InputAudioBuffer(AudioLimits(max_buffer_ms=1000))
    buffer.append(tone(800).tobytes())
    with pytest.raises(AudioTooLargeError, match="1000 ms limit; commit or clear it first"):
        buffer.append(tone(300).tobytes())
    assert buffer.duration_ms == pytest.approx(800)
    buffer.clear()
    buffer.append(tone(300).tobytes())  # room again after a clear
    assert buffer.session_ms == pytest.approx(1100)


def test_commit_of_an_empty_buffer_and_commit_until_a_vad_timestamp() -> None:
    buffer = InputAudioBuffer()
    with pytest.raises(EmptyAudioError, match="empty input audio buffer"):
        buffer.commit()
    buffer.append(tone(1000).tobytes())
    taken = buffer.commit_until(600)
    assert taken.size == 24_000 * 600 // 1000
    assert buffer.duration_ms == pytest.approx(400)
    assert buffer.commit().size == 24_000 * 400 // 1000
    assert buffer.session_ms == pytest.approx(1000)  # the session clock keeps counting


def test_silence_trimmed_while_nobody_speaks_never_fills_the_buffer() -> None:
    buffer = InputAudioBuffer(AudioLimits(max_buffer_ms=1000))
    for _ in range(50):  # 5 s of silence in 100 ms appends, keeping only 300 ms of prefix padding
        buffer.append(bytes(4800))
        buffer.trim_before(buffer.session_ms - 300)
    assert buffer.duration_ms == pytest.approx(300)
    assert buffer.session_ms == pytest.approx(5000)
    assert buffer.commit_until(5000).size == 24_000 * 300 // 1000


def sox_g711(samples: np.ndarray, encoding: str, tmp: Path) -> bytes:
    """The reference: sox encodes 8 kHz PCM16 as G.711 (independent of our code)."""
    src, dst = tmp / "in.raw", tmp / f"out.{encoding}"
    src.write_bytes(samples.astype("<i2").tobytes())
    subprocess.run(
        ["sox", "-D", "-t", "raw", "-r", "8000", "-e", "signed", "-b", "16", "-c", "1", str(src),
         "-t", "raw", "-e", encoding, "-b", "8", str(dst)],
        check=True,
    )  # fmt: skip
    return dst.read_bytes()


@pytest.mark.parametrize(
    ("encoding", "encode", "decode"), [("u-law", ulaw_encode, ulaw_decode), ("a-law", alaw_encode, alaw_decode)]
)
def test_g711_matches_sox(encoding: str, encode, decode, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    ramp = np.linspace(-32768, 32767, 8000 * 2).astype(np.int16)
    ours, theirs = encode(ramp), sox_g711(ramp, encoding, tmp_path)
    agree = np.mean(np.frombuffer(ours, np.uint8) == np.frombuffer(theirs, np.uint8))
    assert agree > 0.98, f"{encoding}: only {agree:.1%} of codes agree with sox"
    # where they differ (16 -> 13 bit rounding of negatives at a step border), they are neighbours
    levels = np.unique(decode(np.arange(256, dtype=np.uint8).tobytes()))
    ours_level, theirs_level = np.searchsorted(levels, decode(ours)), np.searchsorted(levels, decode(theirs))
    assert np.max(np.abs(ours_level - theirs_level)) <= 1
    # decoding every code and encoding it again gives the same code (the tables are exact inverses)
    codes = np.arange(256, dtype=np.uint8).tobytes()
    again = encode(decode(codes))
    if encoding == "u-law":  # 0x7F and 0xFF both mean zero; encoders pick 0xFF
        assert np.count_nonzero(np.frombuffer(again, np.uint8) != np.arange(256)) <= 1
    else:
        assert again == codes


def test_telephony_round_trip_keeps_the_signal() -> None:
    signal = tone(500, hz=300.0)
    for fmt in (PCMU, PCMA):
        wire = from_pcm16_24k(signal, fmt)
        assert len(wire) == 4000  # 500 ms at 8 kHz, one byte a sample
        back = to_pcm16_24k(wire, fmt).astype(np.float64)
        n = min(back.size, signal.size)
        snr = 10 * np.log10(np.sum(signal[:n].astype(np.float64) ** 2) / np.sum((signal[:n] - back[:n]) ** 2))
        assert snr > 25, f"{fmt.type}: SNR {snr:.1f} dB"


def test_streamed_resampling_equals_whole_signal_resampling() -> None:
    signal = tone(1000, hz=500.0)
    stream = Resampler(24_000, 16_000)
    pieces = [stream.push(signal[i : i + 480]) for i in range(0, signal.size, 480)]
    pieces.append(stream.push(np.zeros(0, np.int16), last=True))
    streamed, whole = np.concatenate(pieces), resample(signal, 24_000, 16_000)
    assert abs(streamed.size - 16_000) <= 1
    assert np.max(np.abs(streamed[1000:15000].astype(int) - whole[1000:15000].astype(int))) <= 2


def test_sentences_come_out_as_soon_as_they_end() -> None:
    splitter = SentenceSplitter()
    assert splitter.push("Order A1001 costs $89") == []
    assert splitter.push(".99. Shall") == ["Order A1001 costs $89.99."]
    assert splitter.push(" I start the return?") == []  # no whitespace after the "?" yet
    assert splitter.push(" ") == ["Shall I start the return?"]
    assert splitter.flush() is None
    splitter.push("Done")
    assert splitter.flush() == "Done"


def test_the_first_piece_ends_at_its_first_clause_and_later_ones_are_whole_sentences() -> None:
    splitter = SentenceSplitter()
    assert splitter.push("Hi, you've reached the help") == ["Hi,"]  # spoken while the rest is synthesised
    assert splitter.push(" line. We sold 1,000 today, and") == ["you've reached the help line."]
    assert splitter.push(" more: many. ") == ["We sold 1,000 today, and more: many."]
    whole = SentenceSplitter(first_clause=False)
    assert whole.push("Hi, you've reached the help line. ") == ["Hi, you've reached the help line."]


def test_a_run_on_sentence_is_cut_at_a_comma() -> None:
    splitter = SentenceSplitter(max_chars=40)
    out = splitter.push("one two three four five, six seven eight nine ten eleven")
    assert out == ["one two three four five,"]


def test_turn_detector_pads_the_start_but_never_before_a_reset() -> None:
    detector = TurnDetector(ServerVadConfig(threshold=0.6, prefix_padding_ms=300, silence_duration_ms=90))
    assert detector.frame(0.59, 0, 32) is None  # under the threshold
    assert detector.frame(0.9, 1000, 1032) == SpeechStarted(audio_start_ms=700)
    assert detector.frame(0.5, 1032, 1064) is None  # above threshold - hysteresis: still speech
    assert detector.frame(0.1, 1064, 1096) is None
    assert detector.frame(0.1, 1096, 1128) is None
    assert detector.frame(0.1, 1128, 1160) == SpeechStopped(audio_end_ms=1160)  # 96 ms of silence >= 90
    detector.reset(at_ms=2000)
    assert detector.frame(0.9, 2064, 2096) == SpeechStarted(audio_start_ms=2000)  # not 1764: cleared audio is gone
