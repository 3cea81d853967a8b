"""The official JavaScript clients, unchanged, against a real stack serving TLS with the dev CA:
the ``openai`` Node SDK (it only speaks ``wss://``) and ``@openai/agents-realtime`` (header auth, and the
subprotocol auth it uses in browsers)."""

from __future__ import annotations

import json
import ssl
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from switchboard.local.devcert import DevCertificate, ensure_dev_certificate
from switchboard.local.stack import Stack

from .client import RawClient, done_of
from .node_clients import run_node
from .stacks import make_stack

pytestmark = pytest.mark.system

TURNS = ["I want a refund for order A1001", "jane@example.com, PIN 1234", "and what about my invoice?"]
"""Read-only: the shared store stays the same whatever ran before."""


@pytest.fixture(scope="module")
def tls(tmp_path_factory: pytest.TempPathFactory) -> DevCertificate:
    return ensure_dev_certificate(tmp_path_factory.mktemp("tls"))


@pytest.fixture(scope="module")
def tls_retail(tmp_path_factory: pytest.TempPathFactory, tls: DevCertificate) -> Iterator[Stack]:
    with make_stack(tmp_path_factory.mktemp("tls-retail"), env=tls.edge_env()) as stack:
        yield stack


def node_env(stack: Stack, tls: DevCertificate) -> dict[str, str]:
    return {"SB_API_KEY": stack.api_key, "SB_TURNS": json.dumps(TURNS), "NODE_EXTRA_CA_CERTS": str(tls.ca)}


def responses(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [e["response"] for e in events if e["type"] == "response.done"]


def assert_conversation(events: list[dict[str, Any]]) -> None:
    dones = responses(events)
    assert [d["status"] for d in dones] == ["completed"] * 3
    assert [d["metadata"]["agent"] for d in dones] == ["auth", "returns", "billing"]
    assert [d["metadata"]["handoff_outcomes"] for d in dones] == ["redirected_auth", "accepted", "accepted"]
    assert not [e for e in events if e["type"] == "error" or e["type"].startswith("switchboard.")]


async def test_the_edge_serves_tls_with_the_dev_certificate(tls_retail: Stack, tls: DevCertificate) -> None:
    assert tls_retail.ws_base.startswith("wss://")
    trusting = ssl.create_default_context(cafile=str(tls.ca))
    async with RawClient(tls_retail, ssl_context=trusting) as client:
        await client.open()
        assert done_of(await client.turn("hello"))["status"] == "completed"
    with pytest.raises(ssl.SSLCertVerificationError):  # a client that does not trust the dev CA refuses it
        async with RawClient(tls_retail, ssl_context=ssl.create_default_context(cafile=_empty_bundle(tls))):
            pass


def _empty_bundle(tls: DevCertificate) -> str:
    other = ensure_dev_certificate(Path(tls.ca).parent / "other-ca")  # a CA the edge's certificate is not from
    return str(other.ca)


def test_openai_node_sdk_over_wss(tls_retail: Stack, tls: DevCertificate) -> None:
    base = tls_retail.ws_base.replace("wss://", "https://", 1)
    report = run_node("openai_ws.mjs", node_env(tls_retail, tls) | {"SB_BASE_URL": base})
    assert report["events"][0]["type"] == "session.created"
    assert_conversation(report["events"])


@pytest.mark.parametrize("auth", ["header", "browser"])
def test_openai_agents_realtime_session(tls_retail: Stack, tls: DevCertificate, auth: str) -> None:
    url = f"{tls_retail.ws_base}/realtime?model=switchboard"
    report = run_node("agents_realtime.mjs", node_env(tls_retail, tls) | {"SB_URL": url, "SB_AUTH": auth})
    assert report["errors"] == []
    assert report["subprotocol"] == ("realtime" if auth == "browser" else None)
    assert_conversation(report["events"])
    said = [c.get("transcript") or c.get("text") or "" for item in report["history"]
            if item.get("role") == "assistant" for c in item.get("content") or []]  # fmt: skip
    assert len(said) == 3 and "A1001" in said[1], report["history"]
