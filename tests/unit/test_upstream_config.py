"""The upstream (OpenAI Realtime API) front agent as configuration: refused without a key, at load; what the
upstream session is told; history items as upstream items."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from switchboard.agents import ScenarioConfig, load_scenario
from switchboard.models import build_provider, check_realtime_keys
from switchboard.schemas import FunctionCallItem, FunctionCallOutputItem, MessageItem
from switchboard.settings import Settings
from switchboard_edge import create_app
from switchboard_edge.upstream import UpstreamConfig
from switchboard_edge.upstream.link import DEFAULT_URL, upstream_item
from switchboard_edge.upstream.relay import base64_pcm_ms

SCENARIOS = Path(__file__).resolve().parents[1] / "system" / "scenarios"


def scenario(**front: Any) -> dict[str, Any]:
    agent = {"name": "front", "instructions": "hi", "model": {"provider": "openai-realtime", "name": "gpt-realtime"}}
    return {
        "name": "s", "entry_agent": "front", "fallback_agent": "other", "tools_module": None,
        "agents": [agent | front, {"name": "other", "instructions": "x", "model": {"provider": "offline"}}],
    }  # fmt: skip


def test_no_key_refuses_the_scenario_with_a_clear_message() -> None:
    config = load_scenario("upstream", SCENARIOS).config
    with pytest.raises(ValueError) as caught:
        check_realtime_keys(config, {})
    message = str(caught.value)
    assert "front" in message and "openai-realtime" in message and "OPENAI_API_KEY is not set" in message
    check_realtime_keys(config, {"OPENAI_API_KEY": "sk-x"})  # with a key it loads


def test_the_edge_refuses_to_start_without_a_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    with pytest.raises(ValueError, match="OPENAI_API_KEY is not set"):
        create_app(Settings(), load_scenario("upstream", SCENARIOS))


def test_no_agent_process_serves_an_upstream_agent() -> None:
    config = ScenarioConfig.model_validate(scenario())
    front = config.agent("front")
    assert front is not None and front.upstream
    with pytest.raises(ValueError, match="no agent process serves it"):
        build_provider(front, {}, {"OPENAI_API_KEY": "sk-x"})


@pytest.mark.parametrize(
    ("change", "error"),
    [
        ({"tools": ["lookup"]}, "scenario tools do not run"),
        ({"role": "supervisor"}, "cannot be a supervisor"),
    ],
)
def test_an_upstream_agent_holds_no_tools_and_is_no_supervisor(change: dict[str, Any], error: str) -> None:
    with pytest.raises(ValidationError, match=error):
        ScenarioConfig.model_validate(scenario(**change))


def test_one_upstream_agent_per_scenario() -> None:
    raw = scenario()
    raw["agents"][1]["model"] = {"provider": "openai-realtime"}
    with pytest.raises(ValidationError, match="at most one agent may run on the Realtime API"):
        ScenarioConfig.model_validate(raw)


def test_upstream_url_key_and_settings() -> None:
    front = ScenarioConfig.model_validate(scenario()).agent("front")
    assert front is not None
    plain = UpstreamConfig.of(front, {"OPENAI_API_KEY": "sk-x"})
    assert (plain.url, plain.api_key, plain.model) == (DEFAULT_URL, "sk-x", "gpt-realtime")
    assert UpstreamConfig.of(front, {"SWITCHBOARD_REALTIME_URL": "ws://h:1/v1/"}).url == "ws://h:1/v1"
    tuned = ScenarioConfig.model_validate(
        scenario(
            model={
                "provider": "openai-realtime",
                "name": "m",
                "base_url": "wss://x/v1",
                "settings": {"voice": "marin", "transcription": {"model": "whisper-1"}},
            }
        )  # fmt: skip
    ).agent("front")
    assert tuned is not None
    config = UpstreamConfig.of(tuned, {"SWITCHBOARD_REALTIME_URL": "ws://ignored"})
    assert (config.url, config.voice, config.transcription) == ("wss://x/v1", "marin", {"model": "whisper-1"})


def test_history_items_become_upstream_items_with_their_ids() -> None:
    assert upstream_item(MessageItem(id="a", role="user", text="hi")) == {
        "id": "a", "type": "message", "role": "user", "content": [{"type": "input_text", "text": "hi"}],
    }  # fmt: skip
    said = upstream_item(MessageItem(id="b", role="assistant", text="yes", agent="billing"))
    assert said is not None and said["content"] == [{"type": "output_text", "text": "yes"}]
    call = upstream_item(FunctionCallItem(id="c", call_id="k", name="transfer_to_billing", arguments="{}"))
    assert call == {"id": "c", "type": "function_call", "call_id": "k", "name": "transfer_to_billing",
                    "arguments": "{}"}  # fmt: skip
    output = upstream_item(FunctionCallOutputItem(id="d", call_id="k", output="ok"))
    assert output == {"id": "d", "type": "function_call_output", "call_id": "k", "output": "ok"}


def test_relayed_audio_length_is_read_from_the_base64_length() -> None:
    import base64

    for size in (4800, 4802, 4804, 2):
        assert base64_pcm_ms(base64.b64encode(bytes(size)).decode()) == size / 2 * 1000 / 24000
