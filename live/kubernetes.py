"""The Kubernetes Connector: reads and scales prefill/decode replicas through the official client.

Two modes. `deployment` (default): two Deployments, read with GET deployments, scaled with
GET + PUT on their `scale` subresource carrying the resourceVersion read (optimistic
concurrency, as the HorizontalPodAutoscaler does), pods listed by the Deployment's selector
to count Pending and terminating ones. `dgd`: one Dynamo DynamoGraphDeployment custom object
(nvidia.com/v1alpha1 dynamographdeployments), read with GET and scaled with a JSON merge
patch of `spec.services.<name>.replicas` that also carries metadata.resourceVersion, so a
stale write is refused with 409 instead of silently overwriting someone else's change.

Level-triggered: every `scale()` reads the current count, compares it with what this
connector last asked for (a difference is someone else's change, reported once through
ReplicaState.external_change), and writes only when the count differs from the target.
A 409 is re-read and retried; 5xx, 429 and timeouts are retried with backoff and then
`scale()` returns False; 403 and 404 raise errors that name the missing RBAC rule or object.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

import urllib3
from kubernetes import client as k8s
from kubernetes import config as k8s_config
from kubernetes.config.config_exception import ConfigException

from planner.errors import ConfigError
from planner.types import ROLES, ReplicaState, RoleState
from scenario import parse_duration

log = logging.getLogger(__name__)

MODES = ("deployment", "dgd")
DGD_GROUP = "nvidia.com"
DGD_VERSION = "v1alpha1"
DGD_PLURAL = "dynamographdeployments"
STARTUP_HISTORY = 20  # startup samples kept per role

# The API calls this connector makes, as RBAC rules (verb, apiGroup, resource). deploy/role.yaml
# grants these; tests/live/test_deploy_manifests.py checks that it does.
RBAC_RULES = {
    "deployment": (
        ("get", "apps", "deployments"),
        ("get", "apps", "deployments/scale"),
        ("update", "apps", "deployments/scale"),
        ("list", "", "pods"),
    ),
    "dgd": (
        ("get", DGD_GROUP, DGD_PLURAL),
        ("patch", DGD_GROUP, DGD_PLURAL),
    ),
}


class KubernetesError(RuntimeError):
    """The API server could not be used (unreachable, too slow, or failing)."""


class KubernetesAccessError(ConfigError):
    """403 or 404: the planner's service account or configuration is wrong; retrying won't help."""


class _Conflict(Exception):
    """409: the object changed since it was read."""


class _Transient(Exception):
    """A failure worth retrying: 5xx, 429, a timeout or a broken connection."""


@dataclass(frozen=True)
class RoleObservation:
    """What one read of a role returned, kept for logs and tests."""

    desired: int
    ready: int
    available: int
    pending_pods: int | None  # None where pods are not listed (dgd mode)
    terminating_pods: int | None
    generation_current: bool  # status.observedGeneration has caught up with metadata.generation


def make_api_client(
    host: str | None = None,
    kubeconfig: str | None = None,
    context: str | None = None,
    bearer_token: str | None = None,
) -> k8s.ApiClient:
    """An ApiClient from an explicit host, else the in-cluster service account, else kubeconfig."""
    cfg = k8s.Configuration()
    if host:
        cfg.host = host
        if bearer_token:
            cfg.api_key = {"BearerToken": f"Bearer {bearer_token}"}
    elif kubeconfig:
        k8s_config.load_kube_config(
            config_file=kubeconfig, context=context, client_configuration=cfg
        )
    else:
        try:
            k8s_config.load_incluster_config(client_configuration=cfg)
        except ConfigException:
            try:
                k8s_config.load_kube_config(context=context, client_configuration=cfg)
            except (ConfigException, FileNotFoundError) as exc:
                raise ConfigError(
                    "no Kubernetes configuration: not running in a cluster and no kubeconfig "
                    f"found ({exc}); expected a service account, ~/.kube/config or kubernetes.host",
                    key="kubernetes",
                ) from exc
    # The connector retries with its own backoff; urllib3's silent retries would multiply timeouts.
    cfg.retries = 0
    return k8s.ApiClient(cfg)


SETTINGS_KEYS = (
    "namespace",
    "mode",
    "prefill_deployment",
    "decode_deployment",
    "dgd_name",
    "prefill_service",
    "decode_service",
    "startup_timeout",
    "request_timeout",
    "host",
    "kubeconfig",
    "context",
)


@dataclass(frozen=True)
class KubernetesSettings:
    """The `kubernetes:` section of a planner config file (`planlab planner --config`)."""

    namespace: str
    prefill_deployment: str
    decode_deployment: str
    mode: str = "deployment"
    dgd_name: str | None = None
    prefill_service: str | None = None
    decode_service: str | None = None
    startup_timeout_s: float = 600.0
    request_timeout_s: float = 10.0
    host: str | None = None
    kubeconfig: str | None = None
    context: str | None = None


def parse_kubernetes_settings(
    data: object, source: str, key: str = "kubernetes"
) -> KubernetesSettings:
    """Validate the `kubernetes:` mapping; errors name the file, the key path and what was expected."""
    if not isinstance(data, dict):
        raise ConfigError(f"got {data!r}; expected a mapping", source=source, key=key)
    for k in data:
        if k not in SETTINGS_KEYS:
            raise ConfigError(
                f"unknown key {k!r}; expected one of {', '.join(SETTINGS_KEYS)}",
                source=source,
                key=f"{key}.{k}",
            )

    def text(name: str, required: bool = False) -> str | None:
        value = data.get(name)
        if value is None and not required:
            return None
        if not isinstance(value, str) or not value.strip():
            raise ConfigError(
                f"got {value!r}; expected a non-empty string", source=source, key=f"{key}.{name}"
            )
        return value

    mode = data.get("mode", "deployment")
    if mode not in MODES:
        raise ConfigError(
            f"got {mode!r}; expected one of {', '.join(MODES)}", source=source, key=f"{key}.mode"
        )
    dgd = mode == "dgd"
    return KubernetesSettings(
        namespace=text("namespace", required=True),
        # In dgd mode the role names are the DGD's service names (prefill_service/decode_service).
        prefill_deployment=text("prefill_deployment", required=not dgd)
        or text("prefill_service", required=True),
        decode_deployment=text("decode_deployment", required=not dgd)
        or text("decode_service", required=True),
        mode=mode,
        dgd_name=text("dgd_name", required=dgd),
        prefill_service=text("prefill_service"),
        decode_service=text("decode_service"),
        startup_timeout_s=parse_duration(
            data.get("startup_timeout", 600.0), f"{key}.startup_timeout", source, positive=True
        ),
        request_timeout_s=parse_duration(
            data.get("request_timeout", 10.0), f"{key}.request_timeout", source, positive=True
        ),
        host=text("host"),
        kubeconfig=text("kubeconfig"),
        context=text("context"),
    )


@dataclass
class _RoleTrack:
    """Per-role bookkeeping between ticks (connector clock)."""

    name: str  # Deployment name, or DGD service name
    expected: int | None = None  # what the planner last asked for
    acknowledged: int | None = None  # an external value already reported
    # replica slot k (1-based) -> when it was asked for, for slots not yet ready
    slot_since: dict[int, float] | None = None
    # scale-ups waiting for ready: (requested_at, target count)
    waiting: list[tuple[float, int]] | None = None
    startup_s: tuple[float, ...] = ()

    def __post_init__(self) -> None:
        self.slot_since = {}
        self.waiting = []


class KubernetesConnector:
    """Connector (planner.ports) over the Kubernetes API; see the module docstring."""

    def __init__(
        self,
        namespace: str,
        prefill_deployment: str,
        decode_deployment: str,
        *,
        mode: str = "deployment",
        dgd_name: str | None = None,
        prefill_service: str | None = None,
        decode_service: str | None = None,
        api_client: k8s.ApiClient | None = None,
        startup_timeout_s: float = 600.0,
        clock: Callable[[], float] = time.monotonic,
        request_timeout_s: float = 10.0,
        attempts: int = 3,
        backoff_s: float = 0.5,
        sleep: Callable[[float], None] = time.sleep,
        dgd_version: str = DGD_VERSION,
    ):
        if mode not in MODES:
            raise ConfigError(
                f"mode {mode!r} is not one of {', '.join(MODES)}", key="kubernetes.mode"
            )
        if mode == "dgd" and not dgd_name:
            raise ConfigError(
                "mode 'dgd' needs the DynamoGraphDeployment's name", key="kubernetes.dgd_name"
            )
        if startup_timeout_s <= 0:
            raise ConfigError(
                f"startup timeout {startup_timeout_s!r} must be positive",
                key="kubernetes.startup_timeout",
            )
        self.namespace = namespace
        self.mode = mode
        self.dgd_name = dgd_name
        self.dgd_version = dgd_version
        self.startup_timeout_s = float(startup_timeout_s)
        self.clock = clock
        self.request_timeout_s = request_timeout_s
        self.attempts = max(1, attempts)
        self.backoff_s = backoff_s
        self.sleep = sleep
        self.api_client = api_client or make_api_client()
        self.apps = k8s.AppsV1Api(self.api_client)
        self.core = k8s.CoreV1Api(self.api_client)
        self.custom = k8s.CustomObjectsApi(self.api_client)
        if mode == "dgd":
            names = (prefill_service or prefill_deployment, decode_service or decode_deployment)
        else:
            names = (prefill_deployment, decode_deployment)
        self._tracks = {role: _RoleTrack(name) for role, name in zip(ROLES, names, strict=True)}
        self._external: list[str] = []
        self._last_state: ReplicaState | None = None
        self.last_observed: dict[str, RoleObservation] = {}
        self.last_error: str | None = None

    @classmethod
    def from_settings(cls, settings: KubernetesSettings, **kw) -> KubernetesConnector:
        """A connector for a parsed `kubernetes:` section; `kw` passes clock, sleep, api_client."""
        if "api_client" not in kw:
            kw["api_client"] = make_api_client(settings.host, settings.kubeconfig, settings.context)
        return cls(
            settings.namespace,
            settings.prefill_deployment,
            settings.decode_deployment,
            mode=settings.mode,
            dgd_name=settings.dgd_name,
            prefill_service=settings.prefill_service,
            decode_service=settings.decode_service,
            startup_timeout_s=settings.startup_timeout_s,
            request_timeout_s=settings.request_timeout_s,
            **kw,
        )

    # ------------------------------------------------------------------ port

    def state(self) -> ReplicaState:
        """Read both roles. When the API stays unreachable after the retries, the last state
        read is returned (logged, `last_error` set); with none yet, KubernetesError."""
        try:
            observed = self._with_retries("read replicas", self._read_all)
        except KubernetesError:
            if self._last_state is None:
                raise
            log.warning("kubernetes: using the last known replica state: %s", self.last_error)
            return self._last_state
        now = self.clock()
        roles = {}
        for role, obs in observed.items():
            track = self._tracks[role]
            self._note_external(role, obs.desired, during="read")
            roles[role] = self._role_state(track, obs, now)
        self.last_observed = observed
        notes = self._external
        self._external = []
        state = ReplicaState(
            prefill=roles["prefill"],
            decode=roles["decode"],
            external_change="; ".join(notes) if notes else None,
        )
        self._last_state = state
        return state

    def scale(self, prefill: int, decode: int) -> bool:
        """Ask for these counts; True when both are in place. Never raises for a failing or
        slow server (returns False); raises KubernetesAccessError on 403/404."""
        ok = True
        for role, target in (("prefill", prefill), ("decode", decode)):
            if target < 0:
                raise ValueError(f"{role} replicas must be >= 0, got {target}")
            try:
                self._with_retries(f"scale {role}", lambda r=role, t=target: self._scale_role(r, t))
            except KubernetesError as exc:
                log.warning("kubernetes: %s replicas not applied: %s", role, exc)
                ok = False
        return ok

    # --------------------------------------------------------------- reading

    def _get_dgd(self) -> dict:
        return self._call(
            "get",
            DGD_GROUP,
            DGD_PLURAL,
            self.dgd_name,
            lambda: self.custom.get_namespaced_custom_object(
                DGD_GROUP,
                self.dgd_version,
                self.namespace,
                DGD_PLURAL,
                self.dgd_name,
                _request_timeout=self.request_timeout_s,
            ),
        )

    def _read_all(self) -> dict[str, RoleObservation]:
        if self.mode == "dgd":
            dgd = self._get_dgd()
            return {
                role: self._dgd_observation(dgd, track.name) for role, track in self._tracks.items()
            }
        return {role: self._read_deployment(track.name) for role, track in self._tracks.items()}

    def _read_deployment(self, name: str) -> RoleObservation:
        dep = self._call(
            "get",
            "apps",
            "deployments",
            name,
            lambda: self.apps.read_namespaced_deployment(
                name, self.namespace, _request_timeout=self.request_timeout_s
            ),
        )
        spec_replicas = dep.spec.replicas if dep.spec.replicas is not None else 1
        status = dep.status
        labels = (dep.spec.selector.match_labels or {}) if dep.spec.selector else {}
        selector = ",".join(f"{k}={v}" for k, v in sorted(labels.items()))
        pods = self._call(
            "list",
            "",
            "pods",
            None,
            lambda: self.core.list_namespaced_pod(
                self.namespace, label_selector=selector, _request_timeout=self.request_timeout_s
            ),
        )
        pending = terminating = 0
        for pod in pods.items:
            if pod.metadata.deletion_timestamp is not None:
                terminating += 1
            elif pod.status is not None and pod.status.phase == "Pending":
                pending += 1
        generation = dep.metadata.generation
        observed_gen = status.observed_generation if status else None
        return RoleObservation(
            desired=spec_replicas,
            ready=(status.ready_replicas or 0) if status else 0,
            available=(status.available_replicas or 0) if status else 0,
            pending_pods=pending,
            terminating_pods=terminating,
            generation_current=generation is None or (observed_gen or 0) >= generation,
        )

    def _dgd_observation(self, dgd: dict, service: str) -> RoleObservation:
        services = (dgd.get("spec") or {}).get("services") or {}
        if service not in services:
            raise KubernetesAccessError(
                f"DynamoGraphDeployment {self.dgd_name!r} in namespace {self.namespace!r} has no "
                f"service {service!r}; it has {', '.join(sorted(services)) or 'none'}",
                key="kubernetes.prefill_service"
                if service == self._tracks["prefill"].name
                else "kubernetes.decode_service",
            )
        desired = services[service].get("replicas")
        desired = 1 if desired is None else int(desired)
        status = (dgd.get("status") or {}).get("services", {}).get(service) or {}
        # readyReplicas is absent for PodCliqueScalingGroups; availableReplicas is the fallback.
        ready = status.get("readyReplicas")
        available = status.get("availableReplicas")
        if ready is None:
            ready = available or 0
        live = status.get("replicas")
        meta = dgd.get("metadata") or {}
        observed_gen = (dgd.get("status") or {}).get("observedGeneration")
        return RoleObservation(
            desired=desired,
            ready=int(ready),
            available=int(available if available is not None else ready),
            pending_pods=None,
            # Replicas beyond the desired count are on their way out.
            terminating_pods=max(0, int(live) - desired) if live is not None else None,
            generation_current=observed_gen is None or observed_gen >= meta.get("generation", 0),
        )

    def _role_state(self, track: _RoleTrack, obs: RoleObservation, now: float) -> RoleState:
        # Replica slots ready+1..desired are starting. A slot we never asked for (connector
        # start, an external change, a crashed pod) is timed from when we first saw it.
        for k in range(obs.ready + 1, obs.desired + 1):
            track.slot_since.setdefault(k, now)
        for k in [k for k in track.slot_since if k <= obs.ready or k > obs.desired]:
            del track.slot_since[k]
        still = []
        for requested_at, target in track.waiting:
            if target > obs.desired:
                continue  # scaled back below this request before it was met
            if obs.ready >= target:
                track.startup_s = (track.startup_s + (now - requested_at,))[-STARTUP_HISTORY:]
                log.info(
                    "kubernetes: %s reached %d ready replicas %.1f s after the request",
                    track.name,
                    target,
                    now - requested_at,
                )
            else:
                still.append((requested_at, target))
        track.waiting = still
        starting = max(0, obs.desired - obs.ready)
        if obs.pending_pods is not None:
            # A Pending surge pod of a rollout is starting too, even when ready == desired.
            starting = max(starting, min(obs.pending_pods, obs.desired))
        stuck = sum(
            1 for since in track.slot_since.values() if now - since > self.startup_timeout_s
        )
        if obs.terminating_pods is not None:
            draining = obs.terminating_pods
        else:
            draining = max(0, obs.ready - obs.desired)
        return RoleState(
            desired=obs.desired,
            ready=obs.ready,
            starting=starting,
            draining=draining,
            stuck=min(stuck, starting),
            startup_s=track.startup_s,
        )

    def _note_external(self, role: str, current: int, during: str) -> None:
        track = self._tracks[role]
        if track.expected is None or current == track.expected or current == track.acknowledged:
            return
        note = f"{role} replicas changed from {track.expected} to {current} outside the planner"
        log.warning("kubernetes: %s (seen on %s)", note, during)
        track.acknowledged = current
        self._external.append(note)

    # --------------------------------------------------------------- writing

    def _scale_role(self, role: str, target: int) -> None:
        track = self._tracks[role]
        for conflict in range(self.attempts):
            if self.mode == "dgd":
                obj = self._get_dgd()
                current = self._dgd_observation(obj, track.name).desired
                resource_version = obj["metadata"]["resourceVersion"]
            else:
                obj = self._call(
                    "get",
                    "apps",
                    "deployments/scale",
                    track.name,
                    lambda: self.apps.read_namespaced_deployment_scale(
                        track.name, self.namespace, _request_timeout=self.request_timeout_s
                    ),
                )
                current = obj.spec.replicas if obj.spec and obj.spec.replicas is not None else 0
                resource_version = obj.metadata.resource_version
            self._note_external(role, current, during=f"scale {role}")
            if current == target:
                self._accepted(track, current, target)
                return
            try:
                self._write(track.name, target, obj, resource_version)
            except _Conflict:
                log.info(
                    "kubernetes: conflict writing %s (attempt %d of %d); re-reading",
                    track.name,
                    conflict + 1,
                    self.attempts,
                )
                self.sleep(self.backoff_s * 0.1 * (conflict + 1))
                continue
            log.info("kubernetes: %s replicas %d -> %d", track.name, current, target)
            self._accepted(track, current, target)
            return
        raise KubernetesError(
            f"{track.name}: still conflicting after {self.attempts} attempts (someone else keeps writing it)"
        )

    def _accepted(self, track: _RoleTrack, current: int, target: int) -> None:
        if target > current:
            now = self.clock()
            track.waiting.append((now, target))
            for k in range(current + 1, target + 1):
                track.slot_since[k] = now
        track.expected = target
        track.acknowledged = None

    def _write(self, name: str, target: int, obj, resource_version: str) -> None:
        if self.mode == "dgd":
            body = {
                "metadata": {"resourceVersion": resource_version},
                "spec": {"services": {name: {"replicas": target}}},
            }
            self._call(
                "patch",
                DGD_GROUP,
                DGD_PLURAL,
                self.dgd_name,
                lambda: self.custom.patch_namespaced_custom_object(
                    DGD_GROUP,
                    self.dgd_version,
                    self.namespace,
                    DGD_PLURAL,
                    self.dgd_name,
                    body,
                    _request_timeout=self.request_timeout_s,
                ),
            )
            return
        body = k8s.V1Scale(
            api_version="autoscaling/v1",
            kind="Scale",
            metadata=k8s.V1ObjectMeta(
                name=name, namespace=self.namespace, resource_version=resource_version
            ),
            spec=k8s.V1ScaleSpec(replicas=target),
        )
        self._call(
            "update",
            "apps",
            "deployments/scale",
            name,
            lambda: self.apps.replace_namespaced_deployment_scale(
                name, self.namespace, body, _request_timeout=self.request_timeout_s
            ),
        )

    # ------------------------------------------------------- errors, retries

    def _call(self, verb: str, group: str, resource: str, name: str | None, fn):
        """One API call; errors become _Conflict, _Transient or KubernetesAccessError."""
        try:
            return fn()
        except k8s.ApiException as exc:
            status = exc.status or 0
            if status == 409:
                raise _Conflict() from exc
            if status == 403:
                rule = f"{verb} {resource}" + (
                    f" (apiGroup {group!r})" if group else " (core apiGroup)"
                )
                raise KubernetesAccessError(
                    f"forbidden: the planner's service account needs RBAC permission to "
                    f"{verb} {resource} in namespace {self.namespace} "
                    f"(a Role rule: {rule}); see deploy/role.yaml. Server said: {_status_message(exc)}",
                    key="kubernetes.namespace",
                ) from exc
            if status == 404:
                what = self._describe(resource, name)
                raise KubernetesAccessError(
                    f"not found: {what} in namespace {self.namespace}; expected an existing "
                    f"object of that name. Server said: {_status_message(exc)}",
                    key=self._key_for(resource, name),
                ) from exc
            if status == 429 or status >= 500 or status == 0:
                raise _Transient(f"HTTP {status}: {_status_message(exc)}") from exc
            raise KubernetesError(
                f"{verb} {resource} {name or ''}: HTTP {status}: {_status_message(exc)}"
            ) from exc
        except (urllib3.exceptions.HTTPError, OSError) as exc:
            raise _Transient(f"{type(exc).__name__}: {exc}") from exc

    def _with_retries(self, what: str, fn):
        last = ""
        for attempt in range(self.attempts):
            try:
                result = fn()
                self.last_error = None
                return result
            except _Transient as exc:
                last = str(exc)
                log.warning(
                    "kubernetes: %s failed (attempt %d of %d): %s",
                    what,
                    attempt + 1,
                    self.attempts,
                    last,
                )
                if attempt + 1 < self.attempts:
                    self.sleep(self.backoff_s * 2**attempt)
        self.last_error = f"{what}: {last}"
        raise KubernetesError(f"{what} failed after {self.attempts} attempts: {last}")

    def _describe(self, resource: str, name: str | None) -> str:
        if resource.startswith("deployments"):
            return f"Deployment {name!r}"
        if resource == DGD_PLURAL:
            return f"DynamoGraphDeployment {name!r} ({DGD_GROUP}/{self.dgd_version})"
        return f"{resource} {name!r}"

    def _key_for(self, resource: str, name: str | None) -> str:
        if resource == DGD_PLURAL:
            return "kubernetes.dgd_name"
        for role, track in self._tracks.items():
            if track.name == name:
                return f"kubernetes.{role}_deployment"
        return "kubernetes"


def _status_message(exc: k8s.ApiException) -> str:
    """The `message` of a Kubernetes Status body, else the HTTP reason."""
    try:
        body = json.loads(exc.body or "")
        if isinstance(body, dict) and body.get("message"):
            return str(body["message"])
    except ValueError:
        pass
    return str(exc.reason or exc.status)
