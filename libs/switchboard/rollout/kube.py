"""The cluster side of a rollout, through the official ``kubernetes`` client: an agent's stable Deployment
``<prefix>-<agent>`` and its canary ``<prefix>-<agent>-canary`` (as the Helm chart names them).

The client is synchronous; every call runs in a worker thread.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from typing import Any

from kubernetes import client, config
from kubernetes.client.exceptions import ApiException

from .errors import ClusterError, NoCanary

log = logging.getLogger(__name__)
MERGE_PATCH = "application/merge-patch+json"
TRACK_ENV = "SWITCHBOARD_TRACK"


@dataclass(frozen=True)
class DeploymentStatus:
    name: str
    replicas: int
    """Desired (spec.replicas)."""
    ready: int
    updated: int
    available: int
    image: str
    rolled_out: bool
    """The controller has seen the latest spec and every desired replica is updated and available."""

    def line(self) -> str:
        state = "rolled out" if self.rolled_out else "rolling out"
        return f"{self.name}: {self.ready}/{self.replicas} ready, {self.updated} updated, image {self.image} ({state})"


def api_client(kubeconfig: str | None = None, context: str | None = None) -> client.ApiClient:
    """A client from a kubeconfig file, else the pod's service account, else the default kubeconfig."""
    configuration = client.Configuration()
    where = kubeconfig or "the pod's service account, then ~/.kube/config"
    try:
        if kubeconfig:
            load = config.load_kube_config  # unannotated upstream
            load(config_file=kubeconfig, context=context, client_configuration=configuration)  # type: ignore[no-untyped-call]
        else:
            try:
                config.load_incluster_config(client_configuration=configuration)  # type: ignore[no-untyped-call]
            except config.ConfigException:
                config.load_kube_config(context=context, client_configuration=configuration)  # type: ignore[no-untyped-call]
    except (config.ConfigException, OSError) as exc:
        raise ClusterError(f"--kube: no usable kubeconfig ({where}): {exc} (nothing was changed)") from None
    return client.ApiClient(configuration)


class Cluster:
    def __init__(self, api: client.ApiClient, namespace: str, prefix: str) -> None:
        self._apps = client.AppsV1Api(api)
        self.namespace = namespace
        self.prefix = prefix

    def stable_name(self, agent: str) -> str:
        return f"{self.prefix}-{agent}"

    def canary_name(self, agent: str) -> str:
        return f"{self.prefix}-{agent}-canary"

    async def _call(self, what: str, fn: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return await asyncio.to_thread(fn, *args, **kwargs)
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise ClusterError(f"Kubernetes API: {what}: HTTP {exc.status} {exc.reason}") from exc

    async def status(self, name: str) -> DeploymentStatus | None:
        d = await self._call(f"read deployment {name}", self._apps.read_namespaced_deployment, name, self.namespace)
        if d is None:
            return None
        spec_replicas = d.spec.replicas if d.spec.replicas is not None else 1
        st = d.status
        ready, updated, available = (st.ready_replicas or 0), (st.updated_replicas or 0), (st.available_replicas or 0)
        observed = (st.observed_generation or 0) >= (d.metadata.generation or 0)
        rolled_out = observed and updated >= spec_replicas and available >= spec_replicas and ready >= spec_replicas
        image = d.spec.template.spec.containers[0].image if d.spec.template.spec.containers else ""
        return DeploymentStatus(name, spec_replicas, ready, updated, available, image, rolled_out)

    async def canary(self, agent: str) -> DeploymentStatus:
        status = await self.status(self.canary_name(agent))
        if status is None:
            raise NoCanary(
                f"no canary Deployment {self.canary_name(agent)} in namespace {self.namespace}: set "
                f"agents[].canary.enabled for {agent} in the Helm values"
            )
        return status

    async def scale(self, name: str, replicas: int) -> None:
        await self._patch(self._apps.patch_namespaced_deployment_scale, name, {"spec": {"replicas": replicas}})
        log.info("scaled", extra={"deployment": name, "replicas": replicas})

    async def wait_rolled_out(self, name: str, timeout_s: float, poll_s: float = 1.0) -> DeploymentStatus:
        """Like ``kubectl rollout status``: wait until every desired replica is updated, available and ready."""
        deadline = time.monotonic() + timeout_s
        while True:
            status = await self.status(name)
            if status is None:
                raise ClusterError(f"no Deployment {name} in namespace {self.namespace}")
            if status.rolled_out:
                return status
            if time.monotonic() > deadline:
                raise ClusterError(f"{status.line()} after {timeout_s:.0f} s: its pods do not become ready")
            await asyncio.sleep(poll_s)  # ok-sleep: poll interval of the rollout status

    async def adopt_canary(self, agent: str) -> None:
        """Patch the stable Deployment's pod spec to the canary's (image, scenario, env; track stays stable)."""
        canary = await self._call(
            "read canary", self._apps.read_namespaced_deployment, self.canary_name(agent), self.namespace
        )
        if canary is None:
            raise NoCanary(f"no canary Deployment {self.canary_name(agent)}")
        pod = self._apps.api_client.sanitize_for_serialization(canary.spec.template.spec)
        for container in pod.get("containers", []):
            container["env"] = [
                {"name": TRACK_ENV, "value": "stable"} if e.get("name") == TRACK_ENV else e
                for e in container.get("env", [])
            ]
        body = {"spec": {"template": {"spec": {"containers": pod["containers"], "volumes": pod.get("volumes", [])}}}}
        await self._patch(self._apps.patch_namespaced_deployment, self.stable_name(agent), body)

    async def _patch(self, method: Any, name: str, body: dict[str, Any]) -> None:
        """A JSON merge patch (RFC 7386) of a Deployment or its scale subresource."""
        done = await self._call(f"patch {name}", method, name, self.namespace, body, _content_type=MERGE_PATCH)
        if done is None:
            raise ClusterError(f"no Deployment {name} in namespace {self.namespace}")
