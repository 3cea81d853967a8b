"""The official JavaScript clients for the system tests: installed with npm from the checked-in
``tests/clients/node/package-lock.json`` into ``var/cache/node-clients/<lock hash>`` once, reused after."""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from .stacks import ROOT

SOURCE = ROOT / "tests" / "clients" / "node"
CACHE = ROOT / "var" / "cache" / "node-clients"


REQUIRED = "SWITCHBOARD_NODE_CLIENTS"
"""``required`` (what ``make test`` sets) or ``CI=true``: no node is a failure, not a skip."""


def node_clients() -> Path:
    """The directory holding the scripts and their ``node_modules``. Without node and npm: a failure under
    ``make test`` and CI, a skip in a bare ``pytest`` run."""
    node, npm = shutil.which("node"), shutil.which("npm")
    if node is None or npm is None:
        message = "node and npm are needed for the official JavaScript client tests (Node.js 20+)"
        if os.environ.get(REQUIRED) == "required" or os.environ.get("CI", "").lower() == "true":
            pytest.fail(message)
        pytest.skip(message)
    lock = (SOURCE / "package-lock.json").read_bytes()
    target = CACHE / hashlib.sha256(lock + (SOURCE / "package.json").read_bytes()).hexdigest()[:16]
    target.mkdir(parents=True, exist_ok=True)
    with open(target / ".lock", "w") as guard:  # one installer at a time (xdist workers, parallel runs)
        fcntl.flock(guard, fcntl.LOCK_EX)
        if not (target / "node_modules" / ".installed").is_file():
            for name in ("package.json", "package-lock.json"):
                shutil.copy(SOURCE / name, target / name)
            done = subprocess.run(
                [npm, "ci", "--no-audit", "--no-fund", "--ignore-scripts", "--loglevel=error"],
                cwd=target, capture_output=True, text=True, timeout=600,
            )  # fmt: skip
            if done.returncode != 0:
                pytest.fail(f"npm ci failed in {target}:\n{done.stdout}\n{done.stderr}")
            (target / "node_modules" / ".installed").touch()
    for script in SOURCE.glob("*.mjs"):  # scripts resolve their imports next to node_modules
        shutil.copy(script, target / script.name)
    return target


def run_node(script: str, env: dict[str, str], timeout_s: float = 60) -> dict[str, Any]:
    """Run one client script; its last stdout line is a JSON report."""
    where = node_clients()
    done = subprocess.run(
        ["node", str(where / script)], cwd=where, env=os.environ | env, capture_output=True, text=True,
        timeout=timeout_s,
    )  # fmt: skip
    assert done.returncode == 0, f"{script} exited {done.returncode}:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    report: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return report
