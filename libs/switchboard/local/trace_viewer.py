"""An optional local trace viewer for ``make run``: Arize Phoenix, installed on demand.

Phoenix is heavy and pins its own dependencies, so it gets a virtual environment of its own under
``var/phoenix/venv`` instead of sharing (and possibly upsetting) Switchboard's pinned packages.
"""

from __future__ import annotations

import os
import subprocess
import time
import urllib.request
import venv
from pathlib import Path

from .parent import popen_tied
from .ports import free_port


class PhoenixViewer:
    def __init__(self, folder: Path, *, port: int = 6006) -> None:
        self.folder = folder
        self.port = port or free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def python(self) -> Path:
        return self.folder / "venv" / "bin" / "python"

    @property
    def ui_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def otlp_endpoint(self) -> str:
        """Phoenix takes OTLP/HTTP on its UI port (``/v1/traces``)."""
        return self.ui_url

    def install(self) -> None:
        if self.python.exists() and _has_phoenix(self.python):
            return
        print(f"installing Arize Phoenix into {self.folder / 'venv'} (first time only; a few minutes) ...", flush=True)
        venv.create(self.folder / "venv", with_pip=True)
        subprocess.run([str(self.python), "-m", "pip", "install", "--progress-bar", "off", "arize-phoenix"], check=True)

    def start(self, timeout_s: float = 120.0) -> None:
        self.install()
        self.folder.mkdir(parents=True, exist_ok=True)
        env = {"PHOENIX_PORT": str(self.port), "PHOENIX_HOST": "127.0.0.1", "PHOENIX_WORKING_DIR": str(self.folder)}
        log = open(self.folder / "phoenix.log", "ab")  # noqa: SIM115 - the child owns it
        self.proc = popen_tied(
            [str(self.python), "-m", "phoenix.server.main", "serve"], stdout=log, stderr=subprocess.STDOUT,
            env={**_base_env(), **env}, start_new_session=True,
        )  # fmt: skip
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"Phoenix exited with {self.proc.returncode}; see {self.folder / 'phoenix.log'}")
            try:
                with urllib.request.urlopen(self.ui_url, timeout=1):
                    return
            except OSError:
                time.sleep(0.25)  # poll while Phoenix starts
        raise TimeoutError(f"Phoenix did not answer on {self.ui_url} within {timeout_s:.0f}s")

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()


def _has_phoenix(python: Path) -> bool:
    return subprocess.run([str(python), "-c", "import phoenix"], capture_output=True).returncode == 0


def _base_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
