"""The chaos harness's pure parts: the scripted chaos model, percentiles, reasons, the fault catalog."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any

from switchboard.agents import load_scenario
from switchboard.testing.chaos import (
    CLERK,
    CONSULT,
    DEFAULT_FAULTS,
    EFFECTS_DB,
    ChaosModel,
    ChaosTurn,
    EffectTally,
    ModelFaults,
    fault_catalog,
    percentiles,
    reason,
    tally_effects,
)

ROOT = Path(__file__).resolve().parents[2]


def body(agent: str, *messages: dict[str, Any]) -> dict[str, Any]:
    return {"messages": [{"role": "system", "content": f"Chaos agent {agent}. Rules."}, *messages]}


def user(text: str) -> dict[str, Any]:
    return {"role": "user", "content": text}


def test_chaos_model_plays_each_agent_like_its_offline_rules() -> None:
    model = ChaosModel(ModelFaults(base_delay_s=0))
    assert model(body("desk", user("effect r1s1t0"))).tool_calls == [
        ("transfer_to_clerk", {"reason": "asks the clerk"})
    ]
    assert model(body("clerk", user("effect r1s1t0"))).tool_calls == [("record_effect", {"label": "effect r1s1t0"})]
    assert model(body("clerk", user("note r1s1t1"))).text == "clerk noted [note r1s1t1]"
    assert model(body("generalist", user("ask effect r1"))).tool_calls[0][0] == "transfer_to_desk"
    assert model(body("desk", user("ask effect r1"))).tool_calls[0][0] == "consult_supervisor"
    call = {"role": "assistant", "tool_calls": [{"id": "c1", "function": {"name": "record_effect", "arguments": "{}"}}]}
    output = {"role": "tool", "tool_call_id": "c1", "content": json.dumps({"label": "effect r1s1t0"})}
    assert model(body("supervisor", user("effect r1s1t0"), call, output)).text == "supervisor recorded [effect r1s1t0]"
    assert model.calls == 6 and model.stats()["http_500"] == 0


def test_chaos_model_fails_the_configured_share_of_calls_only_while_faulty() -> None:
    model = ChaosModel(ModelFaults(p_500=0.2, p_429=0.1, p_slow=0.1, base_delay_s=0), seed=7)
    assert all(model(body("clerk", user("note x"))).status == 200 for _ in range(50))
    model.faulty = True
    replies = [model(body("clerk", user("note x"))) for _ in range(2000)]
    share_500 = sum(r.status == 500 for r in replies) / len(replies)
    share_429 = sum(r.status == 429 for r in replies) / len(replies)
    assert 0.16 < share_500 < 0.24 and 0.07 < share_429 < 0.13
    assert model.slow == sum(r.delay_s > 1 for r in replies) > 0


def test_percentiles_are_nearest_rank() -> None:
    assert percentiles([]) == {"n": 0, "p50": 0.0, "p99": 0.0, "max": 0.0}
    got = percentiles([float(v) for v in range(1, 101)])
    assert got == {"n": 100, "p50": 50.0, "p99": 99.0, "max": 100.0}


def test_reasons_are_counted_without_their_specifics() -> None:
    a = reason("switchboard.v1.agent.clerk.turn went silent for 1.5s (responder lost)")
    b = reason("switchboard.v1.agent.desk.turn went silent for 2.0s (responder lost)")
    assert a == b == "<subject> went silent for Ns (responder lost)"


def test_workloads_and_catalog() -> None:
    assert CLERK.text(0, "L") == "effect L" and CLERK.text(1, "L") == "note L"
    assert CONSULT.text(3, "L") == "ask effect L" and CONSULT.is_effect("ask effect L")
    catalog = fault_catalog()
    assert set(DEFAULT_FAULTS) == set(catalog)
    agents = set(load_scenario("chaos", ROOT / "chaos" / "scenarios").config.agent_names)
    for spec in catalog.values():
        assert set(spec.replicas) <= agents, spec.name
        assert spec.description and spec.title


def test_effects_are_tallied_from_the_witness_database(tmp_path: Path) -> None:
    with sqlite3.connect(tmp_path / EFFECTS_DB) as db:
        db.execute("CREATE TABLE executions (key TEXT, label TEXT, agent TEXT, pid INTEGER, ts REAL)")
        db.execute("CREATE TABLE effects (key TEXT PRIMARY KEY, label TEXT, agent TEXT, ts REAL)")
        rows = [("k1", "effect a"), ("k2", "effect a"), ("k3", "effect b"), ("k4", "effect c"), ("k9", "other run")]
        db.executemany("INSERT INTO effects VALUES (?, ?, 'clerk', 0)", rows)
        db.executemany("INSERT INTO executions VALUES (?, 'x', 'clerk', 1, 0)", [("k1",), ("k1",), ("k3",)])
    turns = [
        ChaosTurn(0, 0, "effect a", "item_a", True, outcome="completed"),
        ChaosTurn(0, 1, "effect b", "item_b", True, outcome="failed"),
        ChaosTurn(0, 2, "effect c", "item_c", True, outcome="completed"),
        ChaosTurn(0, 3, "effect d", "item_d", True, outcome="completed"),
    ]
    tally = tally_effects(tmp_path, turns)
    assert tally == EffectTally(duplicated={"effect a": 2}, recorded=4, missing=1, orphan=1, re_executions=1)
