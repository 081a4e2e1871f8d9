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
    """The deskhook container (sidecars may run beside it)."""
    pod = one(documents, "Deployment")["spec"]["template"]["spec"]
    [found] = [c for c in pod["containers"] if c["name"] == "deskhook"]
    return found


def arg_value(args: list[str], flag: str) -> str | None:
    return args[args.index(flag) + 1] if flag in args else None


# --- Helm ------------------------------------------------------------------------------------


@pytest.mark.parametrize("value_set", VALUE_SETS)
def test_helm_lint_strict_passes(value_set):
    report = helm.lint(chart.CHART, chart.with_required(chart.load_values(value_set)),
                       strict=True, kube_version="v1.30.0")
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
    # One pod on the in-memory queue: no PodDisruptionBudget; the generated admin token's Secret.
    assert sorted(kinds(rendered_sets["defaults"])) == sorted([
        "NetworkPolicy", "ServiceAccount", "Secret", "ClusterRole", "ClusterRole", "Role",
        "RoleBinding", "Service", "Service", "Deployment", "WebhookAutomation",
    ])
    assert sorted(kinds(rendered_sets["everything-on"])) == sorted([
        "NetworkPolicy", "PodDisruptionBudget", "ServiceAccount", "Secret", "ConfigMap",
        "ClusterRole", "ClusterRole", "Role", "RoleBinding", "Service", "Service", "Deployment",
        "HorizontalPodAutoscaler", "Ingress", "WebhookAutomation", "ServiceMonitor",
        "PrometheusRule",
    ])


def test_an_install_without_an_image_repository_is_refused():
    with pytest.raises(helm.HelmRenderError, match="image.repository is required: no public"):
        chart.render({}, required=False)


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


def test_one_replica_by_default_and_none_when_autoscaled(rendered_sets):
    assert one(rendered_sets["defaults"], "Deployment")["spec"]["replicas"] == 1
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


def test_defaults_generate_only_an_admin_token(rendered_sets):
    documents = rendered_sets["defaults"]
    secret = one(documents, "Secret")
    assert secret["metadata"]["name"] == "deskhook-admin"
    assert secret["metadata"]["annotations"] == {"helm.sh/resource-policy": "keep"}
    assert set(secret["data"]) == {"admin-token"}
    token = base64.b64decode(secret["data"]["admin-token"]).decode()
    assert re.fullmatch(r"[A-Za-z0-9]{48}", token)
    args = container(documents)["args"]
    assert "--hmac-secret-file" not in args
    assert secret_files(documents) == {"admin-token": arg_value(args, "--admin-token-file")}
    assert "checksum/secret" not in (
        one(documents, "Deployment")["spec"]["template"]["metadata"].get("annotations") or {})
    # NOTES tell how to read it.
    assert ("kubectl -n deskhook get secret deskhook-admin -o jsonpath='{.data.admin-token}' "
            "| base64 -d") in chart.notes({})


def test_an_admin_token_shorter_than_32_characters_is_refused():
    with pytest.raises(helm.HelmValuesError, match="/secrets/adminToken"):
        chart.render({"secrets": {"adminToken": "short-token"}})
    documents = chart.render({"secrets": {"adminToken": "a" * 32}})
    assert "deskhook-admin" not in {d.name for d in documents if d.kind == "Secret"}


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
    # Every credential is a file (re-read on rotation), none an environment variable.
    assert env["ZOHO_CLIENT_ID_FILE"]["value"] == files["zoho-client-id"]
    assert env["ZOHO_CLIENT_SECRET_FILE"]["value"] == files["zoho-client-secret"]
    assert env["ZOHO_REFRESH_TOKEN_FILE"]["value"] == files["zoho-refresh-token"]
    assert env["DESKHOOK_LLM_API_KEY_FILE"]["value"] == files["llm-api-key"]
    assert not {"ZOHO_CLIENT_ID", "DESKHOOK_LLM_API_KEY"} & set(env)
    assert set(files) == set(data)
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
    assert "Secret" not in kinds(documents)  # the admin token too comes from the Secret
    keys = chart.load_values("existing-secret")["secrets"]["existingSecretKeys"]
    args = container(documents)["args"]
    assert "--hmac-secret-file" not in args  # the Secret holds no HMAC key
    files = secret_files(documents)
    assert arg_value(args, "--admin-token-file") == files[keys["adminToken"]]
    pod = one(documents, "Deployment")["spec"]["template"]["spec"]
    assert pod["volumes"][0]["secret"]["secretName"] == "deskhook-credentials"
    env = {e["name"]: e for e in container(documents)["env"]}
    assert env["ZOHO_CLIENT_ID_FILE"]["value"] == files[keys["zohoClientId"]]
    assert env["DESKHOOK_LLM_API_KEY_FILE"]["value"] == files[keys["llmApiKey"]]
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
    # The pods get no cluster-wide rights: the only ClusterRoles are the aggregated ones below.
    assert "ClusterRoleBinding" not in kinds(documents)


def test_aggregated_cluster_roles_let_view_read_and_edit_patch_the_resource(rendered_sets):
    roles = {d.name: d.obj for d in rendered_sets["defaults"] if d.kind == "ClusterRole"}
    view, edit = roles["deskhook-deskhook-view"], roles["deskhook-deskhook-edit"]
    assert view["metadata"]["labels"]["rbac.authorization.k8s.io/aggregate-to-view"] == "true"
    assert normalised_rules(view["rules"]) == {
        ("deskhook.dev", "webhookautomations", verb) for verb in ("get", "list", "watch")}
    labels = edit["metadata"]["labels"]
    assert labels["rbac.authorization.k8s.io/aggregate-to-edit"] == "true"
    assert labels["rbac.authorization.k8s.io/aggregate-to-admin"] == "true"
    assert "rbac.authorization.k8s.io/aggregate-to-view" not in labels
    assert normalised_rules(edit["rules"]) == {
        ("deskhook.dev", "webhookautomations", verb) for verb in ("update", "patch")}
    off = chart.render({"rbac": {"aggregateToDefaultRoles": False}})
    assert "ClusterRole" not in kinds(off)


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


def services(documents) -> dict[str, dict[str, Any]]:
    return {d.name: d.obj for d in documents if d.kind == "Service"}


def test_the_webhook_service_publishes_only_the_webhook_port(rendered):
    found = services(rendered)
    pod_labels = one(rendered, "Deployment")["spec"]["template"]["metadata"]["labels"]
    webhook, admin = found["deskhook"], found["deskhook-admin"]
    for service in (webhook, admin):
        assert service["spec"]["selector"].items() <= pod_labels.items()
    assert {p["name"]: p["targetPort"] for p in webhook["spec"]["ports"]} == {"http": "http"}
    # Metrics, console and admin API: their own Service, never published outside the cluster.
    assert {p["name"]: p["targetPort"] for p in admin["spec"]["ports"]} == {"metrics": "metrics"}
    assert admin["spec"]["type"] == "ClusterIP"
    published = services(chart.render({"service": {"type": "LoadBalancer"}}))
    assert [p["name"] for p in published["deskhook"]["spec"]["ports"]] == ["http"]
    assert published["deskhook-admin"]["spec"]["type"] == "ClusterIP"


def test_the_admin_listener_accepts_the_admin_service_names(rendered_sets):
    env = {e["name"]: e.get("value") for e in container(rendered_sets["everything-on"])["env"]}
    assert env["DESKHOOK_ADMIN_ALLOWED_HOSTS"].split(",") == [
        "deskhook-admin", "deskhook-admin.deskhook", "deskhook-admin.deskhook.svc",
        "deskhook-admin.deskhook.svc.cluster.local", "deskhook.internal.example.com"]


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
    assert path["backend"]["service"] == {"name": "deskhook", "port": {"name": "http"}}
    assert "deskhook" in services(documents)


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
    # DNS, HTTPS, the API server, the external Redis, the LLM's and the collector's own ports,
    # and the extra rule.
    assert {(53, "UDP"), (53, "TCP"), (443, "TCP"), (6443, "TCP"), (6379, "TCP"), (8443, "TCP"),
            (4318, "TCP"), (8000, "TCP")} == egress_ports
    assert {"to": [{"ipBlock": {"cidr": "10.20.0.0/16"}}],
            "ports": [{"port": 8000, "protocol": "TCP"}]} in policy["egress"]
    assert policy["policyTypes"] == ["Ingress", "Egress"]


def test_a_network_policy_guards_the_pods_by_default(rendered_sets):
    policy = one(rendered_sets["defaults"], "NetworkPolicy")["spec"]
    assert policy["policyTypes"] == ["Ingress"]
    assert {rule["ports"][0]["port"] for rule in policy["ingress"]} == {"http", "metrics"}


# --- Scaling ---------------------------------------------------------------------------------


def test_autoscaler_scales_the_deployment_on_cpu_and_a_custom_metric(rendered_sets):
    documents = rendered_sets["everything-on"]
    hpa = one(documents, "HorizontalPodAutoscaler")
    assert next(d for d in documents if d.kind == "HorizontalPodAutoscaler").obj["apiVersion"] \
        == "autoscaling/v2"
    assert hpa["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment",
                                             "name": one(documents, "Deployment")["metadata"]["name"]}
    assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (3, 12)
    # The shared queue's depth is global: an External metric divided by the replicas, never a
    # per-pod average that grows with the pods themselves.
    assert "Pods" not in {m["type"] for m in hpa["spec"]["metrics"]}
    [external] = [m["external"] for m in hpa["spec"]["metrics"] if m["type"] == "External"]
    assert external["metric"]["name"] == "deskhook_queue_depth"
    assert external["metric"]["selector"] == {"matchLabels": {
        "namespace": "deskhook", "service": "deskhook-admin"}}
    assert external["target"] == {"type": "AverageValue", "averageValue": "100"}
    resources = {m["resource"]["name"] for m in hpa["spec"]["metrics"] if m["type"] == "Resource"}
    assert resources == {"cpu", "memory"}


def test_autoscaler_defaults_to_cpu_only():
    documents = chart.render({"autoscaling": {"enabled": True}, "redis": {"enabled": True}})
    metrics = one(documents, "HorizontalPodAutoscaler")["spec"]["metrics"]
    assert metrics == [{"type": "Resource", "resource": {
        "name": "cpu", "target": {"type": "Utilization", "averageUtilization": 70}}}]


def test_disruption_budget_selects_the_pods_and_needs_two():
    documents = chart.render({"replicaCount": 2, "redis": {"enabled": True}})
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
    service = services(documents)["deskhook-admin"]
    assert monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    webhook = services(documents)["deskhook"]
    assert not monitor["spec"]["selector"]["matchLabels"].items() <= webhook["metadata"]["labels"].items()
    assert monitor["spec"]["namespaceSelector"]["matchNames"] == [service["metadata"]["namespace"]]
    [endpoint] = monitor["spec"]["endpoints"]
    assert endpoint["port"] in {p["name"] for p in service["spec"]["ports"]}
    assert endpoint["port"] == "metrics" and endpoint["path"] == "/metrics"
    assert re.fullmatch(r"\d+[smh]", endpoint["interval"])
    assert set(monitor) == {"apiVersion", "kind", "metadata", "spec"}
    assert set(monitor["spec"]) <= {"namespaceSelector", "selector", "endpoints", "jobLabel"}


SEED_ALERTS = {"DeskhookSignatureFailures", "DeskhookPayloadParseErrors", "DeskhookMissingTicketId",
               "DeskhookWorkflowFailing"}
MORE_ALERTS = {"DeskhookSettingsNotApplied", "DeskhookQueueBacklog", "DeskhookZohoApiErrors"}
QUEUE_ALERTS = {"DeskhookDeadLetters", "DeskhookRedisUnreachable", "DeskhookLeasesLost"}


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
            assert set(alert) == {"alert", "expr", "for", "labels", "annotations"}, alert
            assert isinstance(alert["expr"], str) and alert["expr"].strip()
            assert re.fullmatch(r"\d+s", alert["for"]), alert
            assert alert["labels"]["severity"] in {"critical", "warning", "info"}
            assert alert["labels"]["team"] == "support"
            assert alert["annotations"]["summary"] and alert["annotations"]["description"]
            assert alert["annotations"]["runbook_url"].endswith(f"#{alert['alert'].lower()}")
            assert 'namespace="deskhook",job="deskhook-admin"' in alert["expr"]
            names.add(alert["alert"])
    assert SEED_ALERTS | MORE_ALERTS | QUEUE_ALERTS <= names
    # Switched off alone, and a `for` of its own.
    assert "DeskhookZohoThrottled" not in names
    backlog = next(a for a in rule["spec"]["groups"][0]["rules"]
                   if a["alert"] == "DeskhookQueueBacklog")
    assert backlog["for"] == "1800s"


def test_every_alert_has_a_runbook_section():
    runbooks = (chart.ROOT / "docs" / "runbooks.md").read_text()
    anchors = {re.sub(r"[^a-z0-9 -]", "", line[3:].strip().lower()).replace(" ", "-")
               for line in runbooks.splitlines() if line.startswith("## ")}
    rule = one(chart.render({"prometheusRule": {"enabled": True},
                             "monitoringCapabilityCheck": False}), "PrometheusRule")
    for alert in rule["spec"]["groups"][0]["rules"]:
        anchor = alert["annotations"]["runbook_url"].rsplit("#", 1)[1]
        assert anchor in anchors, f"docs/runbooks.md has no section for {alert['alert']}"
        section = runbooks.split(f"## {alert['alert']}\n", 1)[1].split("\n## ", 1)[0]
        for part in ("Meaning", "Check", "Act"):
            assert f"**{part}**" in section, (alert["alert"], part)


def test_monitoring_objects_wait_for_the_prometheus_operator_api():
    values = {"serviceMonitor": {"enabled": True}, "prometheusRule": {"enabled": True}}
    assert not {"ServiceMonitor", "PrometheusRule"} & set(kinds(chart.render(values)))
    assert "were NOT created" in chart.notes(values)
    forced = chart.render({**values, "monitoringCapabilityCheck": False})
    assert {"ServiceMonitor", "PrometheusRule"} <= set(kinds(forced))


def test_dashboard_is_shipped_for_the_grafana_sidecar(rendered_sets):
    configmap = one(rendered_sets["everything-on"], "ConfigMap")
    assert configmap["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert configmap["metadata"]["annotations"] == {"grafana_folder": "Support"}
    dashboard = json.loads(configmap["data"]["deskhook.json"])
    assert dashboard == json.loads((chart.CHART / "dashboards" / "deskhook.json").read_text())
    titles = {p["title"] for p in dashboard["panels"]}
    assert {"Deliveries by outcome", "Events by status", "Workflow runs by result",
            "Workflow errors by step", "Flags in force per pod", "Queue depth per pod",
            "Zoho request latency", "Dead letters", "Redis reachable and leases lost"} <= titles
    for panel in dashboard["panels"]:
        if panel["type"] != "row":
            assert panel["datasource"]["uid"] == "${datasource}"


# --- NOTES ---------------------------------------------------------------------------------------


def test_notes_give_the_webhook_url_and_the_rollout_commands():
    text = chart.notes(chart.load_values("ingress-cert-manager"))
    assert "https://hooks.example.org/webhook/zoho-desk" in text
    # The default owner: kubectl patches the resource, which the chart never renders again.
    assert "kubectl -n deskhook patch webhookautomation deskhook" in text
    assert "never renders it again" in text
    assert "--set webhookAutomation.spec.automation.respond=true" not in text
    assert "kubectl apply --server-side -f charts/deskhook/crds/" in text
    assert "--reset-then-reuse-values" in text and "--reuse-values \\" not in text
    by_values = chart.notes({**chart.load_values("ingress-cert-manager"),
                             "webhookAutomation": {"owner": "values"}})
    assert "--set webhookAutomation.spec.automation.respond=true" in by_values
    assert "field-manager conflict" in by_values
    assert "WARNING" not in text
    assert "WARNING: no verification is configured" in chart.notes({})
    guide = chart.notes(chart.load_values("install-guide"))
    assert "WARNING: no verification is configured" in guide
    # The existing Secret holds the admin token.
    assert "localhost:9090/webhook/decisions" in guide
    assert "get secret deskhook-credentials -o jsonpath='{.data.admin-token}'" in guide


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


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386 JSON merge patch, as `kubectl patch --type merge` applies it."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = copy.deepcopy(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


# The README's `kubectl patch` commands of the install guide, in order.
GUIDE_PATCHES = [
    {"spec": {"verification": {"zohoJwt": {"orgId": "700000001",
                                           "webhookIds": ["1892000000123456"]}}}},
    {"spec": {"automation": {"respond": True}}},
]
# Its `helm upgrade --reset-then-reuse-values` steps, with their --set / --set-string flags.
GUIDE_UPGRADES = [
    [("set", "serviceMonitor.enabled=true,prometheusRule.enabled=true,dashboard.enabled=true"),
     ("set-string", "serviceMonitor.labels.release=kube-prometheus-stack"),
     ("set-string", "prometheusRule.labels.release=kube-prometheus-stack")],
    [("set", "redis.enabled=true,autoscaling.enabled=true,autoscaling.maxReplicas=6")],
]


def test_install_guide_steps_render_valid_objects(crd):
    """The README's guide step by step: the install, `kubectl patch` on the resource it created,
    then `helm upgrade`s that leave the resource alone."""
    readme = (chart.ROOT / "README.md").read_text()
    schema = strict_crd_schema(crd_version(crd)["schema"]["openAPIV3Schema"])
    values = chart.load_values("install-guide")
    # The Secret the guide creates holds exactly the keys the chart reads by default.
    keys = chart.merged_values(values)["secrets"]["existingSecretKeys"]
    assert {k for k in keys.values() if k} == {
        "admin-token", "zoho-client-id", "zoho-client-secret", "zoho-refresh-token"}
    resource = one(chart.render(values), "WebhookAutomation")
    for patch in GUIDE_PATCHES:
        assert f"-p '{json.dumps(patch, separators=(',', ':'))}'" in readme, patch
        resource = merge_patch(resource, patch)
        body = {k: v for k, v in resource.items() if k not in ("apiVersion", "kind", "metadata")}
        assert not list(jsonschema.Draft7Validator(schema).iter_errors(body)), patch
    assert resource["spec"]["verification"]["zohoJwt"] == {"orgId": "700000001",
                                                           "webhookIds": ["1892000000123456"]}
    assert resource["spec"]["automation"] == {**FLAGS_LEVEL_1, "respond": True}
    # The cluster of the guide serves the Prometheus Operator's API; offline, say so.
    values = merge(values, {"monitoringCapabilityCheck": False})
    for step in GUIDE_UPGRADES:
        for kind, expression in step:
            assert f"--{kind} {expression}" in readme, expression
            parse = helm.parse_set_string_values if kind == "set-string" else helm.parse_set_string
            values = merge(values, parse(expression))
        documents = chart.render(values, upgrade=True)
        assert "WebhookAutomation" not in kinds(documents), "an upgrade rendered the resource"
        for doc in documents:
            if doc.kind not in CUSTOM_KINDS:
                kubernetes_validate.validate(doc.obj, KUBE_VERSIONS[0], strict=True)
    assert {"ServiceMonitor", "PrometheusRule", "ConfigMap", "HorizontalPodAutoscaler",
            "StatefulSet"} <= set(kinds(documents))
