"""`switchboard voice say` and `switchboard voice transcribe` as a person runs them (real processes)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from switchboard.voice import read_wav

from .conftest import words

CLI = [sys.executable, "-m", "switchboard"]


def test_say_then_transcribe(tmp_path: Path) -> None:
    out = tmp_path / "hello.wav"
    said = subprocess.run([*CLI, "voice", "say", "Sure, I can help with that.", str(out)],
                          capture_output=True, text=True, timeout=120, check=True)  # fmt: skip
    assert "s of speech" in said.stdout
    assert 1.0 < read_wav(out).size / 24_000 < 5.0
    heard = subprocess.run(
        [*CLI, "voice", "transcribe", str(out)], capture_output=True, text=True, timeout=120, check=True
    )
    assert words(heard.stdout) == ["sure", "i", "can", "help", "with", "that"], heard.stdout


def test_transcribe_refuses_a_file_that_is_not_wav(tmp_path: Path) -> None:
    bad = tmp_path / "notes.wav"
    bad.write_text("not audio at all, just text")
    result = subprocess.run([*CLI, "voice", "transcribe", str(bad)], capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert "not a PCM WAV file" in result.stderr and "Traceback" not in result.stderr


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("", "nothing to say: TEXT is blank; no WAV written"),
        ("  \t ", "nothing to say: TEXT is blank; no WAV written"),
        ("...", "Piper says nothing for '...'; no WAV written"),  # words Piper has no sound for
    ],
)
def test_say_refuses_text_with_nothing_to_speak_and_writes_no_file(tmp_path: Path, text: str, says: str) -> None:
    """It wrote a WAV of no samples and said so as a success."""
    out = tmp_path / "nothing.wav"
    result = subprocess.run([*CLI, "voice", "say", text, str(out)], capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert result.stderr == f"switchboard voice: {says}\n", result.stderr
    assert not out.exists()
