"""The KubernetesConnector with the real `kubernetes` client against the loopback API stand-in."""

from __future__ import annotations

import time

import pytest
from kube_standin import KubeStandin
from kubernetes import client

from live.kubernetes import KubernetesAccessError, KubernetesConnector, KubernetesError
from planner.errors import ConfigError

NS = "llm"
pytestmark = [pytest.mark.live, pytest.mark.timeout(30)]


class FakeClock:
    def __init__(self, t: float = 0.0):
        self.t = t

    def __call__(self) -> float:
        return self.t


@pytest.fixture
def standin():
    server = KubeStandin(ready_delay_s=None, terminate_delay_s=60.0)
    server.add_deployment(NS, "prefill", replicas=1)
    server.add_deployment(NS, "decode", replicas=1)
    with server.serve():
        yield server


def api_client(server: KubeStandin) -> client.ApiClient:
    cfg = client.Configuration(host=server.url)
    cfg.retries = 0
    return client.ApiClient(cfg)


def connector(server: KubeStandin, **kw) -> KubernetesConnector:
    kw.setdefault("request_timeout_s", 3.0)
    kw.setdefault("backoff_s", 0.01)
    names = (kw.pop("prefill", "prefill"), kw.pop("decode", "decode"))
    return KubernetesConnector(NS, *names, api_client=api_client(server), **kw)


def puts(server: KubeStandin, name: str) -> list:
    return [r for r in server.writes() if r.path.endswith(f"/deployments/{name}/scale")]


def wait_for(predicate, timeout_s: float = 5.0):
    deadline = time.monotonic() + timeout_s
    while True:
        value = predicate()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(0.02)


def test_scale_up_puts_scale_with_the_resource_version_read(standin):
    kc = connector(standin)
    rv_before = standin.deployments[(NS, "prefill")]["metadata"]["resourceVersion"]
    assert kc.scale(3, 2) is True
    assert standin.replicas(NS, "prefill") == 3
    assert standin.replicas(NS, "decode") == 2
    (put,) = puts(standin, "prefill")
    assert put.method == "PUT"
    assert put.body["kind"] == "Scale"
    assert put.body["metadata"]["resourceVersion"] == rv_before
    assert put.body["spec"]["replicas"] == 3
    state = kc.state()
    # New pods stay Pending in this stand-in (ready_delay_s=None).
    assert (state.prefill.desired, state.prefill.ready, state.prefill.starting) == (3, 1, 2)
    assert (state.decode.desired, state.decode.ready, state.decode.starting) == (2, 1, 1)
    assert kc.last_observed["prefill"].pending_pods == 2


def test_no_write_when_already_at_target(standin):
    kc = connector(standin)
    assert kc.scale(1, 1) is True
    assert kc.scale(1, 1) is True
    assert standin.writes() == []


def test_scale_down_reports_terminating_pods_as_draining(standin):
    standin.set_replicas(NS, "prefill", 3)
    kc = connector(standin)
    assert kc.scale(1, 1) is True
    assert standin.replicas(NS, "prefill") == 1
    state = kc.state()
    # The ReplicaSet controller removes the two not-ready (youngest) pods first.
    assert (state.prefill.desired, state.prefill.ready, state.prefill.draining) == (1, 1, 2)
    assert state.prefill.starting == 0


def test_ready_catches_up_and_startup_time_is_recorded():
    server = KubeStandin(ready_delay_s=0.3)
    server.add_deployment(NS, "prefill", replicas=1)
    server.add_deployment(NS, "decode", replicas=1)
    clock = FakeClock(100.0)
    with server.serve():
        kc = connector(server, clock=clock)
        assert kc.scale(3, 1)
        first = kc.state()
        assert first.prefill.startup_s == ()
        clock.t = 142.0
        state = wait_for(lambda: (s := kc.state()).prefill.ready == 3 and s)
    assert state, "the stand-in never made the new pods ready"
    assert state.prefill.starting == 0
    assert state.prefill.startup_s == (42.0,)
    assert state.prefill.startup_estimate_s == 42.0
    assert state.decode.startup_s == ()


def test_conflict_is_reread_and_retried(standin):
    standin.conflict_next_writes = 2
    kc = connector(standin, attempts=3)
    assert kc.scale(4, 1) is True
    assert standin.replicas(NS, "prefill") == 4
    attempts = puts(standin, "prefill")
    assert len(attempts) == 3
    # Each retry carries the resourceVersion of a fresh read, not the stale one.
    versions = [p.body["metadata"]["resourceVersion"] for p in attempts]
    assert len(set(versions)) == 3


def test_conflict_that_never_ends_returns_false(standin):
    standin.conflict_next_writes = 100
    kc = connector(standin, attempts=3)
    assert kc.scale(4, 1) is False
    assert standin.replicas(NS, "prefill") == 1


def test_standin_refuses_a_stale_put_like_a_real_server(standin):
    apps = client.AppsV1Api(api_client(standin))
    scale = apps.read_namespaced_deployment_scale("prefill", NS)
    standin.set_replicas(NS, "prefill", 2)
    scale.spec.replicas = 5
    with pytest.raises(client.ApiException) as info:
        apps.replace_namespaced_deployment_scale("prefill", NS, scale)
    assert info.value.status == 409
    assert '"reason": "Conflict"' in info.value.body
    assert standin.replicas(NS, "prefill") == 2


def test_standin_patch_honours_a_resource_version_precondition(standin):
    apps = client.AppsV1Api(api_client(standin))
    rv = apps.read_namespaced_deployment_scale("prefill", NS).metadata.resource_version
    # The client sends a dict body to the scale subresource as a strategic merge patch.
    apps.patch_namespaced_deployment_scale("prefill", NS, {"spec": {"replicas": 2}})
    assert standin.writes()[-1].content_type == "application/strategic-merge-patch+json"
    assert standin.replicas(NS, "prefill") == 2
    with pytest.raises(client.ApiException) as info:
        apps.patch_namespaced_deployment_scale(
            "prefill", NS, {"metadata": {"resourceVersion": rv}, "spec": {"replicas": 6}}
        )
    assert info.value.status == 409
    assert standin.replicas(NS, "prefill") == 2


def test_forbidden_names_the_missing_rbac_rule(standin):
    standin.forbidden.add(("update", "deployments/scale"))
    kc = connector(standin)
    with pytest.raises(KubernetesAccessError) as info:
        kc.scale(2, 1)
    assert "update deployments/scale in namespace llm" in str(info.value)
    assert isinstance(info.value, ConfigError)

    standin.forbidden = {("list", "pods")}
    with pytest.raises(KubernetesAccessError, match="list pods in namespace llm"):
        kc.state()


def test_not_found_names_the_deployment(standin):
    kc = connector(standin, decode="decode-typo")
    with pytest.raises(KubernetesAccessError) as info:
        kc.state()
    assert "Deployment 'decode-typo' in namespace llm" in str(info.value)
    assert info.value.key == "kubernetes.decode_deployment"


def test_slow_server_times_out_returns_false_and_keeps_the_last_state(standin):
    kc = connector(standin, request_timeout_s=0.2, attempts=2)
    before = kc.state()
    standin.delay_s = 1.0
    assert kc.scale(2, 2) is False
    assert "TimeoutError" in (kc.last_error or "") or "timed out" in (kc.last_error or "")
    assert kc.state() is before
    standin.delay_s = 0.0
    assert kc.scale(2, 2) is True
    assert standin.replicas(NS, "decode") == 2


def test_slow_server_before_any_read_raises_a_clear_error(standin):
    standin.delay_s = 1.0
    kc = connector(standin, request_timeout_s=0.2, attempts=1)
    with pytest.raises(KubernetesError, match="read replicas failed after 1 attempts"):
        kc.state()


def test_server_errors_are_retried_with_backoff(standin):
    slept = []
    kc = connector(standin, attempts=3, backoff_s=0.5, sleep=slept.append)
    standin.fail_next_n = 2
    assert kc.scale(2, 1) is True
    assert standin.replicas(NS, "prefill") == 2
    assert slept == [0.5, 1.0]  # exponential backoff between the three tries
    standin.fail_next_n = 100
    assert kc.scale(3, 1) is False
    assert standin.replicas(NS, "prefill") == 2


def test_replicas_changed_behind_its_back_are_reported_and_reconciled(standin):
    kc = connector(standin)
    assert kc.scale(2, 2)
    assert kc.state().external_change is None
    standin.set_replicas(NS, "decode", 5)
    state = kc.state()
    assert state.external_change == "decode replicas changed from 2 to 5 outside the planner"
    assert state.decode.desired == 5
    assert kc.scale(2, 2) is True
    assert standin.replicas(NS, "decode") == 2
    assert kc.state().external_change is None

    # A change between state() and scale() is seen by scale() and reported on the next state().
    standin.set_replicas(NS, "prefill", 7)
    assert kc.scale(2, 2) is True
    assert standin.replicas(NS, "prefill") == 2
    assert kc.state().external_change == "prefill replicas changed from 2 to 7 outside the planner"


def test_stuck_replicas_are_counted_after_the_startup_timeout(standin):
    clock = FakeClock(0.0)
    kc = connector(standin, clock=clock, startup_timeout_s=600)
    assert kc.scale(3, 1)
    clock.t = 599.0
    state = kc.state()
    assert (state.prefill.starting, state.prefill.stuck) == (2, 0)
    clock.t = 601.0
    state = kc.state()
    assert (state.prefill.starting, state.prefill.stuck) == (2, 2)
    assert state.decode.stuck == 0
    # Asking for fewer drops the stuck slots instead of waiting on them forever.
    assert kc.scale(1, 1)
    assert kc.state().prefill.stuck == 0


def test_dgd_mode_merge_patches_the_service_replicas():
    server = KubeStandin(ready_delay_s=None)
    server.add_dgd(NS, "graph", {"Frontend": 1, "VllmPrefillWorker": 1, "VllmDecodeWorker": 1})
    with server.serve():
        kc = KubernetesConnector(
            NS,
            "VllmPrefillWorker",
            "VllmDecodeWorker",
            mode="dgd",
            dgd_name="graph",
            api_client=api_client(server),
            backoff_s=0.01,
        )
        assert kc.scale(2, 3) is True
        patches = server.writes()
        assert {p.method for p in patches} == {"PATCH"}
        assert {p.content_type for p in patches} == {"application/merge-patch+json"}
        assert all("resourceVersion" in p.body["metadata"] for p in patches)
        services = server.dgds[(NS, "graph")]["spec"]["services"]
        assert services["VllmPrefillWorker"] == {"componentType": "worker", "replicas": 2}
        assert services["VllmDecodeWorker"]["replicas"] == 3
        assert services["Frontend"]["replicas"] == 1
        state = kc.state()
        assert (state.prefill.desired, state.prefill.ready, state.prefill.starting) == (2, 1, 1)
        assert (state.decode.desired, state.decode.ready, state.decode.starting) == (3, 1, 2)

        server.conflict_next_writes = 1
        server.set_replicas(NS, "graph", 4, service="VllmDecodeWorker")
        assert kc.scale(2, 3) is True
        assert server.replicas(NS, "graph", service="VllmDecodeWorker") == 3
        assert (
            kc.state().external_change == "decode replicas changed from 3 to 4 outside the planner"
        )


def test_dgd_mode_names_a_missing_service():
    server = KubeStandin()
    server.add_dgd(NS, "graph", {"prefill": 1, "decode": 1})
    with server.serve():
        kc = KubernetesConnector(
            NS, "prefill", "decoder", mode="dgd", dgd_name="graph", api_client=api_client(server)
        )
        with pytest.raises(
            KubernetesAccessError, match="no service 'decoder'; it has decode, prefill"
        ):
            kc.state()


def test_bad_settings_are_config_errors(standin):
    with pytest.raises(ConfigError, match="mode 'statefulset' is not one of deployment, dgd"):
        connector(standin, mode="statefulset")
    with pytest.raises(ConfigError, match="needs the DynamoGraphDeployment's name"):
        connector(standin, mode="dgd")
