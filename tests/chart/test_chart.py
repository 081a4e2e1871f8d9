"""The chart as Helm renders it: lint, Kubernetes schemas, the CRD's schema, values.schema.json,
and what each object must say for deskhook to run safely."""

from __future__ import annotations

import base64
import copy
import json
import re
import tomllib
from pathlib import Path
from typing import Any

import helm_python as helm
import jsonschema
import kubernetes_validate
import pytest
import yaml

import render as chart
from conftest import CHART_CRD, VALUE_SETS, kinds, one

# Oldest Kubernetes the chart supports (Chart.yaml kubeVersion) and the newest the validator knows.
KUBE_VERSIONS = ["1.30.0", kubernetes_validate.utils.latest_version()]
# Kinds defined by CRDs; kubernetes-validate has no schema for them, so they are checked below.
CUSTOM_KINDS = {"WebhookAutomation", "ServiceMonitor", "PrometheusRule"}
FLAGS_LEVEL_1 = {"dispatch": True, "link": True, "respond": False, "updateTicket": False,
                 "updateDeal": False, "addNote": False, "draftReplies": False}


def container(documents) -> dict[str, Any]:
    pod = one(documents, "Deployment")["spec"]["template"]["spec"]
    assert len(pod["containers"]) == 1
    return pod["containers"][0]


def arg_value(args: list[str], flag: str) -> str | None:
    return args[args.index(flag) + 1] if flag in args else None


# --- Helm ------------------------------------------------------------------------------------


@pytest.mark.parametrize("value_set", VALUE_SETS)
def test_helm_lint_strict_passes(value_set):
    report = helm.lint(chart.CHART, chart.load_values(value_set), strict=True,
                       kube_version="v1.30.0")
    problems = [m for m in report["messages"] if m["severity"] >= 2]
    assert report["total_charts_linted"] == 1
    assert not problems and not report["errors"], report


def test_helm_lint_fails_on_values_of_the_wrong_type():
    report = helm.lint(chart.CHART, chart.load_values("broken-type"), strict=True,
                       kube_version="v1.30.0")
    assert any("/replicaCount" in error for error in report["errors"]), report


def test_chart_app_version_tracks_the_crate():
    crate = tomllib.loads((chart.ROOT / "Cargo.toml").read_text())["package"]["version"]
    metadata = yaml.safe_load((chart.CHART / "Chart.yaml").read_text())
    assert metadata["apiVersion"] == "v2"
    assert metadata["appVersion"] == crate


def test_every_value_set_renders_the_expected_objects(rendered_sets):
    assert sorted(kinds(rendered_sets["defaults"])) == sorted([
        "ServiceAccount", "Role", "RoleBinding", "Service", "Deployment", "PodDisruptionBudget",
        "WebhookAutomation",
    ])
    assert sorted(kinds(rendered_sets["everything-on"])) == sorted([
        "NetworkPolicy", "PodDisruptionBudget", "ServiceAccount", "Secret", "ConfigMap", "Role",
        "RoleBinding", "Service", "Deployment", "HorizontalPodAutoscaler", "Ingress",
        "WebhookAutomation", "ServiceMonitor", "PrometheusRule",
    ])


# --- Schemas ---------------------------------------------------------------------------------


@pytest.mark.parametrize("kube_version", KUBE_VERSIONS)
def test_every_object_is_valid_for_kubernetes(rendered, kube_version):
    unchecked = []
    for doc in rendered:
        if doc.kind in CUSTOM_KINDS:
            unchecked.append(doc.kind)
            continue
        try:
            kubernetes_validate.validate(doc.obj, kube_version, strict=True)
        except kubernetes_validate.ValidationError as error:
            pytest.fail(f"{doc} is invalid for Kubernetes {kube_version}: "
                        f"{'.'.join(map(str, error.path))}: {error.message}")
    assert set(unchecked) <= CUSTOM_KINDS


def strict_crd_schema(schema: dict[str, Any]) -> dict[str, Any]:
    """The CRD's openAPIV3Schema with unknown fields refused, as `kubectl apply` with strict
    field validation does (the API server would otherwise prune them silently)."""
    schema = copy.deepcopy(schema)

    def visit(node: Any) -> None:
        if isinstance(node, dict):
            if (node.get("type") == "object" and "properties" in node
                    and "additionalProperties" not in node
                    and not node.get("x-kubernetes-preserve-unknown-fields")):
                node["additionalProperties"] = False
            for value in node.values():
                visit(value)
        elif isinstance(node, list):
            for value in node:
                visit(value)

    visit(schema)
    return schema


def crd_version(crd: dict[str, Any]) -> dict[str, Any]:
    served = [v for v in crd["spec"]["versions"] if v.get("served") and v.get("storage")]
    assert len(served) == 1
    return served[0]


def test_webhookautomation_is_valid_for_its_crd(rendered, crd):
    resource = one(rendered, "WebhookAutomation")
    version = crd_version(crd)
    assert resource["apiVersion"] == f"{crd['spec']['group']}/{version['name']}"
    assert resource["kind"] == crd["spec"]["names"]["kind"]
    assert crd["spec"]["scope"] == "Namespaced" and resource["metadata"].get("namespace")
    schema = strict_crd_schema(version["schema"]["openAPIV3Schema"])
    # apiVersion, kind and metadata are the API server's own; the schema covers the rest.
    body = {k: v for k, v in resource.items() if k not in ("apiVersion", "kind", "metadata")}
    errors = sorted(jsonschema.Draft7Validator(schema).iter_errors(body), key=str)
    assert not errors, "\n".join(f"{'.'.join(map(str, e.path))}: {e.message}" for e in errors)


def test_crd_check_refuses_a_wrong_resource(crd):
    """The CRD check above can fail: a misspelt flag and a wrong type are refused."""
    schema = strict_crd_schema(crd_version(crd)["schema"]["openAPIV3Schema"])
    for spec in ({"automation": {"dispatchh": True}}, {"automation": {"respond": "yes"}}):
        body = {"spec": spec}
        assert list(jsonschema.Draft7Validator(schema).iter_errors(body)), spec


def test_chart_ships_the_crd(crd, deskhook_bin):
    import subprocess

    assert CHART_CRD.exists(), "charts/deskhook/crds/webhookautomation.yaml is missing"
    root_crd = chart.ROOT / "crds" / "webhookautomation.yaml"
    assert root_crd.exists(), "crds/webhookautomation.yaml is missing"
    assert yaml.safe_load(root_crd.read_text()) == crd, "the chart's CRD differs from crds/"
    generated = subprocess.run([str(deskhook_bin), "crd"], capture_output=True, text=True,
                               timeout=60, check=True)
    assert yaml.safe_load(generated.stdout) == crd, "the chart's CRD differs from `deskhook crd`"
    assert crd["spec"]["names"]["kind"] == "WebhookAutomation"
    assert crd["spec"]["group"] == "deskhook.dev"


BAD_VALUES = [
    ("broken-type", None, "/replicaCount"),
    ("flag as a string", {"webhookAutomation": {"spec": {"automation": {"respond": "yes"}}}},
     "/webhookAutomation/spec/automation/respond"),
    ("misspelt flag", {"webhookAutomation": {"spec": {"automation": {"respnd": True}}}},
     "respnd"),
    ("numeric webhook id", {"webhookAutomation": {"spec": {"verification": {"zohoJwt": {
        "orgId": "1", "webhookIds": [1892000000123456]}}}}}, "/webhookIds/0"),
    ("port out of range", {"server": {"port": 70000}}, "/server/port"),
    ("unknown top-level key", {"replicas": 3}, "replicas"),
    ("unknown path type", {"ingress": {"paths": [{"path": "/x", "pathType": "Any"}]}},
     "/ingress/paths/0/pathType"),
]


@pytest.mark.parametrize("name,values,where", BAD_VALUES, ids=[b[0] for b in BAD_VALUES])
def test_values_schema_refuses_broken_values(name, values, where):
    values = chart.load_values(name) if values is None else values
    with pytest.raises(helm.HelmValuesError) as refused:
        chart.render(values)
    assert where in str(refused.value)
    # The same refusal from an independent validator of values.schema.json.
    schema = json.loads((chart.CHART / "values.schema.json").read_text())
    with helm.Chart.load(chart.CHART) as loaded:
        merged = loaded.merge_values(values)
    assert list(jsonschema.Draft7Validator(schema).iter_errors(merged))


def test_values_schema_accepts_the_defaults_and_every_value_set():
    schema = json.loads((chart.CHART / "values.schema.json").read_text())
    jsonschema.Draft7Validator.check_schema(schema)
    with helm.Chart.load(chart.CHART) as loaded:
        for name in VALUE_SETS:
            merged = loaded.merge_values(chart.load_values(name))
            errors = list(jsonschema.Draft7Validator(schema).iter_errors(merged))
            assert not errors, (name, [e.message for e in errors])


def test_values_schema_knows_exactly_the_crd_flags(crd):
    schema = json.loads((chart.CHART / "values.schema.json").read_text())
    values_flags = (schema["properties"]["webhookAutomation"]["properties"]["spec"]
                    ["properties"]["automation"]["properties"])
    crd_flags = (crd_version(crd)["schema"]["openAPIV3Schema"]["properties"]["spec"]
                 ["properties"]["automation"]["properties"])
    assert set(values_flags) == set(crd_flags)
    assert set(FLAGS_LEVEL_1) == set(crd_flags)


# --- The resource, the Deployment and what they must agree on --------------------------------


def test_a_fresh_install_starts_at_level_1(rendered_sets):
    resource = one(rendered_sets["defaults"], "WebhookAutomation")
    assert resource["spec"]["automation"] == FLAGS_LEVEL_1


def test_deployment_runs_against_the_chart_resource(rendered):
    deployment = one(rendered, "Deployment")
    args = container(rendered)["args"]
    assert args[0] == "serve" and "--kube" in args
    resource = one(rendered, "WebhookAutomation")
    assert arg_value(args, "--resource") == resource["metadata"]["name"]
    assert resource["metadata"]["namespace"] == deployment["metadata"]["namespace"]
    env = {e["name"]: e for e in container(rendered)["env"]}
    assert env["POD_NAME"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"
    assert env["POD_NAMESPACE"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.namespace"


def test_deployment_has_a_restricted_security_context(rendered):
    pod = one(rendered, "Deployment")["spec"]["template"]["spec"]
    ctx = container(rendered)["securityContext"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] != 0
    assert pod["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault"
    assert ctx["runAsNonRoot"] is True
    assert ctx["allowPrivilegeEscalation"] is False
    assert ctx["readOnlyRootFilesystem"] is True
    assert ctx["capabilities"]["drop"] == ["ALL"] and not ctx["capabilities"].get("add")
    assert ctx["seccompProfile"]["type"] == "RuntimeDefault"
    assert not ctx.get("privileged")
    assert not pod.get("hostNetwork") and not pod.get("hostPID")


def test_deployment_sets_resources_probes_and_spread(rendered):
    c = container(rendered)
    assert c["resources"]["requests"]["cpu"] and c["resources"]["requests"]["memory"]
    assert c["resources"]["limits"]["memory"]
    assert c["livenessProbe"]["httpGet"]["path"] == "/health"
    assert c["readinessProbe"]["httpGet"]["path"] == "/ready"
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    assert set(ports) == {"http", "metrics"}
    pod = one(rendered, "Deployment")["spec"]["template"]
    spread = pod["spec"]["topologySpreadConstraints"]
    assert {s["topologyKey"] for s in spread} == {"topology.kubernetes.io/zone",
                                                 "kubernetes.io/hostname"}
    for constraint in spread:
        assert constraint["labelSelector"]["matchLabels"].items() <= pod["metadata"]["labels"].items()


def test_termination_grace_outlasts_the_drain(rendered):
    args = container(rendered)["args"]
    delay = int(arg_value(args, "--shutdown-delay"))
    grace = int(arg_value(args, "--shutdown-grace"))
    period = one(rendered, "Deployment")["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
    assert period > delay + grace


def test_a_termination_grace_shorter_than_the_drain_is_refused():
    with pytest.raises(helm.HelmRenderError, match="must exceed"):
        chart.render({"server": {"terminationGracePeriodSeconds": 30}})
    assert one(chart.render({"server": {"terminationGracePeriodSeconds": 31}}),
               "Deployment")["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] == 31


def test_two_replicas_unless_autoscaled(rendered_sets):
    assert one(rendered_sets["defaults"], "Deployment")["spec"]["replicas"] == 2
    assert "replicas" not in one(rendered_sets["everything-on"], "Deployment")["spec"]


# --- Credentials ----------------------------------------------------------------------------


def secret_files(rendered) -> dict[str, str]:
    """Mounted secret key → path in the container."""
    c = container(rendered)
    pod = one(rendered, "Deployment")["spec"]["template"]["spec"]
    mounts = {m["name"]: m["mountPath"] for m in c.get("volumeMounts", [])}
    files = {}
    for volume in pod.get("volumes", []):
        if "secret" in volume:
            for item in volume["secret"]["items"]:
                files[item["key"]] = f"{mounts[volume['name']]}/{item['path']}"
    return files


def test_defaults_store_no_credentials(rendered_sets):
    documents = rendered_sets["defaults"]
    assert "Secret" not in kinds(documents)
    args = container(documents)["args"]
    assert "--hmac-secret-file" not in args and "--admin-token-file" not in args
    assert not secret_files(documents)


def test_credentials_given_as_values_are_mounted_from_the_chart_secret(rendered_sets):
    documents = rendered_sets["everything-on"]
    secret = one(documents, "Secret")
    values = chart.load_values("everything-on")["secrets"]
    data = {k: base64.b64decode(v).decode() for k, v in secret["data"].items()}
    assert data["hmac-secrets"].split("\n") == values["hmacSecrets"]
    assert data["admin-token"] == values["adminToken"]
    files = secret_files(documents)
    args = container(documents)["args"]
    assert arg_value(args, "--hmac-secret-file") == files["hmac-secrets"]
    assert arg_value(args, "--admin-token-file") == files["admin-token"]
    env = {e["name"]: e for e in container(documents)["env"]}
    assert env["ZOHO_CLIENT_SECRET_FILE"]["value"] == files["zoho-client-secret"]
    assert env["ZOHO_REFRESH_TOKEN_FILE"]["value"] == files["zoho-refresh-token"]
    for name in ("ZOHO_CLIENT_ID", "DESKHOOK_LLM_API_KEY"):
        ref = env[name]["valueFrom"]["secretKeyRef"]
        assert ref["name"] == secret["metadata"]["name"] and ref["key"] in data
    assert set(files) <= set(data)
    annotations = one(documents, "Deployment")["spec"]["template"]["metadata"]["annotations"]
    assert re.fullmatch(r"[0-9a-f]{64}", annotations["checksum/secret"])
    # No credential ever lands in the resource many people can read.
    resource_text = json.dumps(one(documents, "WebhookAutomation"))
    for value in data.values():
        assert value not in resource_text


def test_the_decision_archive_is_off_by_default_and_mounted_when_on(rendered_sets):
    assert "--archive" not in container(rendered_sets["defaults"])["args"]
    documents = rendered_sets["everything-on"]
    args = container(documents)["args"]
    assert arg_value(args, "--archive") == "/var/lib/deskhook/archive"
    assert arg_value(args, "--archive-file-mib") == "32"
    assert arg_value(args, "--archive-files") == "20"
    mounts = {m["name"]: m for m in container(documents)["volumeMounts"]}
    assert mounts["archive"]["mountPath"] == "/var/lib/deskhook/archive"
    assert not mounts["archive"].get("readOnly")
    assert "credentials" in mounts, "the credentials stay mounted beside it"
    pod = one(documents, "Deployment")["spec"]["template"]["spec"]
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes["archive"]["persistentVolumeClaim"]["claimName"] == "deskhook-archive"


def test_an_existing_secret_is_used_as_declared(rendered_sets):
    documents = rendered_sets["existing-secret"]
    assert "Secret" not in kinds(documents)
    keys = chart.load_values("existing-secret")["secrets"]["existingSecretKeys"]
    args = container(documents)["args"]
    assert "--hmac-secret-file" not in args  # the Secret holds no HMAC key
    files = secret_files(documents)
    assert arg_value(args, "--admin-token-file") == files[keys["adminToken"]]
    pod = one(documents, "Deployment")["spec"]["template"]["spec"]
    assert pod["volumes"][0]["secret"]["secretName"] == "deskhook-credentials"
    env = {e["name"]: e for e in container(documents)["env"]}
    assert env["ZOHO_CLIENT_ID"]["valueFrom"]["secretKeyRef"] == {
        "name": "deskhook-credentials", "key": keys["zohoClientId"]}
    assert env["DESKHOOK_LLM_API_KEY"]["valueFrom"]["secretKeyRef"]["key"] == keys["llmApiKey"]
    assert env["ZOHO_REFRESH_TOKEN_FILE"]["value"] == files[keys["zohoRefreshToken"]]


@pytest.mark.parametrize("secrets", [
    {"zohoClientId": "id"},
    {"existingSecret": "x", "existingSecretKeys": {"zohoClientId": "", "zohoClientSecret": "s",
                                                   "zohoRefreshToken": "r"}},
])
def test_partial_zoho_credentials_are_refused(secrets):
    with pytest.raises(helm.HelmRenderError, match="together"):
        chart.render({"secrets": secrets})


def test_zoho_credentials_need_the_org_id():
    credentials = {"zohoClientId": "id", "zohoClientSecret": "s", "zohoRefreshToken": "r"}
    with pytest.raises(helm.HelmRenderError, match="orgId is required"):
        chart.render({"secrets": credentials})
    documents = chart.render({"secrets": credentials, "webhookAutomation": {
        "spec": {"zoho": {"orgId": "700000001"}}}})
    assert one(documents, "WebhookAutomation")["spec"]["zoho"]["orgId"] == "700000001"


def test_incomplete_jwt_settings_are_refused():
    with pytest.raises(helm.HelmError):
        chart.render({"webhookAutomation": {"spec": {"verification": {"zohoJwt": {
            "orgId": "700000001", "webhookIds": []}}}}})


# --- RBAC ------------------------------------------------------------------------------------


def normalised_rules(rules: list[dict[str, Any]]) -> set[tuple]:
    return {
        (group, resource, verb)
        for rule in rules
        for group in rule.get("apiGroups", [])
        for resource in rule.get("resources", [])
        for verb in rule.get("verbs", [])
    }


def test_role_mirrors_the_kubernetes_rbac_manifest(rendered_sets):
    reference = chart.ROOT / "manifests" / "rbac.yaml"
    assert reference.exists(), "manifests/rbac.yaml (the Kubernetes issue's Role) is missing"
    roles = [d for d in yaml.safe_load_all(reference.read_text()) if d and d["kind"] == "Role"]
    assert len(roles) == 1
    role = one(rendered_sets["defaults"], "Role")
    assert normalised_rules(role["rules"]) == normalised_rules(roles[0]["rules"])


def test_role_is_least_privilege(rendered_sets):
    documents = rendered_sets["defaults"]
    rules = normalised_rules(one(documents, "Role")["rules"])
    assert ("deskhook.dev", "webhookautomations", "watch") in rules
    assert not any(resource == "secrets" or "*" in (group, resource, verb)
                   for group, resource, verb in rules)
    assert not {"ClusterRole", "ClusterRoleBinding"} & set(kinds(documents))


def test_role_binding_grants_the_role_to_the_pods_account(rendered):
    binding = one(rendered, "RoleBinding")
    role = one(rendered, "Role")
    account = one(rendered, "ServiceAccount")
    pod = one(rendered, "Deployment")["spec"]["template"]["spec"]
    assert binding["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role",
                                  "name": role["metadata"]["name"]}
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": account["metadata"]["name"],
                                    "namespace": account["metadata"]["namespace"]}]
    assert pod["serviceAccountName"] == account["metadata"]["name"]


# --- Networking ------------------------------------------------------------------------------


def test_service_selects_the_pods_and_names_both_ports(rendered):
    service = one(rendered, "Service")
    pod_labels = one(rendered, "Deployment")["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= pod_labels.items()
    assert {p["name"]: p["targetPort"] for p in service["spec"]["ports"]} == {
        "http": "http", "metrics": "metrics"}


def test_ingress_with_cert_manager(rendered_sets):
    documents = rendered_sets["ingress-cert-manager"]
    ingress = one(documents, "Ingress")
    assert ingress["metadata"]["annotations"] == {"cert-manager.io/issuer": "letsencrypt-prod"}
    assert ingress["spec"]["ingressClassName"] == "nginx"
    assert ingress["spec"]["tls"] == [{"hosts": ["hooks.example.org"],
                                       "secretName": "hooks-example-org-tls"}]
    rule = ingress["spec"]["rules"][0]
    assert rule["host"] == "hooks.example.org"
    [path] = rule["http"]["paths"]
    assert path["path"] == "/webhook/zoho-desk"
    assert path["backend"]["service"] == {"name": one(documents, "Service")["metadata"]["name"],
                                          "port": {"name": "http"}}


def test_ingress_with_a_cluster_issuer_and_default_tls_secret(rendered_sets):
    ingress = one(rendered_sets["everything-on"], "Ingress")
    annotations = ingress["metadata"]["annotations"]
    assert annotations["cert-manager.io/cluster-issuer"] == "letsencrypt"
    assert annotations["nginx.ingress.kubernetes.io/limit-rps"] == "20"
    assert ingress["spec"]["tls"][0]["secretName"] == "deskhook-tls"


def test_an_ingress_without_host_is_refused():
    with pytest.raises(helm.HelmRenderError, match="ingress.host is required"):
        chart.render({"ingress": {"enabled": True}})


def test_network_policy_admits_the_ingress_controller_and_monitoring(rendered_sets):
    documents = rendered_sets["everything-on"]
    policy = one(documents, "NetworkPolicy")["spec"]
    pod_labels = one(documents, "Deployment")["spec"]["template"]["metadata"]["labels"]
    assert policy["podSelector"]["matchLabels"].items() <= pod_labels.items()
    by_port = {rule["ports"][0]["port"]: rule["from"][0] for rule in policy["ingress"]}
    assert set(by_port) == {"http", "metrics"}
    assert by_port["http"]["namespaceSelector"]["matchLabels"] == {
        "kubernetes.io/metadata.name": "ingress-nginx"}
    assert by_port["metrics"]["namespaceSelector"]["matchLabels"] == {
        "kubernetes.io/metadata.name": "monitoring"}
    egress_ports = {(p["port"], p["protocol"]) for rule in policy["egress"] for p in rule["ports"]}
    assert {(53, "UDP"), (53, "TCP"), (443, "TCP"), (6443, "TCP")} == egress_ports
    assert policy["policyTypes"] == ["Ingress", "Egress"]


# --- Scaling ---------------------------------------------------------------------------------


def test_autoscaler_scales_the_deployment_on_cpu_and_a_custom_metric(rendered_sets):
    documents = rendered_sets["everything-on"]
    hpa = one(documents, "HorizontalPodAutoscaler")
    assert next(d for d in documents if d.kind == "HorizontalPodAutoscaler").obj["apiVersion"] \
        == "autoscaling/v2"
    assert hpa["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment",
                                             "name": one(documents, "Deployment")["metadata"]["name"]}
    assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (3, 12)
    metrics = {m["type"]: m for m in hpa["spec"]["metrics"] if m["type"] == "Pods"}
    assert metrics["Pods"]["pods"]["metric"]["name"] == "deskhook_queue_depth"
    resources = {m["resource"]["name"] for m in hpa["spec"]["metrics"] if m["type"] == "Resource"}
    assert resources == {"cpu", "memory"}


def test_autoscaler_defaults_to_cpu_only():
    documents = chart.render({"autoscaling": {"enabled": True}})
    metrics = one(documents, "HorizontalPodAutoscaler")["spec"]["metrics"]
    assert metrics == [{"type": "Resource", "resource": {
        "name": "cpu", "target": {"type": "Utilization", "averageUtilization": 70}}}]


def test_disruption_budget_selects_the_pods_and_needs_two(rendered_sets):
    documents = rendered_sets["defaults"]
    pdb = one(documents, "PodDisruptionBudget")
    pod_labels = one(documents, "Deployment")["spec"]["template"]["metadata"]["labels"]
    assert pdb["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
    assert pdb["spec"]["maxUnavailable"] == 1
    assert "PodDisruptionBudget" not in kinds(chart.render({"replicaCount": 1}))


# --- Monitoring --------------------------------------------------------------------------------


def test_service_monitor_structure(rendered_sets):
    """Structure only: the Prometheus Operator's CRD schema is not available offline."""
    documents = rendered_sets["everything-on"]
    doc = next(d for d in documents if d.kind == "ServiceMonitor")
    assert doc.obj["apiVersion"] == "monitoring.coreos.com/v1"
    monitor = doc.obj
    assert monitor["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    service = one(documents, "Service")
    assert monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    assert monitor["spec"]["namespaceSelector"]["matchNames"] == [service["metadata"]["namespace"]]
    [endpoint] = monitor["spec"]["endpoints"]
    assert endpoint["port"] in {p["name"] for p in service["spec"]["ports"]}
    assert endpoint["port"] == "metrics" and endpoint["path"] == "/metrics"
    assert re.fullmatch(r"\d+[smh]", endpoint["interval"])
    assert set(monitor) == {"apiVersion", "kind", "metadata", "spec"}
    assert set(monitor["spec"]) <= {"namespaceSelector", "selector", "endpoints", "jobLabel"}


SEED_ALERTS = {"DeskhookSignatureFailures", "DeskhookPayloadParseErrors", "DeskhookMissingTicketId",
               "DeskhookWorkflowFailing"}
MORE_ALERTS = {"DeskhookSettingsNotApplied", "DeskhookQueueBacklog", "DeskhookZohoApiErrors",
               "DeskhookZohoThrottled"}


def test_prometheus_rule_structure(rendered_sets):
    """Structure only (promtool checks the expressions in test_metrics.py)."""
    doc = next(d for d in rendered_sets["everything-on"] if d.kind == "PrometheusRule")
    assert doc.obj["apiVersion"] == "monitoring.coreos.com/v1"
    rule = doc.obj
    assert rule["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    names = set()
    for group in rule["spec"]["groups"]:
        assert group["name"] and group["rules"]
        for alert in group["rules"]:
            assert set(alert) <= {"alert", "expr", "for", "labels", "annotations"}
            assert isinstance(alert["expr"], str) and alert["expr"].strip()
            assert alert["labels"]["severity"] in {"critical", "warning", "info"}
            assert alert["labels"]["team"] == "support"
            assert alert["annotations"]["summary"] and alert["annotations"]["description"]
            assert 'namespace="deskhook",job="deskhook"' in alert["expr"]
            names.add(alert["alert"])
    assert SEED_ALERTS | MORE_ALERTS <= names


def test_dashboard_is_shipped_for_the_grafana_sidecar(rendered_sets):
    configmap = one(rendered_sets["everything-on"], "ConfigMap")
    assert configmap["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert configmap["metadata"]["annotations"] == {"grafana_folder": "Support"}
    dashboard = json.loads(configmap["data"]["deskhook.json"])
    assert dashboard == json.loads((chart.CHART / "dashboards" / "deskhook.json").read_text())
    titles = {p["title"] for p in dashboard["panels"]}
    assert {"Deliveries by outcome", "Events by status", "Workflow runs by result",
            "Workflow errors by step", "Flags in force per pod", "Queue depth per pod",
            "Zoho request latency"} <= titles
    for panel in dashboard["panels"]:
        if panel["type"] != "row":
            assert panel["datasource"]["uid"] == "${datasource}"


# --- NOTES ---------------------------------------------------------------------------------------


def test_notes_give_the_webhook_url_and_the_rollout_commands():
    text = chart.notes(chart.load_values("ingress-cert-manager"))
    assert "https://hooks.example.org/webhook/zoho-desk" in text
    assert "--set webhookAutomation.spec.automation.respond=true" in text
    assert "kubectl -n deskhook patch webhookautomation deskhook" in text
    assert "WARNING" not in text
    assert "WARNING: no verification is configured" in chart.notes({})
    guide = chart.notes(chart.load_values("install-guide"))
    assert "WARNING: no verification is configured" in guide
    assert "localhost:8080/webhook/decisions" in guide  # the existing Secret holds an admin token


# --- The README's install guide ------------------------------------------------------------------


def merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """Helm's merge of --set values into the values in force: maps deeply, lists replaced."""
    merged = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def test_install_guide_steps_render_valid_objects(crd):
    """The README's commands, step by step, as `helm upgrade --reuse-values` would apply them."""
    schema = strict_crd_schema(crd_version(crd)["schema"]["openAPIV3Schema"])
    values = chart.load_values("install-guide")
    # The Secret the guide creates holds exactly the keys the chart reads by default.
    keys = chart.merged_values(values)["secrets"]["existingSecretKeys"]
    assert {k for k in keys.values() if k} == {
        "admin-token", "zoho-client-id", "zoho-client-secret", "zoho-refresh-token"}
    # One `helm upgrade` per step, with its --set / --set-string flags.
    steps = [
        [("set-string", "webhookAutomation.spec.verification.zohoJwt.orgId=700000001"),
         ("set-string", "webhookAutomation.spec.verification.zohoJwt.webhookIds[0]=1892000000123456")],
        [("set", "webhookAutomation.spec.automation.respond=true")],
        [("set", "serviceMonitor.enabled=true,prometheusRule.enabled=true,dashboard.enabled=true"),
         ("set-string", "serviceMonitor.labels.release=kube-prometheus-stack"),
         ("set-string", "prometheusRule.labels.release=kube-prometheus-stack")],
        [("set", "autoscaling.enabled=true,autoscaling.maxReplicas=6")],
    ]
    for step in steps:
        for kind, expression in step:
            parse = helm.parse_set_string_values if kind == "set-string" else helm.parse_set_string
            values = merge(values, parse(expression))
        documents = chart.render(values)
        resource = one(documents, "WebhookAutomation")
        body = {k: v for k, v in resource.items() if k not in ("apiVersion", "kind", "metadata")}
        assert not list(jsonschema.Draft7Validator(schema).iter_errors(body)), step
        for doc in documents:
            if doc.kind not in CUSTOM_KINDS:
                kubernetes_validate.validate(doc.obj, KUBE_VERSIONS[0], strict=True)
    spec = one(documents, "WebhookAutomation")["spec"]
    assert spec["verification"]["zohoJwt"] == {"orgId": "700000001",
                                               "webhookIds": ["1892000000123456"]}
    assert spec["automation"] == {**FLAGS_LEVEL_1, "respond": True}
    assert {"ServiceMonitor", "PrometheusRule", "ConfigMap", "HorizontalPodAutoscaler"} <= set(
        kinds(documents))
    assert "WARNING" not in chart.notes(values)
