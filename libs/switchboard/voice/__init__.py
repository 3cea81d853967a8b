"""The speech pipeline: formats, bounded input buffer, VAD turn detection, STT and TTS behind small
interfaces, with offline engines from wheels (the ``voice`` extra). Independent of any transport:
the edge's Realtime session (or a speech service on the bus) wires it to clients.

Importing this package needs only numpy; the engines import their libraries when loaded.
"""

from .buffer import AudioLimits, InputAudioBuffer
from .errors import (
    AudioDecodeError,
    AudioFormatError,
    AudioLengthError,
    AudioTooLargeError,
    EmptyAudioError,
    ModelUnavailableError,
    VoiceError,
    WavError,
)
from .formats import (
    G711_RATE,
    PCM16_24K,
    PCM_RATE,
    PCMA,
    PCMU,
    AudioFormat,
    Resampler,
    decode_base64,
    encode_base64,
    from_pcm16_24k,
    resample,
    to_pcm16_24k,
)
from .interfaces import (
    SpeechChunk,
    SpeechStarted,
    SpeechStopped,
    SpeechToText,
    TextToSpeech,
    Transcript,
    TranscriptEvent,
    TranscriptPartial,
    VadEvent,
    VoiceActivityDetector,
)
from .offline import VoiceEngines, load_offline
from .semantic_vad import SemanticTurnDetector, SemanticVadConfig, TurnDetection, end_of_turn
from .sentences import SentenceSplitter
from .turn_detection import ServerVadConfig, TurnDetector
from .wav import read_wav, write_wav

__all__ = [
    "G711_RATE",
    "PCM16_24K",
    "PCMA",
    "PCMU",
    "PCM_RATE",
    "AudioDecodeError",
    "AudioFormat",
    "AudioFormatError",
    "AudioLengthError",
    "AudioLimits",
    "AudioTooLargeError",
    "EmptyAudioError",
    "InputAudioBuffer",
    "ModelUnavailableError",
    "Resampler",
    "SemanticTurnDetector",
    "SemanticVadConfig",
    "SentenceSplitter",
    "ServerVadConfig",
    "SpeechChunk",
    "SpeechStarted",
    "SpeechStopped",
    "SpeechToText",
    "TextToSpeech",
    "Transcript",
    "TranscriptEvent",
    "TranscriptPartial",
    "TurnDetection",
    "TurnDetector",
    "VadEvent",
    "VoiceActivityDetector",
    "VoiceEngines",
    "VoiceError",
    "WavError",
    "decode_base64",
    "encode_base64",
    "end_of_turn",
    "from_pcm16_24k",
    "load_offline",
    "read_wav",
    "resample",
    "to_pcm16_24k",
    "write_wav",
]
