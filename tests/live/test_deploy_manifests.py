"""deploy/: every manifest validates against the Kubernetes schemas, and the Role grants what
the connector calls and nothing more."""

from __future__ import annotations

from pathlib import Path

import kubernetes_validate
import pytest
import yaml

from live.kubernetes import RBAC_RULES, parse_kubernetes_settings
from scenario import parse_scenario

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
K8S_VERSION = "1.30.0"
MANIFESTS = sorted(p for p in DEPLOY.glob("*.yaml") if p.name != "kustomization.yaml")

# The issue's least privilege: get/patch/update on deployments/scale, get/list/watch on
# deployments and pods, as (verb, apiGroup, resource).
ISSUE_GRANTS = {
    *{(v, "apps", "deployments/scale") for v in ("get", "patch", "update")},
    *{(v, "apps", "deployments") for v in ("get", "list", "watch")},
    *{(v, "", "pods") for v in ("get", "list", "watch")},
}


def load(name: str) -> dict:
    (doc,) = list(yaml.safe_load_all((DEPLOY / name).read_text()))
    return doc


def planner_config() -> dict:
    return yaml.safe_load(load("configmap.yaml")["data"]["planner.yaml"])


def grants(role: dict) -> dict[tuple[str, str, str], tuple[str, ...] | None]:
    """(verb, group, resource) -> resourceNames (None: any name)."""
    out = {}
    for rule in role["rules"]:
        names = tuple(rule["resourceNames"]) if rule.get("resourceNames") else None
        for group in rule["apiGroups"]:
            for resource in rule["resources"]:
                for verb in rule["verbs"]:
                    out[(verb, group, resource)] = names
    return out


@pytest.mark.parametrize("path", MANIFESTS, ids=lambda p: p.name)
def test_manifest_validates_against_the_kubernetes_schema(path):
    docs = [d for d in yaml.safe_load_all(path.read_text()) if d]
    assert docs, f"{path.name} is empty"
    for doc in docs:
        kubernetes_validate.validate(doc, K8S_VERSION, strict=True)
        assert doc["metadata"]["namespace"] == "llm"


def test_schema_validation_catches_a_mistake():
    bad = load("deployment.yaml")
    bad["spec"]["template"]["spec"]["containers"][0]["resources"]["requests"]["gpus"] = {"x": 1}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(bad, K8S_VERSION, strict=True)
    typo = load("service.yaml")
    typo["spec"]["prots"] = typo["spec"].pop("ports")
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(typo, K8S_VERSION, strict=True)


def test_kustomization_lists_every_manifest():
    listed = set(load("kustomization.yaml")["resources"])
    assert listed == {p.name for p in MANIFESTS}


def test_role_grants_the_connector_calls_and_nothing_more():
    role = load("role.yaml")
    granted = grants(role)
    k8s = planner_config()["kubernetes"]
    scaled = {k8s["prefill_deployment"], k8s["decode_deployment"]}
    for verb, group, resource in RBAC_RULES["deployment"]:
        assert (verb, group, resource) in granted, f"missing {verb} {resource}"
        names = granted[(verb, group, resource)]
        assert names is None or scaled <= set(names), f"{verb} {resource} not allowed on {scaled}"
    assert set(granted) == ISSUE_GRANTS
    assert not any("*" in part for key in granted for part in key)
    # The one write permission is pinned to the two Deployments the planner scales.
    for verb in ("patch", "update"):
        assert set(granted[(verb, "apps", "deployments/scale")]) == scaled


def test_bindings_tie_the_role_to_the_deployment_service_account():
    binding, sa, dep = (
        load("rolebinding.yaml"),
        load("serviceaccount.yaml"),
        load("deployment.yaml"),
    )
    assert binding["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "Role",
        "name": load("role.yaml")["metadata"]["name"],
    }
    (subject,) = binding["subjects"]
    assert (subject["kind"], subject["name"]) == ("ServiceAccount", sa["metadata"]["name"])
    assert dep["spec"]["template"]["spec"]["serviceAccountName"] == sa["metadata"]["name"]
    assert planner_config()["kubernetes"]["namespace"] == binding["metadata"]["namespace"]


def test_deployment_runs_the_daemon_safely_and_probes_its_metrics_port():
    dep = load("deployment.yaml")
    pod = dep["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["command"] + container["args"] == [
        "planlab",
        "planner",
        "--config",
        "/etc/planlab/planner.yaml",
    ]
    mount = next(m for m in container["volumeMounts"] if m["mountPath"] == "/etc/planlab")
    volume = next(v for v in pod["volumes"] if v["name"] == mount["name"])
    assert volume["configMap"]["name"] == load("configmap.yaml")["metadata"]["name"]
    port = next(p for p in container["ports"] if p["name"] == "metrics")
    assert port["containerPort"] == planner_config()["metrics"]["port"]
    for probe in ("readinessProbe", "livenessProbe"):
        assert container[probe]["httpGet"] == {"path": "/metrics", "port": "metrics"}
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert container["securityContext"]["allowPrivilegeEscalation"] is False
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert set(container["resources"]) == {"requests", "limits"}
    service = load("service.yaml")
    assert service["spec"]["selector"] == dep["spec"]["selector"]["matchLabels"]
    assert service["spec"]["ports"][0]["targetPort"] == "metrics"


def test_sample_planner_config_parses():
    cfg = planner_config()
    assert set(cfg) == {
        "name",
        "model",
        "cluster",
        "sla",
        "planner",
        "prometheus",
        "kubernetes",
        "metrics",
    }
    # The scenario-like sections go through the scenario parser itself.
    scenario = parse_scenario(
        {
            **{k: cfg[k] for k in ("name", "model", "cluster", "sla", "planner")},
            "seed": 0,
            "duration": "1h",
            "workload": {
                "arrival": {"process": "poisson", "rate": 1.0},
                "isl": {"dist": "fixed", "value": 1000},
                "osl": {"dist": "fixed", "value": 100},
            },
        },
        "deploy/configmap.yaml",
    )
    assert scenario.cluster.prefill.startup_s == 300.0
    assert scenario.planner.interval_s == 60.0
    settings = parse_kubernetes_settings(cfg["kubernetes"], "deploy/configmap.yaml")
    assert (settings.namespace, settings.mode) == ("llm", "deployment")
    assert settings.startup_timeout_s == 600.0


def test_kubernetes_settings_errors_name_the_key():
    from planner.errors import ConfigError

    with pytest.raises(ConfigError, match=r"f.yaml: kubernetes.namesapce: unknown key"):
        parse_kubernetes_settings({"namesapce": "x"}, "f.yaml")
    with pytest.raises(ConfigError, match=r"kubernetes.dgd_name: got None; expected a non-empty"):
        parse_kubernetes_settings(
            {"namespace": "llm", "mode": "dgd", "prefill_service": "p", "decode_service": "d"},
            "f.yaml",
        )
    with pytest.raises(ConfigError, match=r"kubernetes.startup_timeout"):
        parse_kubernetes_settings(
            {
                "namespace": "llm",
                "prefill_deployment": "p",
                "decode_deployment": "d",
                "startup_timeout": "0s",
            },
            "f.yaml",
        )
