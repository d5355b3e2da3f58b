"""A small Kubernetes API server stand-in on loopback (aiohttp) for testing the real client.

It serves the endpoints the KubernetesConnector calls: Deployments and their autoscaling/v1
scale subresource, the pod list with a label selector, and a DynamoGraphDeployment custom
object. Objects carry metadata.resourceVersion (one global counter bumped on every write,
status writes included, as etcd's revision is), generation and status.observedGeneration.
Errors are Kubernetes Status objects. A reconciler stands in for the Deployment and Dynamo
controllers: new pods are Pending for `ready_delay_s`, then Ready; removed pods terminate
for `terminate_delay_s`. Fault knobs: forbid a verb on a resource, fail the next N
requests, delay responses, conflict on the next writes, change replicas behind the back.

It is not a real API server: no admission, no authentication, no watch, no field
validation beyond what the tests need; docs/kubernetes.md lists the differences.
"""

from __future__ import annotations

import asyncio
import copy
import functools
import itertools
import json
import re
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime

from aiohttp import web

DGD_GROUP = "nvidia.com"
DGD_VERSION = "v1alpha1"
DGD_PLURAL = "dynamographdeployments"
SERVICE_ACCOUNT = "system:serviceaccount:{ns}:planlab-planner"


def _now_rfc3339() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def merge_patch(target: object, patch: object) -> object:
    """RFC 7386 JSON merge patch (null deletes a key)."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


def json_patch(target: dict, ops: list) -> dict:
    """RFC 6902 JSON patch, the add/replace/remove/test operations on object paths."""
    doc = copy.deepcopy(target)
    for op in ops:
        parts = [p.replace("~1", "/").replace("~0", "~") for p in op["path"].split("/")[1:]]
        parent = doc
        for part in parts[:-1]:
            parent = parent[part]
        last = parts[-1]
        kind = op["op"]
        if kind in ("add", "replace"):
            if kind == "replace" and last not in parent:
                raise KeyError(op["path"])
            parent[last] = op["value"]
        elif kind == "remove":
            del parent[last]
        elif kind == "test":
            if parent.get(last) != op["value"]:
                raise ValueError(f"test failed at {op['path']}")
        else:
            raise ValueError(f"unsupported op {kind}")
    return doc


class _Reject(Exception):
    """An error answered with a Kubernetes Status body."""

    def __init__(self, code: int, reason: str, message: str, details: dict | None = None):
        super().__init__(message)
        self.code = code
        self.reason = reason
        self.message = message
        self.details = details or {}

    def body(self) -> dict:
        return {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "details": self.details,
            "code": self.code,
        }


@dataclass
class _Pod:
    name: str
    labels: dict[str, str]
    created_at: float
    created_rfc3339: str
    ready_at: float | None  # None: stays Pending
    deleting_since: str | None = None
    gone_at: float | None = None

    def ready(self, now: float) -> bool:
        return self.deleting_since is None and self.ready_at is not None and now >= self.ready_at


@dataclass
class _Workload:
    """The pods of one Deployment or one DGD service, reconciled toward `replicas`."""

    labels: dict[str, str]
    pods: list[_Pod] = field(default_factory=list)


@dataclass
class Request:
    method: str
    path: str
    content_type: str | None
    body: object


class KubeStandin:
    """The in-memory API state, the fault knobs and the HTTP handlers.

    Use `serve()` (a context manager) to run it on 127.0.0.1 in a background thread.
    All knobs may be set from the test's thread; they are guarded by one lock.
    """

    def __init__(
        self,
        *,
        ready_delay_s: float | None = 0.2,
        terminate_delay_s: float = 0.1,
        clock=time.monotonic,
    ):
        self.ready_delay_s = ready_delay_s
        self.terminate_delay_s = terminate_delay_s
        self.clock = clock
        self.lock = threading.RLock()
        self._rv = itertools.count(1000)
        self._pod_ids = itertools.count(1)
        self.deployments: dict[tuple[str, str], dict] = {}
        self.dgds: dict[tuple[str, str], dict] = {}
        self.workloads: dict[tuple, _Workload] = {}
        self.requests: list[Request] = []
        # Fault knobs.
        self.forbidden: set[tuple[str, str]] = (
            set()
        )  # (verb, resource) e.g. ("update", "deployments/scale")
        self.fail_next_n = 0
        self.fail_status = 500
        self.delay_s = 0.0
        self.conflict_next_writes = 0
        self.url = ""

    # ------------------------------------------------------------------ objects

    def _next_rv(self) -> str:
        return str(next(self._rv))

    def add_deployment(
        self, namespace: str, name: str, replicas: int = 1, ready: bool = True
    ) -> dict:
        """A Deployment whose pods (labelled app=<name>) start Ready when `ready`."""
        labels = {"app": name}
        dep = {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {
                "name": name,
                "namespace": namespace,
                "uid": str(uuid.uuid4()),
                "resourceVersion": self._next_rv(),
                "generation": 1,
                "creationTimestamp": _now_rfc3339(),
                "labels": dict(labels),
            },
            "spec": {
                "replicas": replicas,
                "selector": {"matchLabels": dict(labels)},
                "template": {
                    "metadata": {"labels": dict(labels)},
                    "spec": {"containers": [{"name": "engine", "image": "engine:latest"}]},
                },
            },
            "status": {},
        }
        with self.lock:
            self.deployments[(namespace, name)] = dep
            work = self.workloads[("deploy", namespace, name)] = _Workload(labels)
            for _ in range(replicas):
                self._add_pod(namespace, work, already_ready=ready)
            self._reconcile_all()
        return dep

    def add_dgd(
        self, namespace: str, name: str, services: dict[str, int], ready: bool = True
    ) -> dict:
        """A DynamoGraphDeployment with the given services and their replica counts."""
        dgd = {
            "apiVersion": f"{DGD_GROUP}/{DGD_VERSION}",
            "kind": "DynamoGraphDeployment",
            "metadata": {
                "name": name,
                "namespace": namespace,
                "uid": str(uuid.uuid4()),
                "resourceVersion": self._next_rv(),
                "generation": 1,
                "creationTimestamp": _now_rfc3339(),
            },
            "spec": {
                "backendFramework": "vllm",
                "services": {
                    svc: {"componentType": "worker", "replicas": n} for svc, n in services.items()
                },
            },
            "status": {"state": "pending", "services": {}},
        }
        with self.lock:
            self.dgds[(namespace, name)] = dgd
            for svc, n in services.items():
                labels = {
                    "nvidia.com/dynamo-graph-deployment-name": name,
                    "nvidia.com/dynamo-component": svc,
                }
                work = self.workloads[("dgd", namespace, name, svc)] = _Workload(labels)
                for _ in range(n):
                    self._add_pod(namespace, work, already_ready=ready)
            self._reconcile_all()
        return dgd

    def set_replicas(
        self, namespace: str, name: str, replicas: int, service: str | None = None
    ) -> None:
        """Someone else (kubectl, a GitOps sync) changes spec.replicas behind the planner's back."""
        with self.lock:
            if service is None:
                obj = self.deployments[(namespace, name)]
                obj["spec"]["replicas"] = replicas
            else:
                obj = self.dgds[(namespace, name)]
                obj["spec"]["services"][service]["replicas"] = replicas
            self._bump(obj, spec_changed=True)
            self._reconcile_all()

    def replicas(self, namespace: str, name: str, service: str | None = None) -> int:
        with self.lock:
            if service is None:
                return self.deployments[(namespace, name)]["spec"]["replicas"]
            return self.dgds[(namespace, name)]["spec"]["services"][service]["replicas"]

    def writes(self) -> list[Request]:
        with self.lock:
            return [r for r in self.requests if r.method in ("PUT", "PATCH", "POST", "DELETE")]

    # --------------------------------------------------------------- reconciler

    def _add_pod(self, namespace: str, work: _Workload, already_ready: bool = False) -> None:
        now = self.clock()
        if already_ready:
            ready_at: float | None = now
        else:
            ready_at = None if self.ready_delay_s is None else now + self.ready_delay_s
        base = "-".join(work.labels.values())
        work.pods.append(
            _Pod(
                name=f"{base}-{next(self._pod_ids):05d}",
                labels=dict(work.labels),
                created_at=now,
                created_rfc3339=_now_rfc3339(),
                ready_at=ready_at,
            )
        )

    def _reconcile_workload(self, namespace: str, work: _Workload, desired: int) -> dict:
        now = self.clock()
        work.pods = [p for p in work.pods if p.gone_at is None or now < p.gone_at]
        live = [p for p in work.pods if p.deleting_since is None]
        for _ in range(desired - len(live)):
            self._add_pod(namespace, work)
        if len(live) > desired:
            # Like the ReplicaSet controller: delete not-ready pods first, then the youngest.
            victims = sorted(live, key=lambda p: (p.ready(now), -p.created_at))[
                : len(live) - desired
            ]
            for pod in victims:
                pod.deleting_since = _now_rfc3339()
                pod.gone_at = now + self.terminate_delay_s
        live = [p for p in work.pods if p.deleting_since is None]
        ready = sum(p.ready(now) for p in live)
        return {
            "replicas": len(live),
            "updatedReplicas": len(live),
            "readyReplicas": ready,
            "availableReplicas": ready,
        }

    def _reconcile_all(self) -> None:
        for (ns, name), dep in self.deployments.items():
            counts = self._reconcile_workload(
                ns, self.workloads[("deploy", ns, name)], dep["spec"]["replicas"]
            )
            status = {
                "observedGeneration": dep["metadata"]["generation"],
                **counts,
                "unavailableReplicas": max(
                    0, dep["spec"]["replicas"] - counts["availableReplicas"]
                ),
            }
            # The real status omits zero counts (omitempty).
            status = {k: v for k, v in status.items() if v}
            if status != dep["status"]:
                dep["status"] = status
                dep["metadata"]["resourceVersion"] = self._next_rv()
        for (ns, name), dgd in self.dgds.items():
            services = {}
            all_ready = True
            for svc, spec in dgd["spec"]["services"].items():
                work = self.workloads.get(("dgd", ns, name, svc))
                if work is None:
                    continue
                counts = self._reconcile_workload(ns, work, spec.get("replicas", 1))
                all_ready &= counts["readyReplicas"] == spec.get("replicas", 1)
                services[svc] = {
                    "componentKind": "Deployment",
                    "componentName": f"{name}-{svc}",
                    **counts,
                }
            status = {
                "observedGeneration": dgd["metadata"]["generation"],
                "state": "successful" if all_ready else "pending",
                "services": services,
            }
            if status != dgd["status"]:
                dgd["status"] = status
                dgd["metadata"]["resourceVersion"] = self._next_rv()

    def _bump(self, obj: dict, spec_changed: bool) -> None:
        obj["metadata"]["resourceVersion"] = self._next_rv()
        if spec_changed:
            obj["metadata"]["generation"] += 1

    # ------------------------------------------------------------------- checks

    def _check_faults(
        self, verb: str, resource: str, group: str, namespace: str, name: str
    ) -> None:
        if self.fail_next_n > 0:
            self.fail_next_n -= 1
            raise _Reject(
                self.fail_status,
                "InternalError" if self.fail_status == 500 else "ServiceUnavailable",
                "Internal error occurred: injected fault",
                {"causes": [{"message": "injected fault"}]},
            )
        if (verb, resource) in self.forbidden:
            group_text = f' in API group "{group}"' if group else ' in API group ""'
            base = resource.split("/")[0]
            qualified = f"{base}.{group}" if group else base
            target = f'{qualified} "{name}"' if name else qualified
            raise _Reject(
                403,
                "Forbidden",
                f'{target} is forbidden: User "{SERVICE_ACCOUNT.format(ns=namespace)}" cannot {verb} '
                f'resource "{resource}"{group_text} in the namespace "{namespace}"',
                {"name": name, "group": group, "kind": base},
            )

    def _not_found(self, resource: str, group: str, name: str) -> _Reject:
        qualified = f"{resource}.{group}" if group else resource
        return _Reject(
            404,
            "NotFound",
            f'{qualified} "{name}" not found',
            {"name": name, "group": group, "kind": resource},
        )

    def _conflict(self, resource: str, group: str, name: str) -> _Reject:
        qualified = f"{resource}.{group}" if group else resource
        return _Reject(
            409,
            "Conflict",
            f'Operation cannot be fulfilled on {qualified} "{name}": the object has been modified; '
            "please apply your changes to the latest version and try again",
            {"name": name, "group": group, "kind": resource},
        )

    def _precondition(
        self, obj: dict, body_rv: str | None, resource: str, group: str, name: str
    ) -> None:
        if self.conflict_next_writes > 0:
            self.conflict_next_writes -= 1
            # Another writer got in first: the object moves on, the caller's copy is stale.
            self._bump(obj, spec_changed=False)
            raise self._conflict(resource, group, name)
        if body_rv is not None and body_rv != obj["metadata"]["resourceVersion"]:
            raise self._conflict(resource, group, name)

    @staticmethod
    def _apply_patch(obj: dict, content_type: str, patch: object) -> dict:
        if content_type == "application/json-patch+json":
            if not isinstance(patch, list):
                raise _Reject(400, "BadRequest", "json patch must be a list of operations")
            try:
                return json_patch(obj, patch)
            except (KeyError, ValueError, TypeError) as exc:
                raise _Reject(
                    422, "Invalid", f"the json patch could not be applied: {exc}"
                ) from exc
        if content_type in (
            "application/merge-patch+json",
            "application/strategic-merge-patch+json",
        ):
            if not isinstance(patch, dict):
                raise _Reject(400, "BadRequest", "a merge patch must be a JSON object")
            # Strategic merge equals merge patch for the scalar and map fields touched here.
            return merge_patch(obj, patch)
        raise _Reject(
            415,
            "UnsupportedMediaType",
            f"the body of the request was in an unknown format - accepted media types include: application/json-patch+json, application/merge-patch+json, application/strategic-merge-patch+json (got {content_type})",
        )

    # ------------------------------------------------------------------ handlers

    def _scale_of(self, dep: dict) -> dict:
        meta = dep["metadata"]
        sel = ",".join(f"{k}={v}" for k, v in dep["spec"]["selector"]["matchLabels"].items())
        return {
            "kind": "Scale",
            "apiVersion": "autoscaling/v1",
            "metadata": {
                "name": meta["name"],
                "namespace": meta["namespace"],
                "uid": meta["uid"],
                "resourceVersion": meta["resourceVersion"],
                "creationTimestamp": meta["creationTimestamp"],
            },
            "spec": {"replicas": dep["spec"]["replicas"]},
            "status": {"replicas": dep["status"].get("replicas", 0), "selector": sel},
        }

    def _deployment(
        self, request: web.Request, method: str, body: object, subresource: str | None
    ) -> dict:
        ns, name = request.match_info["ns"], request.match_info["name"]
        resource = "deployments/scale" if subresource else "deployments"
        verb = {"GET": "get", "PUT": "update", "PATCH": "patch"}[method]
        self._check_faults(verb, resource, "apps", ns, name)
        dep = self.deployments.get((ns, name))
        if dep is None:
            raise self._not_found("deployments", "apps", name)
        ctype = request.content_type
        if method == "GET":
            return self._scale_of(dep) if subresource else copy.deepcopy(dep)
        if not isinstance(body, (dict, list)):
            raise _Reject(400, "BadRequest", "the request body is not JSON")
        if subresource:
            if method == "PUT":
                body_rv = body.get("metadata", {}).get("resourceVersion")
                new_replicas = body.get("spec", {}).get("replicas")
            else:
                patched = self._apply_patch(self._scale_of(dep), ctype, body)
                body_rv = (
                    patched["metadata"].get("resourceVersion")
                    if isinstance(body, dict) and "resourceVersion" in body.get("metadata", {})
                    else None
                )
                new_replicas = patched.get("spec", {}).get("replicas")
            if not isinstance(new_replicas, int) or new_replicas < 0:
                raise _Reject(
                    422,
                    "Invalid",
                    f'Scale.autoscaling "{name}" is invalid: spec.replicas: Invalid value: {new_replicas!r}: must be greater than or equal to 0',
                    {"name": name, "group": "autoscaling", "kind": "Scale"},
                )
            self._precondition(dep, body_rv, "deployments", "apps", name)
            changed = new_replicas != dep["spec"]["replicas"]
            dep["spec"]["replicas"] = new_replicas
            self._bump(dep, spec_changed=changed)
            self._reconcile_all()
            return self._scale_of(dep)
        if method == "PUT":
            body_rv = body.get("metadata", {}).get("resourceVersion")
            new_spec = body.get("spec")
        else:
            patched = self._apply_patch(dep, ctype, body)
            body_rv = (
                body.get("metadata", {}).get("resourceVersion") if isinstance(body, dict) else None
            )
            new_spec = patched.get("spec")
        if not isinstance(new_spec, dict) or not isinstance(new_spec.get("replicas", 1), int):
            raise _Reject(422, "Invalid", f'Deployment.apps "{name}" is invalid: spec')
        self._precondition(dep, body_rv, "deployments", "apps", name)
        changed = new_spec != dep["spec"]
        dep["spec"] = copy.deepcopy(new_spec)
        self._bump(dep, spec_changed=changed)
        self._reconcile_all()
        return copy.deepcopy(dep)

    def _dgd(self, request: web.Request, method: str, body: object) -> dict:
        ns, name = request.match_info["ns"], request.match_info["name"]
        verb = {"GET": "get", "PUT": "update", "PATCH": "patch"}[method]
        self._check_faults(verb, DGD_PLURAL, DGD_GROUP, ns, name)
        dgd = self.dgds.get((ns, name))
        if dgd is None:
            raise self._not_found(DGD_PLURAL, DGD_GROUP, name)
        if method == "GET":
            return copy.deepcopy(dgd)
        if method == "PATCH" and request.content_type == "application/strategic-merge-patch+json":
            # As a real server answers for custom resources.
            raise _Reject(
                415,
                "UnsupportedMediaType",
                "strategic merge patch is not supported for custom resources",
            )
        if not isinstance(body, (dict, list)):
            raise _Reject(400, "BadRequest", "the request body is not JSON")
        if method == "PUT":
            body_rv = body.get("metadata", {}).get("resourceVersion")
            new_spec = body.get("spec")
        else:
            patched = self._apply_patch(dgd, request.content_type, body)
            body_rv = (
                body.get("metadata", {}).get("resourceVersion") if isinstance(body, dict) else None
            )
            new_spec = patched.get("spec")
        for svc, spec in (new_spec or {}).get("services", {}).items():
            reps = spec.get("replicas", 1)
            if not isinstance(reps, int) or reps < 0:
                raise _Reject(
                    422,
                    "Invalid",
                    f'DynamoGraphDeployment.nvidia.com "{name}" is invalid: spec.services.{svc}.replicas: Invalid value: {reps!r}: should be greater than or equal to 0',
                )
        self._precondition(dgd, body_rv, DGD_PLURAL, DGD_GROUP, name)
        changed = new_spec != dgd["spec"]
        dgd["spec"] = copy.deepcopy(new_spec)
        self._bump(dgd, spec_changed=changed)
        self._reconcile_all()
        return copy.deepcopy(dgd)

    def _pods(self, request: web.Request) -> dict:
        ns = request.match_info["ns"]
        verb = "watch" if request.query.get("watch") in ("true", "1") else "list"
        self._check_faults(verb, "pods", "", ns, "")
        if verb == "watch":
            raise _Reject(405, "MethodNotAllowed", "watch is not implemented by the stand-in")
        selector = parse_label_selector(request.query.get("labelSelector", ""))
        now = self.clock()
        items = []
        for key, work in self.workloads.items():
            if key[1] != ns:
                continue
            for pod in work.pods:
                if pod.gone_at is not None and now >= pod.gone_at:
                    continue
                if all(match(pod.labels) for match in selector):
                    items.append(self._pod_json(ns, pod, now))
        return {
            "kind": "PodList",
            "apiVersion": "v1",
            "metadata": {"resourceVersion": str(next(self._rv))},
            "items": items,
        }

    @staticmethod
    def _pod_json(ns: str, pod: _Pod, now: float) -> dict:
        ready = pod.ready(now)
        meta = {
            "name": pod.name,
            "namespace": ns,
            "labels": pod.labels,
            "creationTimestamp": pod.created_rfc3339,
            "uid": pod.name,
        }
        if pod.deleting_since:
            meta["deletionTimestamp"] = pod.deleting_since
            meta["deletionGracePeriodSeconds"] = 30
        status = {
            "phase": "Running" if ready or pod.deleting_since else "Pending",
            "conditions": [{"type": "Ready", "status": "True" if ready else "False"}],
        }
        return {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": meta,
            "spec": {"containers": [{"name": "engine", "image": "engine:latest"}]},
            "status": status,
        }

    async def _handle(self, route: str, request: web.Request) -> web.Response:
        raw = await request.read()
        body: object = None
        if raw:
            try:
                body = json.loads(raw)
            except ValueError:
                body = raw.decode("utf-8", "replace")
        with self.lock:
            self.requests.append(
                Request(request.method, request.path_qs, request.headers.get("Content-Type"), body)
            )
            delay = self.delay_s
        if delay:
            await asyncio.sleep(delay)
        with self.lock:
            try:
                self._reconcile_all()
                if route == "deployment":
                    out = self._deployment(request, request.method, body, None)
                elif route == "scale":
                    out = self._deployment(request, request.method, body, "scale")
                elif route == "dgd":
                    out = self._dgd(request, request.method, body)
                else:
                    out = self._pods(request)
            except _Reject as rej:
                return web.json_response(rej.body(), status=rej.code)
        return web.json_response(out)

    def app(self) -> web.Application:
        app = web.Application()
        paths = {
            "deployment": "/apis/apps/v1/namespaces/{ns}/deployments/{name}",
            "scale": "/apis/apps/v1/namespaces/{ns}/deployments/{name}/scale",
            "dgd": f"/apis/{DGD_GROUP}/{DGD_VERSION}/namespaces/{{ns}}/{DGD_PLURAL}/{{name}}",
        }
        for route, path in paths.items():
            handler = functools.partial(self._handle, route)
            for method in ("GET", "PUT", "PATCH"):
                app.router.add_route(method, path, handler)
        app.router.add_route(
            "GET", "/api/v1/namespaces/{ns}/pods", functools.partial(self._handle, "pods")
        )
        return app

    @contextmanager
    def serve(self) -> Iterator[KubeStandin]:
        """Run on 127.0.0.1 at a free port in a background thread; `self.url` is its address."""
        loop = asyncio.new_event_loop()
        started = threading.Event()
        holder: dict = {}

        async def start() -> None:
            runner = web.AppRunner(self.app(), access_log=None, shutdown_timeout=0.1)
            await runner.setup()
            site = web.TCPSite(runner, "127.0.0.1", 0)
            await site.start()
            holder["runner"] = runner
            port = site._server.sockets[0].getsockname()[1]  # the port the OS picked
            self.url = f"http://127.0.0.1:{port}"

        def run() -> None:
            asyncio.set_event_loop(loop)
            try:
                loop.run_until_complete(start())
            except BaseException as exc:  # surfaced to the caller below
                holder["error"] = exc
            started.set()
            if "error" not in holder:
                loop.run_forever()

        thread = threading.Thread(target=run, name="kube-standin", daemon=True)
        thread.start()
        started.wait(10)
        if "error" in holder:
            raise holder["error"]
        try:
            yield self
        finally:
            asyncio.run_coroutine_threadsafe(holder["runner"].cleanup(), loop).result(5)
            loop.call_soon_threadsafe(loop.stop)
            thread.join(5)
            loop.close()


_SET_RE = re.compile(r"^\s*([^\s!=]+)\s+(in|notin)\s+\(([^)]*)\)\s*$")


def parse_label_selector(text: str) -> list:
    """Equality (=, ==, !=), set (in, notin) and existence requirements, comma-separated."""
    reqs = []
    # Commas inside "in (a,b)" are not separators.
    parts = re.split(r",(?![^()]*\))", text) if text else []
    for part in parts:
        part = part.strip()
        if not part:
            continue
        m = _SET_RE.match(part)
        if m:
            key, op, values = m.group(1), m.group(2), {v.strip() for v in m.group(3).split(",")}
            if op == "in":
                reqs.append(lambda labels, k=key, vs=values: labels.get(k) in vs)
            else:
                reqs.append(lambda labels, k=key, vs=values: labels.get(k) not in vs)
        elif "!=" in part:
            key, value = (s.strip() for s in part.split("!=", 1))
            reqs.append(lambda labels, k=key, v=value: labels.get(k) != v)
        elif "=" in part:
            key, value = (s.strip() for s in part.replace("==", "=").split("=", 1))
            reqs.append(lambda labels, k=key, v=value: labels.get(k) == v)
        elif part.startswith("!"):
            absent = part[1:].strip()
            reqs.append(lambda labels, k=absent: k not in labels)
        else:
            reqs.append(lambda labels, k=part: k in labels)
    return reqs
