"""Logging set-up: one JSON object per line, with the ``extra=`` fields of each call.

Every line carries ``trace_id`` and ``span_id`` (of the current span, when one is recording) and
``session_id`` (from ``telemetry.session_context``), ``null`` when absent; an ``extra=`` field of
the same name wins. Lines hold no conversation content unless a call puts it there, and PII (emails,
card numbers, SSNs, phone numbers) and credentials (API keys, client secrets) are redacted from every line.
"""

from __future__ import annotations

import json
import logging
import sys
import time

from .guardrails.stream import RedactingFilter
from .security.log_filter import CredentialFilter
from .telemetry.context import correlation_ids

_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime"}


class JsonFormatter(logging.Formatter):
    def __init__(self, service: str) -> None:
        super().__init__()
        self.service = service

    def format(self, record: logging.LogRecord) -> str:
        out = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "service": self.service,
            "logger": record.name,
            "msg": record.getMessage(),
            **correlation_ids(),
        }
        out.update({k: v for k, v in vars(record).items() if k not in _STANDARD and not k.startswith("_")})
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return json.dumps(out, default=str)


def configure(service: str, level: str = "INFO") -> None:
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(JsonFormatter(service))
    handler.addFilter(RedactingFilter())  # PII never reaches a log line, whatever a call passes
    handler.addFilter(CredentialFilter())  # nor an API key or client secret (libraries log upgrade headers)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    logging.getLogger("uvicorn.access").setLevel(logging.WARNING)
