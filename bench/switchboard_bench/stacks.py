"""Starting and stopping stacks around a phase group, and checking their processes and logs."""

from __future__ import annotations

import asyncio
import resource
import sys
from collections.abc import Awaitable, Callable
from typing import Any

from switchboard.local.stack import Stack

from .common import BenchError, progress

try:
    import uvloop
except ImportError:  # the edge uses uvloop when present; the load generator follows suit
    uvloop = None


def check_processes(stack: Stack, label: str = "logs") -> dict[str, Any]:
    """Every process still up, and the warnings/errors they logged during the run (reported, not fatal)."""
    dead = [f"{p.name} (exit {p.popen.returncode})" for p in stack.procs if not p.alive()]
    if dead:
        raise BenchError(f"processes died during the run: {dead}")
    counts: dict[str, int] = {}
    samples: list[str] = []
    for proc in stack.procs:
        bad = [ln for ln in proc.lines if '"level": "warning"' in ln or '"level": "error"' in ln]
        if bad:
            counts[proc.name] = len(bad)
            samples += [f"{proc.name}: {ln}" for ln in bad[:3]]
    progress(f"{label}: {sum(counts.values())} warning/error lines {counts or ''}".rstrip())
    for line in samples:
        progress(f"  {line[:300]}")
    return {"counts": counts, "samples": samples}


def raise_nofile_limit() -> None:
    """1000+ sockets need more than the usual 1024 descriptors; children inherit the limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def on_stack(
    runner: asyncio.Runner, stack: Stack, what: str, phases: Callable[[Stack], Awaitable[dict[str, Any]]]
) -> dict[str, Any]:
    """Start ``stack``, run ``phases`` on it, check its processes and logs, stop it (last log lines on failure)."""
    return on_stacks(runner, [stack], what, lambda stacks: phases(stacks[0]))


def on_stacks(
    runner: asyncio.Runner, stacks: list[Stack], what: str,
    phases: Callable[[list[Stack]], Awaitable[dict[str, Any]]],
) -> dict[str, Any]:  # fmt: skip
    """``on_stack`` for stacks that run side by side: all are up while ``phases`` runs. With more than one,
    ``log_problems`` has an entry per stack, named after its var dir."""
    try:
        for stack in stacks:
            progress(f"stack: starting nats-server, agents and the edge ({what}; logs in {stack.var_dir / 'log'})")
            stack.start()
            progress("stack: up: " + ", ".join(f"{p.name}={p.pid}" for p in stack.procs))
        res = runner.run(phases(stacks))
        if len(stacks) == 1:
            res["log_problems"] = check_processes(stacks[0])
        else:
            res["log_problems"] = {st.var_dir.name: check_processes(st, f"logs ({st.var_dir.name})") for st in stacks}
        return res
    except BaseException:
        for stack in stacks:
            for proc in stack.procs:
                tail = [ln for ln in proc.lines[-5:] if ln]
                if tail or not proc.alive():
                    alive = "alive" if proc.alive() else f"exited {proc.popen.returncode}"
                    print(f"--- {proc.name} ({alive}), last log lines:\n" + "\n".join(tail), file=sys.stderr)
        raise
    finally:
        for stack in reversed(stacks):
            progress("stack: stopping")
            stack.stop()


def loop_name() -> str:
    return "uvloop" if uvloop is not None else "asyncio"
