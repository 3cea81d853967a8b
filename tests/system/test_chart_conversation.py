"""The chart's pieces against real processes: every process loads the scenario from the chart's
ConfigMap, and the `helm test` pod's own script holds a conversation with the edge and checks it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import helm_python
import pytest
import yaml

from .stacks import ROOT, make_stack

pytestmark = pytest.mark.system

CHART = ROOT / "charts" / "switchboard"


def rendered(values: dict[str, Any]) -> dict[str, dict[str, Any]]:
    helm_python.disable_logging()
    manifests = helm_python.Chart.load(CHART).render(values, name="switchboard", namespace="voice")
    objects = [doc for path, text in manifests.items() if path.endswith(".yaml") for doc in yaml.safe_load_all(text)]
    return {f"{o['kind']}/{o['metadata']['name']}": o for o in objects if o}


def run_test_pod(pod: dict[str, Any], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """The test pod's container command with its env, `switchboard` from this venv standing in for the image's."""
    (container,) = pod["spec"]["containers"]
    pod_env = {e["name"]: e["value"] for e in container["env"] if "value" in e}
    path = f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"
    return subprocess.run(
        [*container["command"], *container["args"]], env=os.environ | pod_env | {"PATH": path} | env,
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip


def test_helm_test_pod_converses_with_processes_running_the_chart_scenario(tmp_path: Path) -> None:
    objects = rendered({"nats": {"url": "nats://127.0.0.1:4222"}, "image": {"scenariosDir": str(ROOT / "scenarios")}})
    folder = tmp_path / "scenario"
    folder.mkdir()
    (folder / "scenario.yaml").write_text(objects["ConfigMap/switchboard-scenario"]["data"]["scenario.yaml"])
    pod = objects["Pod/switchboard-test-conversation"]
    with make_stack(tmp_path / "stack", scenario=str(folder)) as stack:
        keys = {"EDGE_URL": stack.ws_base, "SWITCHBOARD_API_KEYS": f"{stack.api_key},another-key"}
        passed = run_test_pod(pod, keys)
        assert passed.returncode == 0, passed.stdout + passed.stderr
        assert "conversation ok: answered by auth returns" in passed.stdout
        assert "you> jane@example.com, PIN 1234" in passed.stdout

        wrong = run_test_pod(pod, keys | {"EXPECT_AGENTS": "auth billing"})
        assert wrong.returncode == 1
        assert "FAIL: expected answers from: auth billing; got: auth returns" in wrong.stderr

        refused = run_test_pod(pod, keys | {"SWITCHBOARD_API_KEYS": "not-a-key"})
        assert refused.returncode == 1  # the key is refused, in one line: not a traceback, not any other failure
        assert "refused the connection: HTTP 401: missing or invalid API key" in refused.stdout, refused.stdout
        assert "Traceback" not in refused.stdout
