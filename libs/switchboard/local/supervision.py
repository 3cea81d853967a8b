"""Keep a local stack's processes running: restart a crashed one with backoff, report crash loops.

A process that exits on its own (a crash, a SIGKILL, an unexpected clean exit) is started again with
its own arguments and environment after an exponential backoff with jitter, capped. The others keep
serving meanwhile. ``crash_loop_crashes`` crashes within ``crash_loop_window_s`` are reported once as
a crash loop (an error log naming the process); the process is still retried at the capped backoff,
so a cause that goes away (a missing dependency coming back) heals without a restart of the stack.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from pydantic import BaseModel, ConfigDict, Field, model_validator

log = logging.getLogger(__name__)

_POLL_S = 0.1


class RestartPolicy(BaseModel):
    """When to start a crashed process again."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    initial_backoff_s: float = Field(0.5, ge=0)
    """Wait before the first restart (scaled by jitter)."""
    max_backoff_s: float = Field(30.0, ge=0)
    """Cap of the wait: a crash-looping process is retried this often at most."""
    multiplier: float = Field(2.0, ge=1)
    """Each crash within the window multiplies the wait by this."""
    jitter: float = Field(0.2, ge=0, le=1)
    """The wait is drawn uniformly from ``[wait * (1 - jitter), wait]``."""
    crash_loop_crashes: int = Field(5, ge=2)
    """This many crashes within ``crash_loop_window_s`` is a crash loop (reported once)."""
    crash_loop_window_s: float = Field(60.0, gt=0)
    """Crashes older than this are forgotten: the backoff starts over after a stable run."""

    @model_validator(mode="after")
    def _cap_above_start(self) -> RestartPolicy:
        if self.max_backoff_s < self.initial_backoff_s:
            raise ValueError("max_backoff_s must be at least initial_backoff_s")
        return self

    def backoff_s(self, recent_crashes: int, rng: random.Random, *, crash_looping: bool = False) -> float:
        """Wait before restarting a process that crashed ``recent_crashes`` times within the window (>= 1);
        one reported as crash-looping waits the cap, though its older crashes leave the window meanwhile."""
        exponent = 64 if crash_looping else min(max(recent_crashes - 1, 0), 64)
        wait = min(self.initial_backoff_s * self.multiplier**exponent, self.max_backoff_s)
        return rng.uniform(wait * (1 - self.jitter), wait)


class Supervised(Protocol):
    """What the supervisor needs of a process (``switchboard.local.stack.Proc``)."""

    @property
    def name(self) -> str: ...

    @property
    def pid(self) -> int: ...

    @property
    def returncode(self) -> int | None: ...

    def alive(self) -> bool: ...


@dataclass
class ProcState:
    """What the supervisor knows of one process."""

    crashes: deque[float] = field(default_factory=deque)
    restart_at: float | None = None
    """Monotonic time of the scheduled restart, while the process is down."""
    restarts: int = 0
    crash_loop: bool = False
    """Reported as crash-looping (until it runs for a whole window without crashing)."""


class Supervisor:
    """A thread watching ``procs()``; ``restart(proc)`` starts a crashed one again.

    ``on_event(kind, fields)`` (optional) hears ``crashed``, ``restarted``, ``restart_failed`` and
    ``crash_loop``, e.g. to print them for a person at a terminal.
    """

    def __init__(
        self,
        procs: Callable[[], Sequence[Supervised]],
        restart: Callable[[Supervised], None],
        policy: RestartPolicy | None = None,
        *,
        on_event: Callable[[str, dict[str, object]], None] | None = None,
        seed: int | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.procs = procs
        self._clock = clock
        self.restart = restart
        self.policy = policy or RestartPolicy()
        self.on_event = on_event
        self.state: dict[str, ProcState] = {}
        self._rng = random.Random(seed)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="switchboard-supervisor", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        """Stop watching (no restart begins after this returns). Safe to call twice."""
        self._stop.set()
        thread, self._thread = self._thread, None
        if thread is not None and thread is not threading.current_thread():
            thread.join()

    def crash_looping(self) -> list[str]:
        """Names of the processes reported as crash-looping now."""
        with self._lock:
            return sorted(name for name, s in self.state.items() if s.crash_loop)

    def _run(self) -> None:
        while not self._stop.wait(_POLL_S):  # ok-sleep: the supervision poll interval
            for proc in list(self.procs()):
                if self._stop.is_set():
                    return
                try:
                    self._check(proc)
                except Exception:
                    log.exception("supervision of a process failed", extra={"label": proc.name})

    def _check(self, proc: Supervised) -> None:
        now = self._clock()
        with self._lock:
            state = self.state.setdefault(proc.name, ProcState())
            while state.crashes and now - state.crashes[0] > self.policy.crash_loop_window_s:
                state.crashes.popleft()
            if state.crash_loop and not state.crashes and proc.alive():
                state.crash_loop = False
                self._emit("info", "crash loop over", "recovered", proc, restarts=state.restarts)
            if proc.alive():
                return
            if state.restart_at is None:
                state.crashes.append(now)
                wait = self.policy.backoff_s(len(state.crashes), self._rng, crash_looping=state.crash_loop)
                state.restart_at = now + wait
                self._emit(
                    "warning", "process exited; restarting", "crashed", proc,
                    exit_code=proc.returncode, backoff_s=round(wait, 3), recent_crashes=len(state.crashes),
                )  # fmt: skip
                self._note_crash_loop(state, proc)
                return
            if now < state.restart_at:
                return
            state.restart_at = None
        try:
            self.restart(proc)
        except Exception as exc:
            with self._lock:  # a restart that fails (nats-server exits at once: its port is taken) is a crash too
                state.crashes.append(self._clock())
                wait = self.policy.backoff_s(len(state.crashes), self._rng, crash_looping=state.crash_loop)
                state.restart_at = self._clock() + wait
                self._emit("error", "process restart failed", "restart_failed", proc, error=repr(exc))
                self._note_crash_loop(state, proc)
            return
        with self._lock:
            state.restarts += 1
        self._emit("info", "process restarted", "restarted", proc, restarts=state.restarts)

    def _note_crash_loop(self, state: ProcState, proc: Supervised) -> None:
        """Report a crash loop once, when the crashes within the window reach the policy's count (lock held)."""
        if len(state.crashes) >= self.policy.crash_loop_crashes and not state.crash_loop:
            state.crash_loop = True
            self._emit(
                "error", "process is crash-looping; the others keep serving", "crash_loop", proc,
                crashes=len(state.crashes), window_s=self.policy.crash_loop_window_s,
                retry_every_s=self.policy.max_backoff_s,
            )  # fmt: skip

    def _emit(self, level: str, msg: str, kind: str, proc: Supervised, **fields: object) -> None:
        extra = {"label": proc.name, "pid": proc.pid, "event": kind, **fields}
        log.log(logging.getLevelNamesMapping()[level.upper()], msg, extra=extra)
        if self.on_event is not None:
            self.on_event(kind, extra)
