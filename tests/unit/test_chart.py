"""The Helm chart charts/switchboard, rendered offline with Helm v4 (helm-python-sdk) under the values
files it ships (ci/), linted strictly, every manifest validated against the Kubernetes schemas."""

from __future__ import annotations

import asyncio
import base64
import copy
import functools
import importlib.util
import inspect
import json
import os
import re
import stat
import subprocess
import sys
from pathlib import Path
from typing import Any

import helm_python
import kubernetes_validate
import pytest
import yaml

from switchboard.agents import load_scenario
from switchboard.bus import subjects
from switchboard.bus.subjects import SESSIONS_BUCKET
from switchboard.local import NatsServer
from switchboard.security import chart_keys
from switchboard.security.bus_access import inbox_prefix, public_key
from switchboard.state import SessionStore
from switchboard.testing.bus_identity import connect_as

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "switchboard"
CI = CHART / "ci"
SCENARIOS = ROOT / "scenarios"
KUBE_VERSION = "1.37.0"
CRD_KINDS = {("keda.sh/v1alpha1", "ScaledObject")}
RELEASE, NAMESPACE = "switchboard", "voice"
FULLNAME = "switchboard"  # the release name contains the chart name
MISSING_NATS = "chart directory is missing these dependencies: nats"
VALUES_FILES = sorted(p.name for p in CI.glob("*-values.yaml"))

helm_python.disable_logging()

Obj = dict[str, Any]


@functools.cache
def chart() -> helm_python.Chart:
    return helm_python.Chart.load(CHART)


def ci_values(name: str) -> Obj:
    values: Obj = yaml.safe_load((CI / name).read_text())
    return values


def minimal(**overrides: Any) -> Obj:
    return {**ci_values("minimal-values.yaml"), **overrides}


def render(values: Obj, *, name: str = RELEASE) -> list[Obj]:
    """Every object the chart renders (the NOTES are text, left out)."""
    manifests = chart().render(copy.deepcopy(values), name=name, namespace=NAMESPACE)
    objects = []
    for path, text in manifests.items():
        if path.endswith("NOTES.txt"):
            continue
        objects.extend(doc for doc in yaml.safe_load_all(text) if doc)
    return objects


@functools.cache
def _rendered_ci(values_file: str) -> str:
    return json.dumps(render(ci_values(values_file)))


def render_ci(values_file: str) -> list[Obj]:
    """``render`` of a shipped values file, rendered once per test run."""
    objects: list[Obj] = json.loads(_rendered_ci(values_file))
    return objects


def notes(values: Obj) -> str:
    return chart().render(copy.deepcopy(values), name=RELEASE, namespace=NAMESPACE)["switchboard/templates/NOTES.txt"]


def of_kind(objects: list[Obj], kind: str) -> dict[str, Obj]:
    return {o["metadata"]["name"]: o for o in objects if o["kind"] == kind}


def render_error(values: Obj) -> str:
    """The message of a render that must fail (schema or template)."""
    with pytest.raises(helm_python.HelmError) as info:
        chart().render(copy.deepcopy(values), name=RELEASE, namespace=NAMESPACE)
    return str(info.value)


def env_of(container: Obj) -> dict[str, Any]:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container.get("env", [])}


def selects(selector: Obj, labels: dict[str, str]) -> bool:
    """A Kubernetes label selector (matchLabels and matchExpressions with In) against labels."""
    if any(labels.get(k) != v for k, v in selector.get("matchLabels", {}).items()):
        return False
    for expr in selector.get("matchExpressions", []):
        assert expr["operator"] == "In", expr
        if labels.get(expr["key"]) not in expr["values"]:
            return False
    return True


def pod_labels(deployments: dict[str, Obj]) -> dict[str, dict[str, str]]:
    return {name: d["spec"]["template"]["metadata"]["labels"] for name, d in deployments.items()}


def agent_names(values: Obj) -> list[str]:
    return [a["name"] for a in values.get("agents", chart().values["agents"])]


def canary_agents(values: Obj) -> list[str]:
    return [a["name"] for a in values.get("agents", []) if a.get("canary", {}).get("enabled")]


# --- lint, schema validation of every manifest ---------------------------------------------------


@pytest.mark.parametrize("values_file", VALUES_FILES)
def test_lint_strict(values_file: str) -> None:
    """Strict lint (warnings are errors) finds nothing but the NATS chart not being vendored: it is a
    conditional dependency that `helm dependency build` fetches, and nothing can be fetched here."""
    report = helm_python.lint(
        CHART, ci_values(values_file), strict=True, namespace=NAMESPACE, kube_version=KUBE_VERSION
    )
    assert report["total_charts_linted"] == 1
    assert [m["error"] for m in report["messages"] if m["severity"] >= 2] == [MISSING_NATS], report
    assert report["errors"] == [MISSING_NATS], report


@pytest.mark.parametrize("values_file", VALUES_FILES)
def test_every_manifest_is_valid_kubernetes(values_file: str) -> None:
    """kubernetes-validate --strict against a current Kubernetes: unknown fields and wrong types fail;
    only CRDs (KEDA's ScaledObject) have no bundled schema."""
    objects = render_ci(values_file)
    unchecked = []
    for obj in objects:
        try:
            kubernetes_validate.validate(obj, KUBE_VERSION, strict=True)
        except kubernetes_validate.SchemaNotFoundError:
            unchecked.append((obj["apiVersion"], obj["kind"]))
        except kubernetes_validate.ValidationError as exc:
            pytest.fail(f"{obj['kind']} {obj['metadata']['name']}: {exc.message} at {list(exc.path)}")
    assert set(unchecked) <= CRD_KINDS, unchecked
    assert {o["kind"] for o in objects} >= {"Deployment", "Service", "ConfigMap", "NetworkPolicy", "Pod"}


def test_production_renders_every_kind() -> None:
    kinds = {o["kind"] for o in render_ci("production-values.yaml")}
    assert kinds == {
        "Deployment", "Service", "ConfigMap", "ServiceAccount", "NetworkPolicy", "Pod",
        "PodDisruptionBudget", "HorizontalPodAutoscaler", "ScaledObject",
    }  # fmt: skip  # no Secret: the production values name an existing one


# --- one Deployment per agent ------------------------------------------------------------------


@pytest.mark.parametrize("values_file", VALUES_FILES)
def test_one_deployment_per_agent_plus_the_edge(values_file: str) -> None:
    values = ci_values(values_file)
    deployments = of_kind(render(values), "Deployment")
    agents = agent_names(values)
    canaries = [f"{FULLNAME}-{a}-canary" for a in canary_agents(values)]
    assert sorted(deployments) == sorted([f"{FULLNAME}-edge"] + [f"{FULLNAME}-{a}" for a in agents] + canaries)
    scenario = load_scenario(values.get("scenario", {}).get("name", "retail"), SCENARIOS).config
    roles = {a.name: a.role for a in scenario.agents}
    for agent in agents:
        (container,) = deployments[f"{FULLNAME}-{agent}"]["spec"]["template"]["spec"]["containers"]
        assert container["args"] == [roles[agent], "--name", agent]
    (edge,) = deployments[f"{FULLNAME}-edge"]["spec"]["template"]["spec"]["containers"]
    assert edge["args"] == ["edge"]


def test_supervisor_runs_as_a_supervisor() -> None:
    deployments = of_kind(render_ci("supervisor-values.yaml"), "Deployment")
    spec = deployments[f"{FULLNAME}-supervisor"]["spec"]
    assert spec["template"]["spec"]["containers"][0]["args"] == ["supervisor", "--name", "supervisor"]
    assert spec["replicas"] == 2
    assert spec["template"]["metadata"]["labels"]["app.kubernetes.io/component"] == "supervisor"


def test_each_agent_has_its_own_replicas_and_resources() -> None:
    deployments = of_kind(render_ci("production-values.yaml"), "Deployment")
    assert deployments[f"{FULLNAME}-triage"]["spec"]["replicas"] == 3
    assert deployments[f"{FULLNAME}-auth"]["spec"]["replicas"] == 2  # agentDefaults
    returns = deployments[f"{FULLNAME}-returns"]["spec"]["template"]["spec"]["containers"][0]
    auth = deployments[f"{FULLNAME}-auth"]["spec"]["template"]["spec"]["containers"][0]
    assert returns["resources"] == {"requests": {"cpu": "500m", "memory": "512Mi"}, "limits": {"memory": "1Gi"}}
    assert auth["resources"] == {"requests": {"cpu": "250m", "memory": "256Mi"}, "limits": {"memory": "768Mi"}}
    assert env_of(returns)["SWITCHBOARD_AGENT_MAX_INFLIGHT"] == "64"
    assert env_of(auth)["SWITCHBOARD_AGENT_MAX_INFLIGHT"] == "256"
    assert (
        env_of(deployments[f"{FULLNAME}-generalist"]["spec"]["template"]["spec"]["containers"][0])[
            "SWITCHBOARD_DELTA_FLUSH_MS"
        ]
        == "40"
    )


def test_false_and_zero_override_the_defaults() -> None:
    """Per-agent values merge over agentDefaults key by key, and false/0 win (sprig's mergeOverwrite
    would keep the default)."""
    agents = [
        {"name": "triage", "replicas": 0},
        {"name": "auth", "enabled": False},
        {"name": "returns"},
        {"name": "billing", "pdb": {"enabled": False}},
        {"name": "generalist"},
    ]
    values = minimal(agents=agents)
    objects = render(values)
    deployments = of_kind(objects, "Deployment")
    assert deployments[f"{FULLNAME}-triage"]["spec"]["replicas"] == 0
    assert f"{FULLNAME}-auth" not in deployments
    pdbs = of_kind(objects, "PodDisruptionBudget")
    assert f"{FULLNAME}-billing" not in pdbs and f"{FULLNAME}-returns" in pdbs


def test_every_container_has_resources() -> None:
    for values_file in VALUES_FILES:
        for obj in render_ci(values_file):
            if obj["kind"] not in ("Deployment", "Pod"):
                continue
            spec = obj["spec"]["template"]["spec"] if obj["kind"] == "Deployment" else obj["spec"]
            for c in spec["containers"]:
                assert {"cpu", "memory"} <= set(c["resources"]["requests"]), (values_file, obj["metadata"]["name"])
                assert "memory" in c["resources"]["limits"], (values_file, obj["metadata"]["name"])


# --- selectors ----------------------------------------------------------------------------------


@pytest.mark.parametrize("values_file", VALUES_FILES)
def test_selectors_match_their_pods_and_no_others(values_file: str) -> None:
    objects = render_ci(values_file)
    deployments = of_kind(objects, "Deployment")
    labels = pod_labels(deployments)
    for name, d in deployments.items():
        selector = d["spec"]["selector"]
        assert selects(selector, labels[name]), name
        others = [o for o in deployments if o != name and selects(selector, labels[o])]
        assert not others, f"{name}'s selector also takes the pods of {others}"
        track = "canary" if name.endswith("-canary") else "stable"
        assert selector["matchLabels"]["switchboard.dev/track"] == track  # a canary never takes stable's pods
    for kind in ("PodDisruptionBudget",):
        for name, pdb in of_kind(objects, kind).items():
            assert [d for d in deployments if selects(pdb["spec"]["selector"], labels[d])] == [name]
    (service,) = of_kind(objects, "Service").values()
    assert [d for d in deployments if selects({"matchLabels": service["spec"]["selector"]}, labels[d])] == [
        f"{FULLNAME}-edge"
    ]
    policies = of_kind(objects, "NetworkPolicy")
    edge_policy = [d for d in deployments if selects(policies[f"{FULLNAME}-edge"]["spec"]["podSelector"], labels[d])]
    assert edge_policy == [f"{FULLNAME}-edge"]
    agent_policy = [d for d in deployments if selects(policies[f"{FULLNAME}-agents"]["spec"]["podSelector"], labels[d])]
    assert sorted(agent_policy) == sorted(d for d in deployments if d != f"{FULLNAME}-edge")
    (test_pod,) = of_kind(objects, "Pod").values()
    assert selects(policies[f"{FULLNAME}-test"]["spec"]["podSelector"], test_pod["metadata"]["labels"])


def service_link_env(services: list[Obj], cluster_ip: str = "10.96.0.12") -> dict[str, str]:
    """The variables the kubelet puts in a pod for each Service of its namespace, unless the pod sets
    enableServiceLinks: false (pkg/kubelet/envvars: the Service's name upper-cased, - as _)."""
    env: dict[str, str] = {}
    for service in services:
        name = service["metadata"]["name"].upper().replace("-", "_")
        ports = service["spec"]["ports"]
        env[f"{name}_SERVICE_HOST"] = cluster_ip
        env[f"{name}_SERVICE_PORT"] = str(ports[0]["port"])
        env[f"{name}_PORT"] = f"tcp://{cluster_ip}:{ports[0]['port']}"
        for port in ports:
            env[f"{name}_SERVICE_PORT_{port['name'].upper().replace('-', '_')}"] = str(port["port"])
            prefix = f"{name}_PORT_{port['port']}_TCP"
            env[prefix] = f"tcp://{cluster_ip}:{port['port']}"
            env.update({f"{prefix}_PROTO": "tcp", f"{prefix}_PORT": str(port["port"]), f"{prefix}_ADDR": cluster_ip})
    return env


@pytest.mark.parametrize("release", [RELEASE, "prod"])
def test_every_process_reads_its_settings_in_the_pod_environment(release: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """What each container's process sees is its own env plus, unless the pod turns them off, the
    Service link variables: with the release named switchboard (as docs/deployment.md installs it) the
    edge Service, switchboard-edge, would set SWITCHBOARD_EDGE_PORT=tcp://... in every pod, a setting
    every process reads at start; an agent, which sets no edge port of its own, failed there."""
    from switchboard.settings import Settings

    objects = render(minimal(), name=release)
    services = list(of_kind(objects, "Service").values())
    pods = [(d["metadata"]["name"], d["spec"]["template"]["spec"]) for d in of_kind(objects, "Deployment").values()]
    pods += [(p["metadata"]["name"], p["spec"]) for p in of_kind(objects, "Pod").values()]
    for name, spec in pods:
        links = service_link_env(services) if spec.get("enableServiceLinks", True) else {}
        (container,) = spec["containers"]
        own = {e["name"]: e.get("value", "from-a-secret") for e in container.get("env", [])}
        for key in [k for k in os.environ if k.startswith("SWITCHBOARD_")]:
            monkeypatch.delenv(key)
        for key, value in (links | own).items():  # the container's own env wins over the links
            monkeypatch.setenv(key, value)
        try:
            Settings()
        except ValueError as exc:
            pytest.fail(f"{name}: {exc}")


def test_service_targets_the_edge_port() -> None:
    objects = render(minimal(edge={"port": 9090, "service": {"port": 443}}))
    service = of_kind(objects, "Service")[f"{FULLNAME}-edge"]
    (port,) = service["spec"]["ports"]
    (edge,) = of_kind(objects, "Deployment")[f"{FULLNAME}-edge"]["spec"]["template"]["spec"]["containers"]
    named = {p["name"]: p["containerPort"] for p in edge["ports"]}
    assert port["port"] == 443 and named[port["targetPort"]] == 9090
    assert env_of(edge)["SWITCHBOARD_EDGE_PORT"] == "9090"


# --- probes, drain -------------------------------------------------------------------------------


@pytest.mark.parametrize("values_file", VALUES_FILES)
def test_probes_point_at_the_health_endpoints_on_the_real_port(values_file: str) -> None:
    """The edge serves /healthz and /readyz on SWITCHBOARD_EDGE_PORT; agents and the supervisor on
    SWITCHBOARD_METRICS_PORT, bound to 0.0.0.0 so the kubelet reaches them."""
    for name, d in of_kind(render_ci(values_file), "Deployment").items():
        (c,) = d["spec"]["template"]["spec"]["containers"]
        env = env_of(c)
        ports = {p["name"]: p["containerPort"] for p in c["ports"]}
        if name == f"{FULLNAME}-edge":
            host, port = env["SWITCHBOARD_EDGE_HOST"], int(env["SWITCHBOARD_EDGE_PORT"])
        else:
            host, port = env["SWITCHBOARD_METRICS_HOST"], int(env["SWITCHBOARD_METRICS_PORT"])
        assert host == "0.0.0.0", name
        paths = {}
        for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
            get = c[probe]["httpGet"]
            assert ports[get["port"]] == port, (name, probe)
            paths[probe] = get["path"]
        assert paths == {"startupProbe": "/healthz", "readinessProbe": "/readyz", "livenessProbe": "/healthz"}
        annotations = d["spec"]["template"]["metadata"]["annotations"]
        assert annotations["prometheus.io/port"] == str(port) and annotations["prometheus.io/path"] == "/metrics"


def _literal(func: Any, pattern: str) -> float:
    """A number written in ``func``'s source (``pattern``'s one group): a timeout that is no parameter."""
    found = re.findall(pattern, inspect.getsource(func))
    assert len(found) == 1, f"{func.__qualname__}: expected one match of {pattern!r}, found {found}"
    return float(found[0])


def _default(func: Any, parameter: str) -> float:
    return float(inspect.signature(func).parameters[parameter].default)


def edge_shutdown_worst_s(drain_grace_s: float) -> float:
    """The longest an edge takes from SIGTERM to exit, step by step as the code does it (``switchboard
    edge``): sessions drain, uvicorn closes, the lifespan flushes what it queued, NATS drains, spans go."""
    from switchboard import cli
    from switchboard.bus import connection
    from switchboard.telemetry.tracing import shutdown_tracing
    from switchboard_edge.configs import ConfigWatch
    from switchboard_edge.orchestration.conductor import Conductor
    from switchboard_edge.session import EdgeDeps

    return (
        drain_grace_s + _literal(EdgeDeps.drain, r"timeout=grace_s \+ (\d+)")
        + _literal(cli._edge, r"timeout_graceful_shutdown=(\d+)")
        + _literal(EdgeDeps.flush_records, r"timeout=(\d+)")  # turn records
        + _default(Conductor.flush, "timeout_s")  # audit appends
        + _literal(ConfigWatch.flush, r"timeout=(\d+)")  # agent configuration records
        + connection._DRAIN_TIMEOUT_S
        + _default(shutdown_tracing, "timeout_s")
    )  # fmt: skip


def agent_shutdown_worst_s() -> float:
    """The same for an agent or supervisor (``LoopService.stop``)."""
    from switchboard.bus import connection
    from switchboard.bus.rpc import QueueService
    from switchboard.runtime.health import HealthServer
    from switchboard.telemetry.tracing import shutdown_tracing

    return (
        _default(QueueService.stop, "grace_s")  # turns in flight
        + connection._DRAIN_TIMEOUT_S
        + _literal(HealthServer.stop, r"wait_closed\(\), (\d+(?:\.\d+)?)\)")
        + _default(shutdown_tracing, "timeout_s")
    )


def test_termination_grace_and_prestop_match_the_drain() -> None:
    """The kubelet kills a pod terminationGracePeriodSeconds after preStop began: that must outlast the
    preStop sleep and the process's whole shutdown at worst, or the last records, NATS drain and spans
    are cut off by SIGKILL."""
    for drain, pre_stop in ((10, 5), (30, 8), (12.5, 0)):
        edge_values: Obj = {"drainGraceSeconds": drain, "preStopSleepSeconds": pre_stop}
        deployments = of_kind(render(minimal(edge=edge_values)), "Deployment")
        spec = deployments[f"{FULLNAME}-edge"]["spec"]["template"]["spec"]
        (c,) = spec["containers"]
        assert env_of(c)["SWITCHBOARD_DRAIN_GRACE_S"] == str(drain)
        if pre_stop:
            assert c["lifecycle"]["preStop"] == {"sleep": {"seconds": pre_stop}}
        else:
            assert "lifecycle" not in c
        assert spec["terminationGracePeriodSeconds"] >= pre_stop + edge_shutdown_worst_s(drain), (drain, pre_stop)
        agent = deployments[f"{FULLNAME}-billing"]["spec"]["template"]["spec"]
        assert "lifecycle" not in agent["containers"][0]  # NATS unsubscribe is immediate: no endpoints to leave
        assert agent["terminationGracePeriodSeconds"] >= agent_shutdown_worst_s()


# --- security ------------------------------------------------------------------------------------


@pytest.mark.parametrize("values_file", VALUES_FILES)
def test_restricted_security_context(values_file: str) -> None:
    for obj in render_ci(values_file):
        if obj["kind"] not in ("Deployment", "Pod"):
            continue
        spec = obj["spec"]["template"]["spec"] if obj["kind"] == "Deployment" else obj["spec"]
        name = obj["metadata"]["name"]
        assert spec["securityContext"]["runAsNonRoot"] is True, name
        assert spec["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}, name
        assert spec["automountServiceAccountToken"] is False, name
        emptydirs = {v["name"] for v in spec["volumes"] if "emptyDir" in v}
        for c in spec["containers"]:
            sc = c["securityContext"]
            assert sc["readOnlyRootFilesystem"] is True and sc["allowPrivilegeEscalation"] is False, name
            assert sc["capabilities"] == {"drop": ["ALL"]}, name
            for mount in c["volumeMounts"]:
                assert mount["name"] in emptydirs or mount.get("readOnly") is True, (name, mount)
            if obj["kind"] == "Deployment":
                writable = {m["mountPath"] for m in c["volumeMounts"] if m["name"] in emptydirs}
                env = env_of(c)
                assert {"/tmp", env["HOME"]} <= writable, name
                assert "SWITCHBOARD_DATA_DIR" not in env, name  # tools' data is in the shared store


# --- autoscaling ---------------------------------------------------------------------------------


def test_hpa_and_keda_target_their_own_deployment() -> None:
    objects = render_ci("production-values.yaml")
    deployments = of_kind(objects, "Deployment")
    hpas = of_kind(objects, "HorizontalPodAutoscaler")
    assert sorted(hpas) == [f"{FULLNAME}-billing", f"{FULLNAME}-edge"]
    billing = hpas[f"{FULLNAME}-billing"]["spec"]
    assert billing["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": f"{FULLNAME}-billing"}
    assert (billing["minReplicas"], billing["maxReplicas"]) == (2, 8)
    assert billing["metrics"][0]["resource"]["target"]["averageUtilization"] == 60
    (scaled,) = of_kind(objects, "ScaledObject").values()
    assert scaled["spec"]["scaleTargetRef"]["name"] == f"{FULLNAME}-returns"
    (trigger,) = scaled["spec"]["triggers"]
    assert (
        trigger["metadata"]["query"]
        == f'sum(switchboard_inflight_requests{{namespace="{NAMESPACE}", service="returns", '
        f'pod=~"{FULLNAME}-returns-.*", '  # this release's, not another's of the same scenario
        f'pod!~"{FULLNAME}-returns-canary-.*"}})'  # a canary's turns are not the stable Deployment's load
    )
    assert trigger["metadata"]["threshold"] == "16"
    # An autoscaler owns the replica count: the Deployment leaves it alone, so upgrades do not reset it.
    for name in (f"{FULLNAME}-billing", f"{FULLNAME}-returns", f"{FULLNAME}-edge"):
        assert "replicas" not in deployments[name]["spec"], name
    assert deployments[f"{FULLNAME}-auth"]["spec"]["replicas"] == 2


def test_keda_query_uses_the_metric_the_agents_export() -> None:
    from switchboard.telemetry.metrics import Metrics

    exported = Metrics().render().decode()
    (scaled,) = of_kind(render_ci("production-values.yaml"), "ScaledObject").values()
    metric = scaled["spec"]["triggers"][0]["metadata"]["query"].split("(", 1)[1].split("{", 1)[0]
    assert f"# TYPE {metric} gauge" in exported


def promql_selects(query: str, labels: dict[str, str]) -> bool:
    """Whether the one series selector of a KEDA query (``{k="v", k=~"re", k!~"re", k!="v"}``) takes a
    series with these labels, as Prometheus matches: regexes anchored at both ends."""
    matchers = re.findall(r'([a-z_]+)\s*(=~|!~|!=|=)\s*"((?:[^"\\]|\\.)*)"', query.split("{", 1)[1].split("}", 1)[0])
    assert matchers, query
    for key, op, value in matchers:
        got = labels.get(key, "")
        if op == "=" and got != value or op == "!=" and got == value:
            return False
        if op in ("=~", "!~") and (re.fullmatch(value, got) is not None) != (op == "=~"):
            return False
    return True


def test_keda_queries_count_only_this_releases_own_pods() -> None:
    """Two releases of one scenario in a namespace export the same metric with the same ``service`` label:
    each autoscaler must count its own Deployment's pods, not the other release's nor its canary's."""
    agents = [{"name": n} for n in ("triage", "auth", "billing", "generalist")]
    keda = {"autoscaling": {"keda": {"enabled": True}}}
    agents.append({"name": "returns", **keda, "canary": {"enabled": True}})
    queries = {}
    for release, fullname in ((RELEASE, FULLNAME), ("blue", "blue-switchboard")):
        scalers = of_kind(render(minimal(agents=agents, edge=keda), name=release), "ScaledObject")
        queries[release] = {
            component: scalers[f"{fullname}-{component}"]["spec"]["triggers"][0]["metadata"]["query"]
            for component in ("edge", "returns")
        }
    pods = {  # pod names as a Deployment's ReplicaSets make them: <deployment>-<template hash>-<suffix>
        (RELEASE, "returns"): f"{FULLNAME}-returns-5d8f7c9b4-x2x9z",
        (RELEASE, "canary"): f"{FULLNAME}-returns-canary-6c9d58f7b-q7w4k",
        (RELEASE, "edge"): f"{FULLNAME}-edge-7b9f6d5c8-kq2mz",
        ("blue", "returns"): "blue-switchboard-returns-79c5b8d4f-p4n8t",
        ("blue", "canary"): "blue-switchboard-returns-canary-5f8b9c7d6-l2v9x",
        ("blue", "edge"): "blue-switchboard-edge-6d7c9b5f8-zz4wq",
    }
    for release, by_component in queries.items():
        returns = [
            k
            for k, pod in pods.items()
            if k[1] != "edge"
            and promql_selects(by_component["returns"], {"namespace": NAMESPACE, "service": "returns", "pod": pod})
        ]
        assert returns == [(release, "returns")], (release, by_component["returns"])
        edges = [
            k for k, pod in pods.items() if promql_selects(by_component["edge"], {"namespace": NAMESPACE, "pod": pod})
        ]
        assert edges == [(release, "edge")], (release, by_component["edge"])


# --- scenario ConfigMap --------------------------------------------------------------------------


def scenario_configmap(objects: list[Obj]) -> str:
    text: str = of_kind(objects, "ConfigMap")[f"{FULLNAME}-scenario"]["data"]["scenario.yaml"]
    return text


def test_configmap_holds_a_scenario_that_loads(tmp_path: Path) -> None:
    """The mounted YAML loads with the platform's own loader, tools from the image's scenario folder
    (here the repository's, standing in for the image's /app/scenarios)."""
    objects = render(minimal(image={"scenariosDir": str(SCENARIOS)}))
    (tmp_path / "scenario.yaml").write_text(scenario_configmap(objects))
    loaded = load_scenario(str(tmp_path), SCENARIOS)
    shipped = load_scenario("retail", SCENARIOS)
    assert loaded.config.model_dump(exclude={"tools_module"}) == shipped.config.model_dump(exclude={"tools_module"})
    assert loaded.tools.names() == shipped.tools.names()
    deployment = of_kind(objects, "Deployment")[f"{FULLNAME}-billing"]["spec"]["template"]
    (c,) = deployment["spec"]["containers"]
    mount = next(m for m in c["volumeMounts"] if m["name"] == "scenario")
    assert env_of(c)["SWITCHBOARD_SCENARIO"] == mount["mountPath"]
    volume = next(v for v in deployment["spec"]["volumes"] if v["name"] == "scenario")
    assert volume["configMap"]["name"] == f"{FULLNAME}-scenario"


def test_scenario_yaml_from_values_overrides_and_rolls_the_pods(tmp_path: Path) -> None:
    config = yaml.safe_load((SCENARIOS / "retail" / "scenario.yaml").read_text())
    config["agents"][0]["instructions"] = "Answer in one short sentence."
    default = render(minimal())
    custom = render(minimal(scenario={"name": "retail", "config": config}))
    assert yaml.safe_load(scenario_configmap(custom))["agents"][0]["instructions"] == "Answer in one short sentence."

    def checksum(objects: list[Obj]) -> str:
        pod = of_kind(objects, "Deployment")[f"{FULLNAME}-triage"]["spec"]["template"]
        value: str = pod["metadata"]["annotations"]["checksum/scenario"]
        return value

    assert checksum(default) != checksum(custom)


# --- the chart's agents are the shipped scenario's -----------------------------------------------


def test_default_agents_are_exactly_the_retail_scenarios() -> None:
    scenario = load_scenario("retail", SCENARIOS).config
    assert chart().values["scenario"]["name"] == "retail"
    assert sorted(agent_names({})) == sorted(a.name for a in scenario.agents)


def test_supervisor_values_list_exactly_the_supervisor_scenarios_agents() -> None:
    scenario = load_scenario("supervisor", SCENARIOS).config
    assert sorted(agent_names(ci_values("supervisor-values.yaml"))) == sorted(a.name for a in scenario.agents)


# --- NATS: bundled or external -------------------------------------------------------------------


def test_external_nats_url_and_egress_ports() -> None:
    url = "nats://n1.messaging:4333,nats://n2.messaging:4333,tls://n3.messaging"
    objects = render(minimal(nats={"url": url}))
    for d in of_kind(objects, "Deployment").values():
        assert env_of(d["spec"]["template"]["spec"]["containers"][0])["SWITCHBOARD_NATS_URL"] == url
    policy = of_kind(objects, "NetworkPolicy")[f"{FULLNAME}-agents"]["spec"]
    nats_rule = next(r for r in policy["egress"] if any(p["port"] in (4333, 4222) for p in r["ports"]))
    assert sorted(p["port"] for p in nats_rule["ports"]) == [4222, 4333] and "to" not in nats_rule


def test_bundled_nats_is_a_conditional_dependency() -> None:
    # (from Chart.yaml: rendering drops disabled dependencies from the loaded chart's metadata)
    (dep,) = yaml.safe_load((CHART / "Chart.yaml").read_text())["dependencies"]
    assert (dep["name"], dep["condition"]) == ("nats", "nats.enabled")
    assert chart().values["nats"]["enabled"] is False
    objects = render(ci_values("bundled-nats-values.yaml"), name="prod")
    for d in of_kind(objects, "Deployment").values():
        assert env_of(d["spec"]["template"]["spec"]["containers"][0])["SWITCHBOARD_NATS_URL"] == "nats://prod-nats:4222"
    policy = of_kind(objects, "NetworkPolicy")["prod-switchboard-edge"]["spec"]
    nats_rule = next(r for r in policy["egress"] if r["ports"][0]["port"] == 4222)
    assert nats_rule["to"] == [{"podSelector": {"matchLabels": {
        "app.kubernetes.io/name": "nats", "app.kubernetes.io/instance": "prod", "app.kubernetes.io/component": "nats",
    }}}]  # fmt: skip  # the NATS chart's own pod labels
    assert (
        "nats://prod-nats:4222 (bundled)"
        in chart().render(ci_values("bundled-nats-values.yaml"), name="prod", namespace=NAMESPACE)[
            "switchboard/templates/NOTES.txt"
        ]
    )


def test_bundled_nats_needs_as_many_nodes_as_jetstream_replicas() -> None:
    """Each KV bucket and stream asks for nats.jetstreamReplicas copies; a bundled NATS with fewer nodes
    refuses to create them and no service starts: refused at render, naming the values to change."""
    single = {"enabled": True, "jetstreamReplicas": 3}
    message = render_error({"nats": single})
    assert "nats.jetstreamReplicas: 3 copies of every KV bucket and stream need 3 JetStream nodes" in message
    assert "the bundled NATS runs 1" in message
    two = {**single, "config": {"cluster": {"enabled": True, "replicas": 2}}}
    assert "the bundled NATS runs 2" in render_error({"nats": two})
    for nats in (
        {**single, "config": {"cluster": {"enabled": True, "replicas": 3}}},
        {**single, "config": {"cluster": {"enabled": True}}},  # the NATS chart's default: 3 nodes
        {"enabled": True, "jetstreamReplicas": 1},
        {"url": "nats://nats.messaging:4222", "jetstreamReplicas": 3},  # your own NATS: its size is not known here
    ):
        assert of_kind(render({"nats": nats}), "Deployment"), nats


# --- network policies ----------------------------------------------------------------------------


def test_agents_take_only_metrics_and_health_traffic() -> None:
    objects = render_ci("production-values.yaml")
    policies = of_kind(objects, "NetworkPolicy")
    agents = policies[f"{FULLNAME}-agents"]["spec"]
    assert agents["policyTypes"] == ["Ingress", "Egress"]
    (ingress,) = agents["ingress"]
    assert ingress["ports"] == [{"port": 9464, "protocol": "TCP"}]
    assert ingress["from"] == ci_values("production-values.yaml")["networkPolicy"]["metricsFrom"]
    egress_ports = sorted(p["port"] for r in agents["egress"] for p in r["ports"])
    assert egress_ports == [53, 53, 443, 4222, 4318]  # DNS, model API, NATS, OTLP (extraEgress)
    edge = policies[f"{FULLNAME}-edge"]["spec"]
    edge_in, edge_scrapes = edge["ingress"]
    assert edge_in["ports"] == edge_scrapes["ports"] == [{"port": 8080, "protocol": "TCP"}]
    # the helm test pod still reaches an edge whose clients are restricted, and so do the metrics scrapers
    test_pod = {"app.kubernetes.io/name": "switchboard", "app.kubernetes.io/instance": RELEASE}
    assert {"podSelector": {"matchLabels": test_pod | {"app.kubernetes.io/component": "test"}}} in edge_in["from"]
    assert edge_scrapes["from"] == ci_values("production-values.yaml")["networkPolicy"]["metricsFrom"]
    # the edge calls model APIs too: its moderation rules, an openai-realtime front agent
    assert sorted(p["port"] for r in edge["egress"] for p in r["ports"]) == [53, 53, 443, 4222, 4318]
    closed = of_kind(render(minimal(networkPolicy={"modelApiEgress": False})), "NetworkPolicy")
    assert all(443 not in [p["port"] for r in np["spec"]["egress"] for p in r["ports"]] for np in closed.values())


def test_network_policies_can_be_turned_off() -> None:
    assert not of_kind(render(minimal(networkPolicy={"enabled": False})), "NetworkPolicy")


# --- API keys, helm test --------------------------------------------------------------------------


def test_api_keys_secret_generated_or_existing() -> None:
    objects = render(minimal())
    secret = of_kind(objects, "Secret")[f"{FULLNAME}-api-keys"]
    assert set(secret["data"]) == {"SWITCHBOARD_API_KEYS"}
    edge = of_kind(objects, "Deployment")[f"{FULLNAME}-edge"]["spec"]["template"]["spec"]["containers"][0]
    assert env_of(edge)["SWITCHBOARD_API_KEYS"] == {
        "secretKeyRef": {"name": f"{FULLNAME}-api-keys", "key": "SWITCHBOARD_API_KEYS"}
    }
    objects = render(minimal(edge={"apiKeys": {"existingSecret": "mine", "key": "keys"}}))
    assert not of_kind(objects, "Secret")
    edge = of_kind(objects, "Deployment")[f"{FULLNAME}-edge"]["spec"]["template"]["spec"]["containers"][0]
    assert env_of(edge)["SWITCHBOARD_API_KEYS"] == {"secretKeyRef": {"name": "mine", "key": "keys"}}
    assert "SWITCHBOARD_API_KEYS_FILE" not in env_of(edge)


def test_the_hashed_key_file_is_mounted_from_a_secret_into_the_edge_only() -> None:
    objects = render(minimal(edge={"apiKeys": {"fileSecret": "edge-key-file"}}))
    deployments = of_kind(objects, "Deployment")
    edge = deployments[f"{FULLNAME}-edge"]["spec"]["template"]["spec"]
    path = env_of(edge["containers"][0])["SWITCHBOARD_API_KEYS_FILE"]
    mount = next(m for m in edge["containers"][0]["volumeMounts"] if m["name"] == "api-keys-file")
    volume = next(v for v in edge["volumes"] if v["name"] == "api-keys-file")
    assert path == f"{mount['mountPath']}/api-keys.json" and mount["readOnly"] is True
    assert volume["secret"]["secretName"] == "edge-key-file"
    others = [d for name, d in deployments.items() if not name.endswith("-edge")]
    assert others and not any(
        v["name"] == "api-keys-file" for d in others for v in d["spec"]["template"]["spec"]["volumes"]
    )


def test_with_only_the_key_file_no_plain_key_is_made_stored_or_accepted() -> None:
    keys = {"fileSecret": "edge-key-file", "generated": False}
    tests = {"apiKeySecret": {"name": "switchboard-test-key", "key": "api-key"}}
    objects = render(minimal(edge={"apiKeys": keys}, tests=tests))
    assert not of_kind(objects, "Secret")  # no plain key in the cluster
    edge = of_kind(objects, "Deployment")[f"{FULLNAME}-edge"]["spec"]["template"]["spec"]["containers"][0]
    assert "SWITCHBOARD_API_KEYS" not in env_of(edge) and "SWITCHBOARD_API_KEYS_FILE" in env_of(edge)
    (pod,) = of_kind(objects, "Pod").values()
    assert env_of(pod["spec"]["containers"][0])["SWITCHBOARD_API_KEYS"] == {
        "secretKeyRef": {"name": "switchboard-test-key", "key": "api-key"}
    }
    assert "a key of the key file in Secret edge-key-file" in notes(minimal(edge={"apiKeys": keys}, tests=tests))
    assert "tests.apiKeySecret.name: the edge has no plain API key" in render_error(minimal(edge={"apiKeys": keys}))
    assert not of_kind(render(minimal(edge={"apiKeys": keys}, tests={"enabled": False})), "Pod")
    message = render_error(minimal(edge={"apiKeys": {"generated": False}}))
    assert "edge.apiKeys.generated: false, with neither fileSecret nor existingSecret" in message
    # the generated key stays the default, beside a key file too
    objects = render(minimal(edge={"apiKeys": {"fileSecret": "edge-key-file"}}))
    assert set(of_kind(objects, "Secret")) == {f"{FULLNAME}-api-keys"}


def test_helm_test_pod_holds_a_conversation_with_the_edge_service() -> None:
    objects = render(minimal())
    (pod,) = of_kind(objects, "Pod").values()
    assert pod["metadata"]["annotations"]["helm.sh/hook"] == "test"
    (c,) = pod["spec"]["containers"]
    env = env_of(c)
    service = of_kind(objects, "Service")[f"{FULLNAME}-edge"]
    assert env["EDGE_URL"] == f"ws://{service['metadata']['name']}:{service['spec']['ports'][0]['port']}/v1"
    assert [env["SAY_0"], env["SAY_1"]] == chart().values["tests"]["say"]
    assert env["EXPECT_AGENTS"] == "auth returns"
    assert c["command"] == ["sh", "-c"] and 'switchboard chat --url "$EDGE_URL"' in c["args"][0]
    assert '--say "$SAY_0" --say "$SAY_1"' in c["args"][0]
    assert not of_kind(render(minimal(tests={"enabled": False})), "Pod")


# --- bad input: rejected at render time, naming the field ----------------------------------------


def test_values_typo_rejected_by_the_schema() -> None:
    message = render_error(minimal(agentDefaults={"replica": 2}))
    assert "/agentDefaults" in message and "'replica'" in message
    message = render_error(minimal(agents=[{"name": "triage", "resources": {"requets": {"cpu": "1"}}}]))
    assert "/agents/0/resources" in message and "'requets'" in message
    message = render_error(minimal(edges={"replicas": 2}))
    assert "'edges'" in message
    with pytest.raises(helm_python.HelmValuesError, match="replica"):
        chart().validate_schema(minimal(agentDefaults={"replica": 2}))
    chart().validate_schema(ci_values("production-values.yaml"))


def test_scenario_yaml_typo_rejected_by_the_schema() -> None:
    config = yaml.safe_load((SCENARIOS / "retail" / "scenario.yaml").read_text())
    config["agents"][1]["handof"] = []
    message = render_error(minimal(scenario={"name": "retail", "config": config}))
    assert "/scenario/config" in message and "'handof'" in message


def test_an_agent_on_the_realtime_api_runs_in_the_edge_not_in_a_deployment() -> None:
    config = yaml.safe_load((SCENARIOS / "retail" / "scenario.yaml").read_text())
    triage = next(a for a in config["agents"] if a["name"] == "triage")
    triage["model"] = {"provider": "openai-realtime", "name": "gpt-realtime"}
    values = minimal(scenario={"name": "retail", "config": config})
    error = render_error(values)
    assert 'agents[0]: agent "triage" runs on the OpenAI Realtime API inside the edge' in error
    values["agents"] = [{"name": a["name"]} for a in config["agents"] if a["name"] != "triage"]  # none for triage
    deployments = of_kind(render(values), "Deployment")
    assert f"{FULLNAME}-triage" not in deployments and f"{FULLNAME}-auth" in deployments


def test_negative_replicas_rejected() -> None:
    message = render_error(minimal(agents=[{"name": "triage", "replicas": -1}]))
    assert "/agents/0/replicas" in message and "minimum" in message
    message = render_error(minimal(edge={"replicas": -2}))
    assert "/edge/replicas" in message
    # the bundled NATS runs in the release's namespace: the URL and the network policies assume it
    message = render_error(minimal(nats={"enabled": True, "namespaceOverride": "messaging"}))
    assert "namespaceOverride" in message
    # KEDA cannot start from zero: the in-flight metric comes only from running replicas
    message = render_error(minimal(agentDefaults={"autoscaling": {"keda": {"enabled": True, "minReplicas": 0}}}))
    assert "/agentDefaults/autoscaling/keda/minReplicas" in message and "minimum" in message


def test_agent_listed_twice_rejected() -> None:
    agents = [{"name": n} for n in ("triage", "auth", "returns", "billing", "generalist", "auth")]
    message = render_error(minimal(agents=agents))
    assert 'agents[5].name: agent "auth" is listed twice (also agents[1])' in message


def test_agent_without_configuration_rejected() -> None:
    agents = [{"name": n} for n in ("triage", "auth", "returns", "billing", "generalist", "shipping")]
    message = render_error(minimal(agents=agents))
    assert 'agents[5].name: "shipping" has no configuration: scenario "retail" has no agent of that name' in message


def test_scenario_agent_without_an_entry_rejected() -> None:
    message = render_error(minimal(agents=[{"name": n} for n in ("triage", "auth", "returns", "generalist")]))
    assert 'agents: scenario "retail" defines agent "billing" but agents has no entry for it' in message


def test_other_contradictions_rejected() -> None:
    both = {"hpa": {"enabled": True}, "keda": {"enabled": True}}
    message = render_error(
        minimal(
            agents=[{"name": "triage", "autoscaling": both}]
            + [{"name": n} for n in ("auth", "returns", "billing", "generalist")]
        )
    )
    assert "agents[0].autoscaling: hpa and keda are both enabled" in message
    assert "nats.url:" in render_error({})
    message = render_error(minimal(scenario={"name": "nosuch"}))
    assert 'scenario.name: the chart has no copy of scenario "nosuch" (it ships: retail, supervisor)' in message
    message = render_error(minimal(tests={"say": ["hi", "bye"], "expectAgents": ["triage"]}))
    assert "tests.expectAgents" in message


def test_env_may_not_override_what_the_chart_wires() -> None:
    """An env entry overriding a setting the chart derives from a value (the edge's port, an agent's metrics
    port, the drain, NATS, the track) would leave the probes, the container port, the network policies or
    the termination budget on the old value: the process listens where the kubelet never looks."""
    message = render_error(minimal(edge={"env": {"SWITCHBOARD_EDGE_PORT": 9000}}))
    assert "edge.env.SWITCHBOARD_EDGE_PORT: the chart sets it from edge.port" in message
    assert "set edge.port instead" in message
    message = render_error(minimal(agentDefaults={"env": {"SWITCHBOARD_METRICS_PORT": "9999"}}))
    assert "agents[0].env.SWITCHBOARD_METRICS_PORT: the chart sets it from metricsPort" in message
    assert "edge.drainGraceSeconds" in render_error(minimal(edge={"env": {"SWITCHBOARD_DRAIN_GRACE_S": 60}}))
    # settings the chart does not wire pass through (a log level, the bind address of an IPv6-only cluster)
    env = {"SWITCHBOARD_LOG_LEVEL": "DEBUG", "SWITCHBOARD_EDGE_HOST": "::"}
    (edge,) = of_kind(render(minimal(edge={"env": env})), "Deployment")[f"{FULLNAME}-edge"]["spec"]["template"]["spec"][
        "containers"
    ]
    assert env.items() <= env_of(edge).items()


def test_a_disruption_budget_that_allows_no_eviction_is_refused() -> None:
    """maxUnavailable 0 (or 0%) lets no pod be evicted: a node drain or cluster upgrade waits on it forever.
    The defaults (1) never block a drain, whatever the replicas; no budget at all stays possible."""
    message = render_error(minimal(agentDefaults={"pdb": {"maxUnavailable": 0}}))
    assert "agents[0].pdb.maxUnavailable: 0 lets no pod of switchboard-triage be evicted" in message
    message = render_error(minimal(edge={"pdb": {"maxUnavailable": "0%"}}))
    assert "edge.pdb.maxUnavailable: 0% lets no pod of switchboard-edge be evicted" in message
    assert "pdb.enabled: false for no budget" in message
    objects = render(minimal(agentDefaults={"pdb": {"enabled": False, "maxUnavailable": 0}}))
    assert list(of_kind(objects, "PodDisruptionBudget")) == [f"{FULLNAME}-edge"]
    for pdb in of_kind(render(minimal()), "PodDisruptionBudget").values():  # one replica each: still drainable
        assert pdb["spec"]["maxUnavailable"] == 1


def eviction_allowed(pdb: Obj, replicas: int, ready: int, evict_ready: bool) -> bool:
    """The eviction API's answer for one pod of a Deployment under this budget (policy/v1, an integer
    maxUnavailable): a ready pod only while more than the desired pods are healthy; a pod that is not
    ready, under the default IfHealthyBudget, only while the budget is met, under AlwaysAllow always."""
    desired_healthy = max(0, replicas - int(pdb["spec"]["maxUnavailable"]))
    if evict_ready:
        return ready - desired_healthy > 0
    policy = pdb["spec"].get("unhealthyPodEvictionPolicy", "IfHealthyBudget")
    return policy == "AlwaysAllow" or ready >= desired_healthy


@pytest.mark.parametrize("values_file", VALUES_FILES)
def test_disruption_budgets_never_hold_up_a_node_drain(values_file: str) -> None:
    """A drain evicts every pod of a node: with one replica, with a replica that is not ready (a crash loop,
    NATS unreachable) beside a ready one, and with every replica not ready, each eviction must eventually
    be allowed. A healthy replica waits only while another is not ready yet."""
    for name, pdb in of_kind(render_ci(values_file), "PodDisruptionBudget").items():
        assert eviction_allowed(pdb, replicas=1, ready=1, evict_ready=True), name
        assert eviction_allowed(pdb, replicas=2, ready=1, evict_ready=False), name
        assert eviction_allowed(pdb, replicas=2, ready=0, evict_ready=False), name  # all crash-looping
        assert eviction_allowed(pdb, replicas=3, ready=1, evict_ready=False), name
        assert not eviction_allowed(pdb, replicas=2, ready=1, evict_ready=True), name  # the budget itself


# --- the schema itself ----------------------------------------------------------------------------

FREE_FORM = {  # Kubernetes or NATS-chart objects passed through as they are
    "global",
    "affinity",
    "tolerations",
    "envFrom",
    "topologySpreadConstraints",
    "edgeFrom",
    "metricsFrom",
    "natsTo",
    "extraEgress",
    "config",
    "container",
    "reloader",
    "promExporter",
    "service",
    "statefulSet",
    "podTemplate",
    "headlessService",
    "configMap",
    "podDisruptionBudget",
    "serviceAccount",
    "natsBox",
    "tlsCA",
    "settings",
    "args",
    "when_result",
    "extraResources",
}


def test_schema_closes_every_object() -> None:
    """Every object with a fixed set of keys has additionalProperties: false (a typo fails); maps of
    user-chosen keys type their values; Kubernetes and NATS-chart objects pass through."""
    schema = json.loads((CHART / "values.schema.json").read_text())
    open_objects = []

    def walk(node: Any, path: str) -> None:
        if isinstance(node, dict):
            if "properties" in node and node.get("additionalProperties") is not False:
                open_objects.append(path)
            if node.get("type") == "object" and "properties" not in node and "additionalProperties" not in node:
                parts = path.split("/")
                if (parts[-2] if parts[-1] == "items" else parts[-1]) not in FREE_FORM:
                    open_objects.append(path)
            for key, value in node.items():
                walk(value, f"{path}/{key}")
        elif isinstance(node, list):
            for i, value in enumerate(node):
                walk(value, f"{path}/{i}")

    walk(schema, "")
    assert open_objects == [], "\n".join(open_objects)


def test_scenario_schema_is_current() -> None:
    """values.schema.json carries ScenarioConfig's JSON Schema; `make chart-schema` refreshes it."""
    spec = importlib.util.spec_from_file_location("scenario_schema", ROOT / "charts" / "tools" / "scenario_schema.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    schema = json.loads((CHART / "values.schema.json").read_text())
    assert module.synced(schema) == schema, "values.schema.json is stale: run `make chart-schema`"


def test_notes_tell_how_to_connect_and_test() -> None:
    text = notes(minimal())
    assert f"kubectl -n {NAMESPACE} port-forward svc/{FULLNAME}-edge 8080:80" in text
    assert f"helm test {RELEASE} -n {NAMESPACE} --logs" in text
    assert f"{FULLNAME}-billing  (agent, 1 replica(s))" in text


# --- least privilege on the bus ------------------------------------------------------------------


def bus_values(tmp_path: Path, base: Obj, scenario: str = "retail") -> tuple[Obj, Obj]:
    """``switchboard bus-keys`` for ``scenario`` merged into ``base`` as `helm -f base -f bus-values` does:
    (the merged values, the generated ones)."""
    config = load_scenario(scenario, SCENARIOS).config
    generated = chart_keys.write(tmp_path / "bus-values.yaml", config.name, [(a.name, a.role) for a in config.agents])
    assert stat.S_IMODE((tmp_path / "bus-values.yaml").stat().st_mode) == 0o600
    assert yaml.safe_load((tmp_path / "bus-values.yaml").read_text()) == generated
    merged = {**base, **generated, "nats": {**base.get("nats", {}), **generated["nats"]}}
    return merged, generated


def bus_secrets(objects: list[Obj]) -> dict[str, str]:
    """Bus identity -> the seed its Secret holds."""
    return {
        s["metadata"]["labels"]["switchboard.dev/bus-identity"]: base64.b64decode(s["data"]["seed.nk"]).decode()
        for s in of_kind(objects, "Secret").values()
        if "switchboard.dev/bus-identity" in s["metadata"]["labels"]
    }


def mounted_identity(deployment: Obj, fullname: str = FULLNAME) -> tuple[str, str]:
    """(identity, inbox prefix) of the one bus seed a Deployment mounts, checked against its environment."""
    pod = deployment["spec"]["template"]["spec"]
    (volume,) = [
        v for v in pod["volumes"] if "secret" in v and v["secret"]["secretName"].startswith(f"{fullname}-bus-")
    ]
    assert volume["secret"]["items"] == [{"key": "seed.nk", "path": "seed.nk"}]
    container = pod["containers"][0]
    (mount,) = [m for m in container["volumeMounts"] if m["name"] == volume["name"]]
    env = env_of(container)
    assert env["SWITCHBOARD_NATS_SEED_FILE"] == f"{mount['mountPath']}/seed.nk" and mount["readOnly"] is True
    return volume["secret"]["secretName"].removeprefix(f"{fullname}-bus-"), env["SWITCHBOARD_NATS_INBOX_PREFIX"]


def test_each_deployment_mounts_only_its_own_bus_seed(tmp_path: Path) -> None:
    values, generated = bus_values(tmp_path, ci_values("canary-values.yaml"))
    objects = render(values)
    secrets = bus_secrets(objects)
    assert secrets == generated["busAuth"]["seeds"]  # one Secret per identity, admin included
    mounted = {name: mounted_identity(d) for name, d in of_kind(objects, "Deployment").items()}
    assert mounted == {
        f"{FULLNAME}-edge": ("edge", "_INBOX_edge"),
        **{f"{FULLNAME}-{a}": (f"agent-{a}", f"_INBOX_agent-{a}") for a in agent_names(values)},
        f"{FULLNAME}-returns-canary": ("agent-returns", "_INBOX_agent-returns"),  # every track of an agent
    }
    for obj in objects:  # still valid Kubernetes with the Secrets and the volumes
        if (obj["apiVersion"], obj["kind"]) not in CRD_KINDS:
            kubernetes_validate.validate(obj, KUBE_VERSION, strict=True)
    rotated = render({**values, "busAuth": {**values["busAuth"], "seeds": {
        **values["busAuth"]["seeds"], "agent-triage": chart_keys.generate_seed().decode()}}})  # fmt: skip

    def checksums(objs: list[Obj]) -> dict[str, str]:
        return {
            n: d["spec"]["template"]["metadata"]["annotations"]["checksum/bus-key"]
            for n, d in of_kind(objs, "Deployment").items()
        }

    before, after = checksums(objects), checksums(rotated)
    assert [n for n in before if before[n] != after[n]] == [f"{FULLNAME}-triage"]  # a new seed rolls its pods only


async def test_the_rendered_seeds_work_against_the_authorization_block(tmp_path: Path) -> None:
    """The bundled NATS's authorization (nats.config.merge) on a real nats-server, and the seeds of the
    rendered Secrets: the edge writes session state; returns may not publish to billing or read sessions."""
    values, generated = bus_values(tmp_path, ci_values("bundled-nats-values.yaml"))
    objects = render(values, name="prod")
    secrets = bus_secrets(objects)
    deployments = of_kind(objects, "Deployment")
    inbox = dict(mounted_identity(d, "prod-switchboard") for d in deployments.values())
    for identity in ("edge", "agent-returns"):
        (tmp_path / f"{identity}.nk").write_text(secrets[identity])
        assert inbox[identity] == inbox_prefix(identity)
    with NatsServer(tmp_path / "nats", authorization=chart_keys.nats_config(generated)) as server:
        edge, _ = await connect_as(server.url, "edge", tmp_path / "edge.nk")
        returns, refused = await connect_as(server.url, "agent-returns", tmp_path / "agent-returns.nk")
        try:
            sessions = await SessionStore.open(edge.jetstream())
            assert sessions is not None
            await returns.publish(subjects.agent_turn("billing"), b"{}")
            await returns.flush()
            await refused.wait(subjects.agent_turn("billing"))
            with pytest.raises(Exception):  # noqa: B017 - dropped: a timeout or a JetStream error
                await returns.jetstream().key_value(SESSIONS_BUCKET)
            await refused.wait(f"KV_{SESSIONS_BUCKET}")
        finally:
            await edge.close()
            await returns.close()


def test_bus_keys_completes_a_values_file_and_refuses_one_it_cannot_read(tmp_path: Path) -> None:
    path = tmp_path / "values.yaml"
    path.write_text("image:\n  tag: v1\nnats:\n  url: nats://nats:4222\n  config: {jetstream: {enabled: true}}\n")
    chart_keys.write(path, "retail", [("triage", "agent")])
    values = yaml.safe_load(path.read_text())
    assert values["image"] == {"tag": "v1"} and values["nats"]["url"] == "nats://nats:4222"  # kept
    assert values["nats"]["config"]["jetstream"] == {"enabled": True}
    assert values["nats"]["config"]["merge"]["authorization"]["users"] and values["busAuth"]["seeds"]["edge"]
    for text, says in [("a: [1,\n", "cannot read it as a values file"), ("- 1\n", "a YAML mapping, not a list"),
                       ("busAuth: 5\n", "busAuth and busAuth.seeds must be mappings")]:  # fmt: skip
        path.write_text(text)
        with pytest.raises(chart_keys.ValuesFileError, match=says):
            chart_keys.write(path, "retail", [("triage", "agent")])
        assert path.read_text() == text  # left as it was


def test_bus_keys_keeps_its_seeds_and_rotates_in_two_steps(tmp_path: Path) -> None:
    path = tmp_path / "bus-values.yaml"
    first = chart_keys.write(path, "retail", [("triage", "agent")])
    again = chart_keys.write(path, "retail", [("triage", "agent"), ("billing", "agent")])
    assert {k: again["busAuth"]["seeds"][k] for k in first["busAuth"]["seeds"]} == first["busAuth"]["seeds"]
    assert set(again["busAuth"]["seeds"]) == {"edge", "agent-triage", "agent-billing", "admin"}
    agents = [("triage", "agent"), ("billing", "agent")]
    rotated = chart_keys.write(path, "retail", agents, rotate=True)
    assert not set(rotated["busAuth"]["seeds"].values()) & set(again["busAuth"]["seeds"].values())
    old_keys = {name: public_key(seed.encode()) for name, seed in again["busAuth"]["seeds"].items()}
    assert rotated["busAuth"]["retiring"] == old_keys  # public keys only: the old seeds leave the file
    with pytest.raises(chart_keys.RotationError, match="--retire-old"):  # one rotation at a time
        chart_keys.write(path, "retail", agents, rotate=True)
    assert chart_keys.write(path, "retail", agents) == rotated  # a plain run keeps the window open
    retired = chart_keys.write(path, "retail", agents, retire=True)
    assert "retiring" not in retired["busAuth"] and retired["busAuth"]["seeds"] == rotated["busAuth"]["seeds"]
    users = retired["nats"]["config"]["merge"]["authorization"]["users"]
    assert not {u["nkey"] for u in users} & set(old_keys.values())


def _write_seed(folder: Path, name: str, seed: str) -> Path:
    path = folder / f"{name}.nk"
    path.write_text(seed)
    return path


async def _connects(server: NatsServer, identity: str, seed: Path) -> bool:
    try:
        nc, _ = await connect_as(server.client_url, identity, seed)
    except Exception:  # noqa: BLE001 - refused: an authorization violation, whatever nats-py raises for it
        return False
    await nc.close()
    return True


async def _until_connects(server: NatsServer, identity: str, seed: Path, expected: bool) -> None:
    """Wait for a config reload to take effect: ``seed`` connecting (or refused) as ``expected``."""
    deadline = asyncio.get_running_loop().time() + 10
    while await _connects(server, identity, seed) != expected:
        assert asyncio.get_running_loop().time() < deadline, f"{identity}: connects is still {not expected}"


async def test_a_rotation_accepts_old_and_new_seeds_with_the_same_rights_until_the_old_are_retired(
    tmp_path: Path,
) -> None:
    """`bus-keys --rotate` then `--retire-old` on a real nats-server reloading its config as the NATS chart's
    reloader does: a pod on its old seed keeps working through the window; after retiring, only the new
    seed gets in."""
    values, before = bus_values(tmp_path, ci_values("bundled-nats-values.yaml"))
    path, agents = (
        tmp_path / "bus-values.yaml",
        [(a.name, a.role) for a in load_scenario("retail", SCENARIOS).config.agents],
    )
    old = {n: _write_seed(tmp_path, f"old-{n}", before["busAuth"]["seeds"][n]) for n in ("edge", "agent-returns")}
    with NatsServer(tmp_path / "nats", authorization=chart_keys.nats_config(before)) as server:
        pod, _ = await connect_as(server.client_url, "agent-returns", old["agent-returns"])  # running before
        rotated = chart_keys.write(path, "retail", agents, rotate=True)
        objects = render({**values, **rotated, "nats": {**values["nats"], **rotated["nats"]}})
        assert bus_secrets(objects) == rotated["busAuth"]["seeds"]  # the chart mounts only the new seeds
        new = {n: _write_seed(tmp_path, f"new-{n}", rotated["busAuth"]["seeds"][n]) for n in old}
        server.reload_authorization(chart_keys.nats_config(rotated))
        await _until_connects(server, "agent-returns", new["agent-returns"], True)
        edge, _ = await connect_as(server.client_url, "edge", new["edge"])
        fresh, refused_new = await connect_as(server.client_url, "agent-returns", new["agent-returns"])
        late_old, refused_old = await connect_as(server.client_url, "agent-returns", old["agent-returns"])
        try:
            assert not pod.is_closed  # the reload did not cut off the pod on its old seed
            turns = [await nc.subscribe(subjects.agent_turn("returns")) for nc in (pod, fresh, late_old)]
            for nc in (pod, fresh, late_old, edge):
                await nc.flush()
            await edge.publish(subjects.agent_turn("returns"), b"{}")
            for sub in turns:  # each key still does its work...
                assert (await sub.next_msg(timeout=5)).data == b"{}"
            for nc, refusals in ((fresh, refused_new), (late_old, refused_old)):  # ...and nothing more
                await nc.publish(subjects.agent_turn("billing"), b"{}")
                await nc.flush()
                await refusals.wait(subjects.agent_turn("billing"))
        finally:
            for nc in (edge, fresh, late_old):
                await nc.close()
        users = rotated["nats"]["config"]["merge"]["authorization"]["users"]
        by_key = {u["nkey"]: {k: v for k, v in u.items() if k != "nkey"} for u in users}
        for name in old:  # the same rights under either key
            assert by_key[public_key(old[name].read_bytes())] == by_key[public_key(new[name].read_bytes())]
        retired = chart_keys.write(path, "retail", agents, retire=True)
        server.reload_authorization(chart_keys.nats_config(retired))
        await _until_connects(server, "agent-returns", old["agent-returns"], False)
        assert not await _connects(server, "edge", old["edge"])
        assert await _connects(server, "agent-returns", new["agent-returns"])
        assert await _connects(server, "edge", new["edge"])
        await pod.close()


def test_bus_keys_command_rotates_in_two_steps_and_refuses_them_out_of_order(tmp_path: Path) -> None:
    out = tmp_path / "bus-values.yaml"
    env = {k: v for k, v in os.environ.items() if k != "SWITCHBOARD_NATS_SEED_FILE"}
    env |= {"SWITCHBOARD_SCENARIOS_DIR": str(SCENARIOS)}

    def bus_keys(*flags: str) -> subprocess.CompletedProcess[str]:
        args = [sys.executable, "-m", "switchboard", "bus-keys", "--scenario", "retail", "--out", str(out), *flags]
        return subprocess.run(args, env=env, capture_output=True, text=True, timeout=60)

    assert bus_keys().returncode == 0
    rotate = bus_keys("--rotate")
    assert rotate.returncode == 0 and "--retire-old" in rotate.stdout
    again = bus_keys("--rotate")
    assert again.returncode == 1 and "a rotation is under way" in again.stderr
    both = bus_keys("--rotate", "--retire-old")
    assert both.returncode == 1 and "two steps" in both.stderr
    assert "retiring" in yaml.safe_load(out.read_text())["busAuth"]  # the refused runs changed nothing
    assert bus_keys("--retire-old").returncode == 0
    assert "retiring" not in yaml.safe_load(out.read_text())["busAuth"]


def test_bus_auth_refuses_a_missing_seed_or_a_nats_that_would_not_enforce_it(tmp_path: Path) -> None:
    values, _ = bus_values(tmp_path, minimal())
    seeds = dict(values["busAuth"]["seeds"])
    del seeds["agent-billing"]
    assert "busAuth.seeds.agent-billing: no NKey seed" in render_error(
        {**values, "busAuth": {**values["busAuth"], "seeds": seeds}}
    )
    assert "would not enforce the identities" in render_error(
        {**values, "nats": {"enabled": True, "config": {"jetstream": {"enabled": True}}}}
    )
    assert "no service could connect" in render_error({**values, "busAuth": {"enabled": False}})
    assert "/busAuth/seeds/edge" in render_error(
        {**values, "busAuth": {"enabled": True, "seeds": {"edge": "not-a-seed"}}}
    )
    # Secrets made elsewhere (createSecrets: false): the Deployments mount them, the chart makes none
    external = render({**values, "busAuth": {"enabled": True, "createSecrets": False}})
    assert bus_secrets(external) == {}
    assert mounted_identity(of_kind(external, "Deployment")[f"{FULLNAME}-edge"]) == ("edge", "_INBOX_edge")


def test_notes_say_whether_the_bus_is_locked(tmp_path: Path) -> None:
    assert "Bus:      open: every process has every right" in notes(minimal())
    values, _ = bus_values(tmp_path, minimal())
    text = notes(values)
    assert f"get secret {FULLNAME}-bus-admin -o jsonpath='{{.data.seed\\.nk}}'" in text
    assert "SWITCHBOARD_NATS_SEED_FILE=admin.nk switchboard rollout status" in text


def test_bus_keys_command_writes_the_values_and_a_config_for_your_own_nats(tmp_path: Path) -> None:
    out, conf = tmp_path / "bus-values.yaml", tmp_path / "nats-auth.conf"
    env = {k: v for k, v in os.environ.items() if k != "SWITCHBOARD_NATS_SEED_FILE"}
    env |= {"SWITCHBOARD_SCENARIOS_DIR": str(SCENARIOS)}
    subprocess.run(
        [sys.executable, "-m", "switchboard", "bus-keys", "--scenario", "supervisor", "--out", str(out),
         "--nats-config", str(conf)],
        env=env, check=True, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    values = yaml.safe_load(out.read_text())
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    assert set(values["busAuth"]["seeds"]) == {"edge", "supervisor-supervisor", "admin"} | {
        f"agent-{a.name}" for a in load_scenario("supervisor", SCENARIOS).config.agents if a.role == "agent"
    }
    with NatsServer(tmp_path / "nats", authorization=conf.read_text()) as server:  # a config nats-server takes
        refused = subprocess.run(
            [sys.executable, "-m", "switchboard", "trace", "s1", "--nats-url", server.client_url],
            env=env | {"SWITCHBOARD_NATS_SEED_FILE": ""}, capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert refused.returncode == 2 and "Authorization Violation" in refused.stderr, refused.stderr
        assert "admin NKey in SWITCHBOARD_NATS_SEED_FILE" in refused.stderr
        seed = tmp_path / "admin.nk"
        seed.write_text(values["busAuth"]["seeds"]["admin"])
        trace = subprocess.run(
            [sys.executable, "-m", "switchboard", "trace", "s1", "--nats-url", server.client_url],
            env=env | {"SWITCHBOARD_NATS_SEED_FILE": str(seed)}, capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert "no audit stream SWITCHBOARD_AUDIT" in trace.stderr  # in, with the admin seed: nothing stored yet


def test_lint_strict_with_bus_identities(tmp_path: Path) -> None:
    values, _ = bus_values(tmp_path, ci_values("production-values.yaml"))
    report = helm_python.lint(CHART, values, strict=True, namespace=NAMESPACE, kube_version=KUBE_VERSION)
    assert report["errors"] == [MISSING_NATS], report
