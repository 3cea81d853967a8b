"""`switchboard voice say` and `switchboard voice transcribe` as a person runs them (real processes)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

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
