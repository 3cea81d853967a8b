"""``make bench``: ``.venv/bin/python bench/run.py [options]`` (``--help`` lists them).

The benchmark is the ``switchboard_bench`` package next to this file, one concern per module (see its
``__init__``). The names below are re-exported for scripts that drive a stack with the bench's client.
"""

from __future__ import annotations

import sys

from switchboard_bench.client import Expect, Session, close_sessions, open_sessions
from switchboard_bench.common import BenchError, bounded, progress
from switchboard_bench.main import main
from switchboard_bench.stats import CpuMeter, summarize
from switchboard_bench.workload import Replies, paced_phase, plain_phase

__all__ = [
    "BenchError", "CpuMeter", "Expect", "Replies", "Session", "bounded", "close_sessions", "main", "open_sessions",
    "paced_phase", "plain_phase", "progress", "summarize",
]  # fmt: skip

if __name__ == "__main__":
    sys.exit(main())
