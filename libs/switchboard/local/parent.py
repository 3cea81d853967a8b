"""A process the launcher started stops when the launcher is gone (even SIGKILLed), never orphaned."""

from __future__ import annotations

import os
import signal
import threading
import time
from typing import Final

LAUNCHER_PID_ENV: Final = "SWITCHBOARD_LAUNCHER_PID"
"""Set by ``Stack`` in every process it starts: the pid whose disappearance stops the process."""
_POLL_S: Final = 0.5


def stop_with_launcher() -> None:
    """If started by a launcher, send ourselves SIGTERM (the graceful stop) once it is gone."""
    value = os.environ.get(LAUNCHER_PID_ENV)
    if not value:
        return
    launcher = int(value)

    def watch() -> None:
        while os.getppid() == launcher:
            time.sleep(_POLL_S)  # ok-sleep: the parent check's poll interval
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=watch, name="launcher-watch", daemon=True).start()
