"""One ``switchboard run`` per var directory: two would share one JetStream store and the same log files."""

from __future__ import annotations

import fcntl
import os
from pathlib import Path
from typing import IO

from ..errors import ConfigError

LOCK_FILE = "run.lock"


def lock_var_dir(var: Path) -> IO[str]:
    """Hold ``var/run.lock`` while the returned file is open (the kernel drops the lock when this process
    ends, even SIGKILLed: a killed run leaves no stale lock). ``ConfigError`` if another run holds it."""
    var.mkdir(parents=True, exist_ok=True)
    held = open(var / LOCK_FILE, "a+")  # noqa: SIM115 - open as long as the run: the caller closes it
    try:
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        held.seek(0)
        holder = held.read().strip() or "?"
        held.close()
        raise ConfigError(
            f"{var} is in use by another `switchboard run` (pid {holder}): stop it, or give this one another --var-dir"
        ) from None
    held.seek(0)
    held.truncate()
    held.write(f"{os.getpid()}\n")
    held.flush()
    return held
