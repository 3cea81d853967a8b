"""``switchboard chat --voice IN.wav OUT.wav``: one spoken turn through a running edge, WAV in, WAV out.

The caller's WAV (PCM16, any rate, mono or stereo) is sent push-to-talk (append, commit, response);
the spoken answer is written to ``OUT.wav`` (PCM16 mono, 24 kHz) and the transcripts both ways are
printed. Uses the official ``openai`` SDK's realtime client, as ``switchboard chat`` does.
"""

from __future__ import annotations

import base64
from pathlib import Path

import numpy as np
from openai import AsyncOpenAI

from .voice import PCM_RATE, encode_base64, from_pcm16_24k, read_wav, write_wav
from .voice.formats import pcm16_from_bytes

CHUNK_MS = 100
SESSION = {
    "type": "realtime", "output_modalities": ["audio"],
    "audio": {"input": {"turn_detection": None}, "output": {"format": {"type": "audio/pcm", "rate": PCM_RATE}}},
}  # fmt: skip
"""Push-to-talk (the whole file is one turn, whatever its pauses) and spoken answers."""


async def chat_voice(url: str, key: str, session: str | None, wav_in: Path, wav_out: Path) -> int:
    """Returns 0, or 1 when the edge reported an error (printed)."""
    caller = read_wav(wav_in)
    client = AsyncOpenAI(api_key=key or "missing", websocket_base_url=url, base_url=url.replace("ws", "http", 1))
    query = {"session_id": session} if session else {}
    chunks: list[np.ndarray] = []
    failed = False
    async with client.realtime.connect(model="switchboard", extra_query=query) as conn:
        await conn.session.update(session=SESSION)  # type: ignore[arg-type]
        step = PCM_RATE * CHUNK_MS // 1000
        for i in range(0, caller.size, step):
            await conn.input_audio_buffer.append(audio=encode_base64(from_pcm16_24k(caller[i : i + step])))
        await conn.input_audio_buffer.commit()
        await conn.response.create()
        spoke = False
        async for event in conn:
            if event.type == "conversation.item.input_audio_transcription.completed":
                print(f"you> {event.transcript}", flush=True)
            elif event.type == "response.output_audio_transcript.delta":
                print(("" if spoke else "bot> ") + event.delta, end="", flush=True)
                spoke = True
            elif event.type == "response.output_audio.delta":
                chunks.append(pcm16_from_bytes(base64.b64decode(event.delta)))
            elif event.type == "error":
                print(f"  !! error {event.error.code}: {event.error.message}", flush=True)
                failed = True
            elif event.type == "response.done":
                meta = event.response.metadata or {}
                print(f"\n  [answered by {meta.get('agent')}, {event.response.status}]", flush=True)
                break
    answer = np.concatenate(chunks) if chunks else np.zeros(0, dtype=np.int16)
    write_wav(wav_out, answer)
    print(f"  [{answer.size / PCM_RATE:.1f} s of answer written to {wav_out}]", flush=True)
    return 1 if failed else 0
