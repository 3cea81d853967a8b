"""Which fields of a log record can carry what a call passed (the log filters scrub only those)."""

from __future__ import annotations

RECORD_METADATA = frozenset(
    {"msg", "name", "levelname", "pathname", "filename", "module", "funcName", "processName", "threadName", "taskName"}
)
"""``LogRecord`` fields that logging fills from the code and the process, never from what a call passes:
the filters leave them alone (a log line's own fields are scrubbed, ``msg`` and ``args`` on their own)."""
