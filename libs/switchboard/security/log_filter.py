"""Credentials never reach a log line: API keys and client secrets are scrubbed from every record.

Libraries log what they see: at debug level the WebSocket server logs every upgrade header, the
``Authorization`` header and the ``openai-insecure-api-key.<key>`` subprotocol included. Key ids stay
(``sb-<id>-[REDACTED]``) so a line still says which key was used. The edge takes no credential from a URL,
but a client may put one there (``?api_key=...``), and the server's access log has the URL: the values of
such query parameters are scrubbed too.
"""

from __future__ import annotations

import logging
import re

from ..log_fields import RECORD_METADATA

_QUERY_NAMES = r"(?:[a-z]+[_-])?(?:api_?key|key|token|secret|password|authorization)"
"""Query parameters that carry a credential when a client puts one in the URL (``api_key``, ``token``...)."""

_PATTERNS = (
    (re.compile(r"(?i)\b(bearer\s+)[^\s\"',;]+"), r"\1[REDACTED]"),
    (re.compile(r"(openai-insecure-api-key\.)[^\s\"',;]+"), r"\1[REDACTED]"),
    (re.compile(r"\bek_[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)?"), "ek_[REDACTED]"),
    (re.compile(r"\b(sb-[0-9a-f]{12}-)[A-Za-z0-9_-]+"), r"\1[REDACTED]"),
    (re.compile(rf"(?i)([?&](?:{_QUERY_NAMES})=)[^&\s\"']+"), r"\1[REDACTED]"),
)


_ANY = re.compile(rf"(?i)bearer|openai-insecure-api-key\.|\bek_|\bsb-[0-9a-f]{{12}}-|[?&](?:{_QUERY_NAMES})=").search
"""What every pattern's match starts with: one scan tells a clean text (nearly every one) from the rest."""


def scrub_credentials(text: str) -> str:
    if not _ANY(text):
        return text
    for pattern, replacement in _PATTERNS:
        text = pattern.sub(replacement, text)
    return text


class CredentialFilter(logging.Filter):
    """Scrubs credentials from a record's message, its arguments and its string fields."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.msg, str):
            record.msg = scrub_credentials(record.msg)
        if isinstance(record.args, tuple):
            record.args = tuple(scrub_credentials(a) if isinstance(a, str) else a for a in record.args)
        for key, value in list(vars(record).items()):
            if isinstance(value, str) and key not in RECORD_METADATA:
                setattr(record, key, scrub_credentials(value))
        return True
