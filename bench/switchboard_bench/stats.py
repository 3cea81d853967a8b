"""Statistics and CPU accounting: percentiles, CPU time per process and per turn, the machine's load."""

from __future__ import annotations

import os
import platform
import resource
import statistics
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import agents_sdk_baseline as sdk

from switchboard.local.stack import Stack

from .common import BenchError


def summarize(samples_ms: Iterable[float]) -> dict[str, float | int]:
    s = sorted(samples_ms)
    if not s:
        raise BenchError("no samples")
    return {
        "p50_ms": sdk.pct(s, 50), "p99_ms": sdk.pct(s, 99), "mean_ms": statistics.fmean(s),
        "max_ms": s[-1], "n": len(s),
    }  # fmt: skip


def ratio(a: float, b: float) -> float | None:
    return a / b if b > 0 else None


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def process_pids(stack: Stack) -> dict[str, int]:
    pids = {p.name: p.pid for p in stack.procs}
    if stack.nats.proc is not None:
        pids["nats-server"] = stack.nats.proc.pid
    return pids | {"bench-client": os.getpid()}


class CpuMeter:
    """CPU milliseconds each process spent per turn over a phase (where the overhead goes)."""

    def __init__(self, stack: Stack, extra: dict[str, int] | None = None) -> None:
        self.pids = process_pids(stack) | (extra or {})
        self.start = {name: cpu_seconds(pid) for name, pid in self.pids.items()}

    def per_turn_ms(self, turns: int, wall_s: float) -> dict[str, Any]:
        used = {name: cpu_seconds(pid) - self.start[name] for name, pid in self.pids.items()}
        total = sum(used.values())
        return {
            "per_turn_ms": {name: round(s * 1000 / turns, 3) for name, s in used.items()},
            "total_per_turn_ms": total * 1000 / turns,
            "cores_busy": total / wall_s,
        }


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise BenchError(f"no VmRSS for pid {pid}")


def machine_info() -> dict[str, Any]:
    cpu = next(
        (ln.split(":", 1)[1].strip() for ln in Path("/proc/cpuinfo").read_text().splitlines()
         if ln.startswith("model name")), platform.processor(),
    )  # fmt: skip
    return {
        "nproc": len(os.sched_getaffinity(0)), "cpu_model": cpu, "python": platform.python_version(),
        "platform": platform.platform(), "nofile_limit": resource.getrlimit(resource.RLIMIT_NOFILE)[0],
        "cpu_idle": cpu_idle(),
    }  # fmt: skip


def cpu_idle() -> dict[str, Any]:
    """How idle CPUs sleep (what is readable): the cpuidle governor and, in a VM with the haltpoll driver,
    how long an idle vCPU polls before it halts. At 0 every wake of an idle process goes through the
    hypervisor, which shows in latency at low and moderate load (see docs/performance.md)."""
    out: dict[str, Any] = {}
    governor = Path("/sys/devices/system/cpu/cpuidle/current_governor_ro")
    poll = Path("/sys/module/haltpoll/parameters/guest_halt_poll_ns")
    try:
        out["governor"] = governor.read_text().strip()
    except OSError:
        pass
    try:
        out["guest_halt_poll_ns"] = int(poll.read_text())
    except (OSError, ValueError):
        pass
    return out


def machine_cpu_s() -> float:
    """CPU seconds the whole machine has spent busy so far (all processes, from /proc/stat)."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
    user, nice, system, _idle, _iowait, irq, softirq, steal = fields
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def own_cpu_s() -> float:
    """CPU seconds of this process and of its children that have exited (every stack process is one)."""
    me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime
