"""Credentials at the WebSocket upgrade, and the TLS settings and development certificate."""

from __future__ import annotations

import ssl
from pathlib import Path

import pytest
from cryptography import x509
from pydantic import ValidationError
from starlette.datastructures import Headers

from switchboard.local.devcert import ensure_dev_certificate
from switchboard.security.api_keys import KeyRing, key_fingerprint
from switchboard.settings import Settings
from switchboard_edge.auth import Authenticator, Principal, Refusal, api_key_verifier

AUTH = Authenticator({"api_key": api_key_verifier(KeyRing({"sk-good"}))})


@pytest.mark.parametrize(
    ("headers", "subprotocol"),
    [
        ({"authorization": "Bearer sk-good"}, None),
        ({"authorization": "bearer  sk-good "}, None),
        ({"sec-websocket-protocol": "realtime, openai-insecure-api-key.sk-good"}, "realtime"),
        ({"sec-websocket-protocol": "realtime, openai-insecure-api-key.sk-good, openai-beta.realtime-v1"}, "realtime"),
        ({"sec-websocket-protocol": "openai-insecure-api-key.sk-good"}, None),  # nothing we could select
    ],
)
def test_accepted_credentials(headers: dict[str, str], subprotocol: str | None) -> None:
    principal = AUTH.authenticate(Headers(headers))
    assert isinstance(principal, Principal)
    assert principal.owner == f"dev-{key_fingerprint('sk-good')}" and principal.subprotocol == subprotocol


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"authorization": "Bearer sk-bad"},
        {"authorization": "Basic sk-good"},
        {"sec-websocket-protocol": "realtime"},
        {"sec-websocket-protocol": "realtime, openai-insecure-api-key."},
        {"sec-websocket-protocol": "realtime, openai-insecure-api-key.sk-bad"},
        # a wrong header is not rescued by a right subprotocol: the first credential presented decides
        {"authorization": "Bearer sk-bad", "sec-websocket-protocol": "realtime, openai-insecure-api-key.sk-good"},
    ],
)
def test_refused_credentials(headers: dict[str, str]) -> None:
    refusal = AUTH.authenticate(Headers(headers))
    assert isinstance(refusal, Refusal) and (refusal.status, refusal.code) == (401, "invalid_api_key")


def test_dev_certificate_verifies_for_the_local_names_and_is_reused(tmp_path: Path) -> None:
    dev = ensure_dev_certificate(tmp_path)
    cert = x509.load_pem_x509_certificate(dev.cert.read_bytes())
    names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert {str(n.value) for n in names} == {"localhost", "127.0.0.1", "::1"}
    context = ssl.create_default_context(cafile=str(dev.ca))  # the CA loads as a trust anchor
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server.load_cert_chain(dev.cert, dev.key)  # the pair matches
    assert context.cert_store_stats()["x509_ca"] == 1
    assert oct(dev.key.stat().st_mode & 0o777) == "0o600"
    again = ensure_dev_certificate(tmp_path)
    assert again.cert.read_bytes() == dev.cert.read_bytes()


def test_tls_settings_go_together_and_must_exist(tmp_path: Path) -> None:
    dev = ensure_dev_certificate(tmp_path)
    assert Settings(tls_cert=dev.cert, tls_key=dev.key).tls_cert == dev.cert
    with pytest.raises(ValidationError, match="go together"):
        Settings(tls_cert=dev.cert)
    with pytest.raises(ValidationError, match="not a readable file"):
        Settings(tls_cert=dev.cert, tls_key=tmp_path / "missing.pem")
