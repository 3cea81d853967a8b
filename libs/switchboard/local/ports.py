"""Free-port helper for local processes and tests."""

from __future__ import annotations

import socket
import threading

_given: set[tuple[str, int]] = set()
_given_lock = threading.Lock()


def free_port(host: str = "127.0.0.1") -> int:
    """A port that was free a moment ago (the OS picks it), and that this process has not handed out before.

    The port is only bound by the process it is given to, later: until then the OS may pick it again. Two
    stacks started side by side (the benchmark's tracing pair, tests) would then give two services one
    port, and the one that binds second dies with ``EADDRINUSE``. A port handed out once is never handed
    out again by this process.
    """
    with _given_lock:
        while True:
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
                s.bind((host, 0))
                port = int(s.getsockname()[1])
            if (host, port) not in _given:
                _given.add((host, port))
                return port


def in_use(port: int, host: str = "127.0.0.1") -> bool:
    """Whether something listens on (or holds) ``port``: binding it, as a server would, fails."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # a port in TIME_WAIT is free for a server
        try:
            s.bind((host, port))
        except OSError:
            return True
    return False
