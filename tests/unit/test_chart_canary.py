"""The chart with canary values: a canary Deployment per agent on track canary, its own image,
replicas and (optionally) scenario YAML, no autoscaler, and the initial weight handed to the edge."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

from test_chart import FULLNAME, SCENARIOS, ci_values, env_of, minimal, of_kind, render, render_ci, render_error

from switchboard.agents import load_scenario

Obj = dict[str, Any]


def container(objects: list[Obj], deployment: str) -> Obj:
    (c,) = of_kind(objects, "Deployment")[deployment]["spec"]["template"]["spec"]["containers"]
    return c


def test_canary_deployment_runs_the_canary_track() -> None:
    objects = render_ci("canary-values.yaml")
    deployments = of_kind(objects, "Deployment")
    canary, stable = deployments[f"{FULLNAME}-returns-canary"], deployments[f"{FULLNAME}-returns"]
    assert canary["spec"]["selector"]["matchLabels"]["switchboard.dev/track"] == "canary"
    assert canary["spec"]["template"]["metadata"]["labels"]["switchboard.dev/agent"] == "returns"
    assert canary["spec"]["replicas"] == 1
    assert env_of(container(objects, f"{FULLNAME}-returns-canary"))["SWITCHBOARD_TRACK"] == "canary"
    assert env_of(container(objects, f"{FULLNAME}-returns"))["SWITCHBOARD_TRACK"] == "stable"
    assert container(objects, f"{FULLNAME}-returns-canary")["image"] == "switchboard:0.2.0"
    assert container(objects, f"{FULLNAME}-returns")["image"] == "switchboard:0.1.0"
    assert container(objects, f"{FULLNAME}-returns-canary")["args"] == ["agent", "--name", "returns"]
    assert "replicas" not in stable["spec"]  # the stable one is autoscaled, the canary never is
    assert [h["spec"]["scaleTargetRef"]["name"] for h in of_kind(objects, "HorizontalPodAutoscaler").values()] == [
        f"{FULLNAME}-returns"
    ]
    assert f"{FULLNAME}-billing-canary" not in deployments  # canary.enabled: false


def test_initial_weights_go_to_the_edge() -> None:
    objects = render_ci("canary-values.yaml")
    assert env_of(container(objects, f"{FULLNAME}-edge"))["SWITCHBOARD_CANARY_WEIGHTS"] == "returns=10"
    assert "SWITCHBOARD_CANARY_WEIGHTS" not in env_of(container(render(minimal()), f"{FULLNAME}-edge"))


def test_canary_scenario_is_its_own_configmap_and_loads(tmp_path: Path) -> None:
    values = ci_values("canary-values.yaml") | {"image": {"scenariosDir": str(SCENARIOS)}}
    objects = render(values)
    pod = of_kind(objects, "Deployment")[f"{FULLNAME}-returns-canary"]["spec"]["template"]
    volume = next(v for v in pod["spec"]["volumes"] if v["name"] == "scenario")
    assert volume["configMap"]["name"] == f"{FULLNAME}-returns-canary-scenario"
    stable_pod = of_kind(objects, "Deployment")[f"{FULLNAME}-returns"]["spec"]["template"]
    assert next(v for v in stable_pod["spec"]["volumes"] if v["name"] == "scenario")["configMap"]["name"] == (
        f"{FULLNAME}-scenario"
    )
    configmap = of_kind(objects, "ConfigMap")[f"{FULLNAME}-returns-canary-scenario"]
    (tmp_path / "scenario.yaml").write_text(configmap["data"]["scenario.yaml"])
    loaded = load_scenario(str(tmp_path), SCENARIOS)  # the platform's own loader, tools from the image's folder
    agent = loaded.config.agent("returns")
    assert agent is not None and agent.instructions.startswith("Help verified callers return orders.")
    assert (
        pod["metadata"]["annotations"]["checksum/scenario"]
        != stable_pod["metadata"]["annotations"]["checksum/scenario"]
    )


def test_canary_without_its_own_scenario_mounts_the_releases() -> None:
    agents = [{"name": a} for a in ("triage", "auth", "billing", "generalist")]
    agents.append({"name": "returns", "canary": {"enabled": True, "weight": 5}})
    objects = render(minimal(agents=agents))
    pod = of_kind(objects, "Deployment")[f"{FULLNAME}-returns-canary"]["spec"]["template"]
    assert next(v for v in pod["spec"]["volumes"] if v["name"] == "scenario")["configMap"]["name"] == (
        f"{FULLNAME}-scenario"
    )
    assert container(objects, f"{FULLNAME}-returns-canary")["image"] == "switchboard:0.1.0"


def test_bad_canary_values_are_refused() -> None:
    values = ci_values("canary-values.yaml")
    bad = copy.deepcopy(values)
    bad["agents"][2]["canary"]["weight"] = 101
    assert "/agents/2/canary/weight" in render_error(bad)
    bad = copy.deepcopy(values)
    bad["agents"][2]["canary"]["replica"] = 2  # a typo
    assert "replica" in render_error(bad)
    bad = copy.deepcopy(values)
    bad["agents"][2]["canary"]["scenario"]["agents"] = [
        a for a in bad["agents"][2]["canary"]["scenario"]["agents"] if a["name"] != "returns"
    ]
    error = render_error(bad)
    assert 'agents[2].canary.scenario: has no agent "returns"' in error and "would not load" in error


def test_a_weighted_canary_without_replicas_is_refused() -> None:
    """Its weight would pin that share of new sessions to a canary no replica serves (every turn of theirs
    to the fallback agent); with weight 0, e.g. once aborted and scaled to 0 as the values should then say,
    it renders."""
    values = ci_values("canary-values.yaml")
    values["agents"][2]["canary"]["replicas"] = 0
    error = render_error(values)
    assert "agents[2].canary: weight 10 with replicas 0 would pin 10% of new sessions to a canary" in error
    values["agents"][2]["canary"]["weight"] = 0
    objects = render(values)
    assert of_kind(objects, "Deployment")[f"{FULLNAME}-returns-canary"]["spec"]["replicas"] == 0
    assert "SWITCHBOARD_CANARY_WEIGHTS" not in env_of(container(objects, f"{FULLNAME}-edge"))


def test_disabled_agent_has_no_canary() -> None:
    values = ci_values("canary-values.yaml")
    values["agents"][2]["enabled"] = False
    deployments = of_kind(render(values), "Deployment")
    assert f"{FULLNAME}-returns" not in deployments and f"{FULLNAME}-returns-canary" not in deployments


def test_a_supervisor_has_no_canary() -> None:
    """Consults are not routed by track: a supervisor canary would take an unweighted share of them."""
    values = ci_values("supervisor-values.yaml")
    values["agents"][1]["canary"] = {"enabled": True, "weight": 10, "image": {"tag": "0.2.0"}}
    error = render_error(values)
    assert 'agents[1].canary: "supervisor" is a supervisor' in error and "not routed by track" in error


def test_an_agent_named_like_another_agents_canary_is_refused() -> None:
    """Agent ``x-canary`` and the canary of agent ``x`` both rendered Deployment ``<fullname>-x-canary``: applied,
    one replaced the other (the canary, or the agent, never ran)."""
    scenario = {
        "name": "retail", "entry_agent": "x", "fallback_agent": "x", "tools_module": None,
        "agents": [{"name": "x", "instructions": "a"}, {"name": "x-canary", "instructions": "b"}],
    }  # fmt: skip
    agents = [{"name": "x", "canary": {"enabled": True, "weight": 10}}, {"name": "x-canary"}]
    error = render_error(minimal(scenario={"name": "retail", "config": scenario}, agents=agents))
    assert f'agents[1]: its Deployment name "{FULLNAME}-x-canary" is also the one of agents[0].canary' in error
    agents[1]["canary"] = {"enabled": True}  # x-canary's own canary is x-canary-canary: no clash
    agents[0]["canary"] = {"enabled": False}
    deployments = of_kind(render(minimal(scenario={"name": "retail", "config": scenario}, agents=agents)), "Deployment")
    assert {f"{FULLNAME}-x", f"{FULLNAME}-x-canary", f"{FULLNAME}-x-canary-canary"} <= set(deployments)
