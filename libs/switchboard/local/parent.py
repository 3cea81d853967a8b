"""A process the launcher started stops when the launcher is gone (even SIGKILLed), never orphaned: the
kernel tells every one of them (:func:`popen_tied`), and a Switchboard service watches for it too
(:func:`stop_with_launcher`)."""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from typing import Any, Final

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


def popen_tied(cmd: list[str], **kwargs: Any) -> subprocess.Popen[bytes]:
    """``subprocess.Popen(cmd, **kwargs)`` for a child that must not outlive this process (nats-server, which
    cannot watch for us, and the services): the kernel sends it SIGTERM once this process is gone, even
    SIGKILLed (Linux ``PR_SET_PDEATHSIG``; elsewhere a plain ``Popen``).

    The kernel counts the *thread* that forked as the parent, so every such child is forked by one thread
    that lives as long as the process: forked by the supervisor's thread, nats-server would be stopped
    when supervision stops, before the edges drain.
    """
    if _prctl is None:
        return subprocess.Popen(cmd, **kwargs)
    tie = partial(_die_with, os.getpid())

    def spawn() -> subprocess.Popen[bytes]:
        return subprocess.Popen(cmd, preexec_fn=tie, **kwargs)

    return _SPAWNER.submit(spawn).result()


def _die_with(parent: int) -> None:
    """In the child, before exec: SIGTERM when the parent goes (and now, if it already went)."""
    assert _prctl is not None
    _prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    if os.getppid() != parent:
        os.kill(os.getpid(), signal.SIGTERM)


_PR_SET_PDEATHSIG: Final = 1
_prctl: Callable[[int, int], int] | None = (
    getattr(ctypes.CDLL(None), "prctl", None) if sys.platform == "linux" else None
)
_SPAWNER: Final = ThreadPoolExecutor(max_workers=1, thread_name_prefix="switchboard-spawner")
"""Its one thread is never idle-stopped: it lives until the interpreter exits."""
