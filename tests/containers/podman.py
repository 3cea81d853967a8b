"""podman for the container tests: the project's containers.conf, uniquely named containers, clean-up."""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
CONTAINERS_CONF = ROOT / "deploy" / "containers.conf"
IMAGE = "localhost/switchboard:test"


def env() -> dict[str, str]:
    return os.environ | {"CONTAINERS_CONF": str(CONTAINERS_CONF)}


def require_podman() -> None:
    """Skip without podman on a developer's machine; under CI=true a missing podman fails loudly."""
    missing = [tool for tool in ("podman", "podman-compose") if shutil.which(tool) is None]
    if not missing:
        return
    message = f"{', '.join(missing)} not installed: run deploy/container-tools.sh (make test-containers does)"
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        pytest.fail(message + " -- container tests never skip in CI", pytrace=False)
    pytest.skip(message)


def podman(*args: str, timeout: float = 120, check: bool = True) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(["podman", *args], env=env(), capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise RuntimeError(f"podman {' '.join(args)} exited {proc.returncode}:\n{proc.stdout}\n{proc.stderr}")
    return proc


def inspect(name: str, fmt: str) -> str:
    return podman("inspect", "--format", fmt, name).stdout.strip()


@dataclass
class Container:
    name: str

    def logs(self) -> str:
        proc = podman("logs", self.name, check=False)
        return proc.stdout + proc.stderr

    def log_records(self) -> list[dict[str, object]]:
        """The container's stdout lines that are JSON objects."""
        out = podman("logs", self.name, check=False).stdout
        records = []
        for line in out.splitlines():
            try:
                rec = json.loads(line)
            except ValueError:
                continue
            if isinstance(rec, dict):
                records.append(rec)
        return records

    def running(self) -> bool:
        return inspect(self.name, "{{.State.Running}}") == "true"

    def wait_log(self, text: str, timeout_s: float = 60) -> None:
        deadline = time.monotonic() + timeout_s
        while text not in self.logs():
            if not self.running():
                raise RuntimeError(f"{self.name} exited before logging {text!r}:\n{self.logs()[-3000:]}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"{self.name} did not log {text!r} in {timeout_s:.0f}s:\n{self.logs()[-3000:]}")
            time.sleep(0.2)  # ok-sleep: poll interval on the container's log

    def exec(self, *args: str) -> str:
        return podman("exec", self.name, *args).stdout.strip()


@dataclass
class Containers:
    """Starts containers of one image named ``sb-<run>-<label>`` and removes every one of them on close."""

    image: str = IMAGE
    run_id: str = field(default_factory=lambda: secrets.token_hex(3))
    started: list[Container] = field(default_factory=list)

    def run(
        self, label: str, args: Sequence[str], environ: Mapping[str, str], *, options: Sequence[str] = ()
    ) -> Container:
        name = f"sb-{self.run_id}-{label}"
        env_args = [a for k, v in environ.items() for a in ("-e", f"{k}={v}")]
        podman("run", "-d", "--name", name, "--network", "host", *env_args, *options, self.image, *args)
        container = Container(name)
        self.started.append(container)
        return container

    def close(self) -> None:
        for container in reversed(self.started):
            podman("rm", "--force", "--time", "0", container.name, check=False)
        self.started.clear()
