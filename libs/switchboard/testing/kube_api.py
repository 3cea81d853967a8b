"""A scripted Kubernetes API server: the apps/v1 Deployment endpoints a rollout uses, in the real JSON.

Serves ``GET``/``PATCH /apis/apps/v1/namespaces/{ns}/deployments/{name}`` and the ``/scale`` subresource
(JSON merge patch, RFC 7386), so the official ``kubernetes`` client's real code path runs against it.
A Deployment "rolls out" when it is read: its status follows its spec at once, unless the test scripts
its pods as never ready (``never_ready``: a canary whose configuration does not load). Every request is
recorded in ``requests``. ``kubeconfig()`` writes a kubeconfig file pointing at the server.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from ..local.asgi_server import InProcessServer

Obj = dict[str, Any]
MERGE_PATCH = "application/merge-patch+json"


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386: maps merge recursively, ``null`` deletes, anything else (lists too) replaces."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    out = copy.deepcopy(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            out.pop(key, None)
        else:
            out[key] = merge_patch(out.get(key), value)
    return out


def _status(code: int, reason: str, message: str) -> JSONResponse:
    body = {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure", "message": message,
            "reason": reason, "code": code}  # fmt: skip
    return JSONResponse(body, status_code=code)


class ScriptedKubeAPI(InProcessServer):
    def __init__(self, *, namespace: str = "default") -> None:
        self.namespace = namespace
        self.deployments: dict[str, Obj] = {}
        self.never_ready: set[str] = set()
        self.requests: list[tuple[str, str, Any]] = []
        super().__init__(self._app())

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def add_deployment(self, manifest: Obj) -> None:
        """A Deployment as the chart renders it (spec only); metadata and status are filled in."""
        obj = copy.deepcopy(manifest)
        obj.setdefault("apiVersion", "apps/v1")
        obj.setdefault("kind", "Deployment")
        meta = obj.setdefault("metadata", {})
        meta.setdefault("namespace", self.namespace)
        meta.update({"generation": 1, "uid": f"uid-{meta['name']}", "resourceVersion": "1"})
        self.deployments[meta["name"]] = obj

    def kubeconfig(self, path: Path) -> Path:
        config = {
            "apiVersion": "v1", "kind": "Config", "current-context": "scripted",
            "clusters": [{"name": "scripted", "cluster": {"server": self.url}}],
            "users": [{"name": "operator", "user": {"token": "scripted-token"}}],
            "contexts": [{"name": "scripted", "context": {"cluster": "scripted", "user": "operator",
                                                          "namespace": self.namespace}}],
        }  # fmt: skip
        path.write_text(json.dumps(config))
        return path

    def replicas(self, name: str) -> int:
        return int(self.deployments[name]["spec"].get("replicas", 1))

    def _observed(self, obj: Obj) -> Obj:
        """The object with the status a controller would have reported by now."""
        name, spec = obj["metadata"]["name"], obj["spec"]
        want = int(spec.get("replicas", 1))
        ready = 0 if name in self.never_ready else want
        obj["status"] = {
            "observedGeneration": obj["metadata"]["generation"], "replicas": want, "updatedReplicas": want,
            "readyReplicas": ready, "availableReplicas": ready, "unavailableReplicas": want - ready,
        }  # fmt: skip
        return obj

    def _scale(self, obj: Obj) -> Obj:
        labels = obj["spec"]["selector"]["matchLabels"]
        return {
            "apiVersion": "autoscaling/v1", "kind": "Scale",
            "metadata": {"name": obj["metadata"]["name"], "namespace": self.namespace,
                         "resourceVersion": obj["metadata"]["resourceVersion"]},
            "spec": {"replicas": int(obj["spec"].get("replicas", 1))},
            "status": {"replicas": obj["status"]["replicas"],
                       "selector": ",".join(f"{k}={v}" for k, v in sorted(labels.items()))},
        }  # fmt: skip

    def _app(self) -> FastAPI:
        app = FastAPI()
        base = "/apis/apps/v1/namespaces/{namespace}/deployments/{name}"

        def find(namespace: str, name: str) -> Obj | JSONResponse:
            obj = self.deployments.get(name) if namespace == self.namespace else None
            if obj is None:
                return _status(404, "NotFound", f'deployments.apps "{name}" not found')
            return self._observed(obj)

        async def patched(request: Request, namespace: str, name: str) -> Obj | JSONResponse:
            if request.headers.get("content-type", "").split(";")[0] != MERGE_PATCH:
                return _status(415, "UnsupportedMediaType", "this server only takes merge patches")
            body = await request.json()
            self.requests.append(("PATCH", str(request.url.path), body))
            found = find(namespace, name)
            if isinstance(found, JSONResponse):
                return found
            before = copy.deepcopy(found["spec"])
            updated = merge_patch(found, body)
            meta = updated["metadata"]
            meta["resourceVersion"] = str(int(meta["resourceVersion"]) + 1)
            if updated["spec"].get("template") != before.get("template"):
                meta["generation"] += 1
            self.deployments[name] = updated
            return self._observed(updated)

        @app.get(base)
        async def read(namespace: str, name: str, request: Request) -> Any:
            self.requests.append(("GET", str(request.url.path), None))
            return find(namespace, name)

        @app.patch(base)
        async def patch(namespace: str, name: str, request: Request) -> Any:
            return await patched(request, namespace, name)

        @app.get(base + "/scale")
        async def read_scale(namespace: str, name: str, request: Request) -> Any:
            self.requests.append(("GET", str(request.url.path), None))
            found = find(namespace, name)
            return found if isinstance(found, JSONResponse) else self._scale(found)

        @app.patch(base + "/scale")
        async def patch_scale(namespace: str, name: str, request: Request) -> Any:
            body = await request.json()
            if set(body) - {"spec", "metadata"} or set(body.get("spec", {})) - {"replicas"}:
                return _status(422, "Invalid", "a Scale patch may only set spec.replicas")
            request_body = {"spec": {"replicas": body["spec"]["replicas"]}} if "spec" in body else {}
            self.requests.append(("PATCH", str(request.url.path), request_body))
            found = find(namespace, name)
            if isinstance(found, JSONResponse):
                return found
            found["spec"] = merge_patch(found["spec"], request_body.get("spec", {}))
            return self._scale(self._observed(found))

        return app
