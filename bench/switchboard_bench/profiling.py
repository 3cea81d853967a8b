"""``--profile DIR``: py-spy records the system's processes while a phase runs, as flame graphs.

py-spy samples a running process from the outside (it needs ptrace: root, or ``CAP_SYS_PTRACE``), so the
processes run exactly as measured; ``--nonblocking`` keeps it from pausing them. One SVG flame graph per
process lands in DIR (open it in a browser). A process py-spy cannot attach to is reported, not fatal.
"""

from __future__ import annotations

import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from switchboard.local.stack import Stack

from .common import progress

RATE_HZ = 200
"""Samples per second and process."""


def py_spy() -> str | None:
    """The py-spy executable of this environment (the ``bench`` extra pins it), or on PATH."""
    local = Path(sys.executable).with_name("py-spy")
    return str(local) if local.exists() else shutil.which("py-spy")


@contextmanager
def profiled(stack: Stack, out_dir: Path | None, label: str, procs: tuple[str, ...] = ("edge",)) -> Iterator[None]:
    """Record ``procs`` of ``stack`` (labels such as ``edge`` or ``agent:triage``) while the block runs."""
    exe = py_spy()
    if out_dir is None:
        yield
        return
    if exe is None:
        progress("profile: py-spy not installed (pip install -e '.[bench]'); not profiling")
        yield
        return
    out_dir.mkdir(parents=True, exist_ok=True)
    spies: list[tuple[str, Path, subprocess.Popen[bytes]]] = []
    for name in procs:
        path = out_dir / f"{label}-{name.replace(':', '-')}.svg"
        cmd = [exe, "record", "--nonblocking", "-r", str(RATE_HZ), "-p", str(stack.proc(name).pid), "-o", str(path)]
        spies.append((name, path, subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)))
    try:
        yield
    finally:
        for _, _, spy in spies:
            spy.send_signal(signal.SIGINT)  # py-spy writes its output when interrupted
        for name, path, spy in spies:
            _, err = spy.communicate(timeout=60)
            if path.exists():
                progress(f"profile: {name} -> {path}")
            else:
                progress(f"profile: no profile of {name} (py-spy: {err.decode(errors='replace').strip()[-200:]})")
