"""Which web pages may open a WebSocket to the edge (the ``Origin`` header of a browser's upgrade).

A browser sends ``Origin`` with every WebSocket upgrade, and a page can open a WebSocket to any host: the
edge refuses (403 ``origin_not_allowed``) a page whose origin is neither the edge's own nor listed in
``SWITCHBOARD_ALLOWED_ORIGINS`` (``*``: any). Servers and SDKs send no ``Origin`` and are not affected.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from starlette.datastructures import Headers


def parse_origins(setting: str) -> frozenset[str]:
    return frozenset(o.strip().rstrip("/").lower() for o in setting.split(",") if o.strip())


def origin_allowed(headers: Headers, allowed: frozenset[str]) -> bool:
    origin = headers.get("origin")
    if origin is None:
        return True
    origin = origin.strip().rstrip("/").lower()
    if "*" in allowed or origin in allowed:
        return True
    parts = urlsplit(origin)
    return parts.scheme in ("http", "https") and parts.netloc == headers.get("host", "").lower()
