"""What a support team lives with after `helm install`: who owns the WebhookAutomation, several
replicas only on a shared queue, typed resource values, merged labels. Every rendering here is
also validated against Kubernetes' schemas and yamllint's duplicate-key rule."""

from __future__ import annotations

import base64
from typing import Any

import helm_python as helm
import kubernetes_validate
import pytest
import yaml
from yamllint import linter
from yamllint.config import YamlLintConfig

import render as chart
from conftest import kinds, one
from test_chart import CUSTOM_KINDS, KUBE_VERSIONS, container

DUPLICATE_KEYS = YamlLintConfig("rules: {key-duplicates: enable}")
REDIS = {"replicaCount": 2, "redis": {"enabled": True}}


def valid(documents: list[chart.Document]) -> list[chart.Document]:
    """`documents`, after checking each against Kubernetes 1.30 and the newest schemas, and its
    text for duplicate keys."""
    for doc in documents:
        problems = [p for p in linter.run(doc.text, DUPLICATE_KEYS) if p.rule == "key-duplicates"]
        assert not problems, f"{doc}: {[str(p) for p in problems]}"
        if doc.kind in CUSTOM_KINDS:
            continue
        for version in KUBE_VERSIONS:
            try:
                kubernetes_validate.validate(doc.obj, version, strict=True)
            except kubernetes_validate.ValidationError as error:
                pytest.fail(f"{doc} is invalid for Kubernetes {version}: {error.message}")
    return documents


def test_the_duplicate_key_check_can_fail():
    text = "metadata:\n  labels:\n    team: a\n    team: b\n"
    assert [p.rule for p in linter.run(text, DUPLICATE_KEYS)] == ["key-duplicates"]


# --- One owner for the resource ------------------------------------------------------------------


def test_an_install_creates_the_resource_and_keeps_it():
    resource = one(valid(chart.render({})), "WebhookAutomation")
    assert resource["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"


def test_an_upgrade_leaves_a_kubectl_edited_resource_alone():
    """Default owner: an upgrade with other values renders no resource, so Helm neither reverts
    a `kubectl edit` nor (keep) deletes the resource it no longer renders."""
    unrelated = {"server": {"logLevel": "debug"}, "resources": {"limits": {"memory": "1Gi"}},
                 "webhookAutomation": {"spec": {"automation": {"respond": True}}}}
    documents = valid(chart.render(unrelated, upgrade=True))
    assert "WebhookAutomation" not in kinds(documents)
    assert "Deployment" in kinds(documents)
    notes = chart.notes(unrelated, upgrade=True)
    assert "this upgrade left it" in notes and "never renders it again" not in notes
    # The values' spec says nothing about the live resource: no warning drawn from it.
    assert "WARNING: no verification" not in notes


def test_with_values_as_owner_every_upgrade_renders_the_resource():
    values = {"webhookAutomation": {"owner": "values",
                                    "spec": {"automation": {"respond": True}}}}
    resource = one(valid(chart.render(values, upgrade=True)), "WebhookAutomation")
    assert resource["spec"]["automation"]["respond"] is True
    assert "helm.sh/resource-policy" not in (resource["metadata"].get("annotations") or {})


def test_an_unknown_owner_is_refused():
    with pytest.raises(helm.HelmValuesError, match="/webhookAutomation/owner"):
        chart.render({"webhookAutomation": {"owner": "kubectl"}})


# --- Several replicas, safe by construction -------------------------------------------------------


@pytest.mark.parametrize("values,what", [
    ({"replicaCount": 2}, "replicaCount=2"),
    ({"autoscaling": {"enabled": True}}, "autoscaling"),
])
def test_more_than_one_pod_on_the_memory_queue_is_refused(values, what):
    with pytest.raises(helm.HelmRenderError) as refused:
        chart.render(values)
    message = str(refused.value)
    assert f"{what} on the in-memory queue loses and duplicates events" in message
    # The two ways out.
    assert "redis.enabled=true" in message and "redis.urlSecret.name" in message


def test_redis_with_a_memory_backend_says_how_to_switch():
    with pytest.raises(helm.HelmRenderError) as refused:
        chart.render({**REDIS, "webhookAutomation": {"spec": {"queue": {"backend": "memory"}}}})
    assert "kubectl -n deskhook patch webhookautomation deskhook --type merge" in str(refused.value)


def test_the_redis_backend_without_a_redis_is_refused():
    with pytest.raises(helm.HelmRenderError, match="needs a Redis"):
        chart.render({"webhookAutomation": {"spec": {"queue": {"backend": "redis"}}}})


def test_two_redis_sources_are_refused():
    with pytest.raises(helm.HelmRenderError, match="exclusive"):
        chart.render({"redis": {"enabled": True, "urlSecret": {"name": "mine"}}})


def test_two_replicas_with_the_charts_redis_share_its_queue():
    documents = valid(chart.render({**REDIS, "networkPolicy": {"egress": {"enabled": True}}}))
    statefulset = one(documents, "StatefulSet")
    secrets = {d.name: d.obj for d in documents if d.kind == "Secret"}
    redis_secret = secrets["deskhook-redis"]
    assert redis_secret["metadata"]["annotations"] == {"helm.sh/resource-policy": "keep"}
    password = base64.b64decode(redis_secret["data"]["redis-password"]).decode()
    url = base64.b64decode(redis_secret["data"]["redis-url"]).decode()
    assert len(password) >= 32
    assert url == f"redis://:{password}@deskhook-redis.deskhook.svc:6379/0"
    # Redis: the official image, append-only file on a claimed volume, probes, password from
    # the Secret and never in the spec.
    pod = statefulset["spec"]["template"]["spec"]
    [redis] = pod["containers"]
    assert redis["image"].startswith("docker.io/library/redis:")
    assert "--appendonly yes" in redis["args"][0] and "--appendfsync always" in redis["args"][0]
    assert password not in yaml.safe_dump(statefulset)
    assert {e["name"]: e["valueFrom"]["secretKeyRef"]["name"] for e in redis["env"]} == {
        "REDIS_PASSWORD": "deskhook-redis", "REDISCLI_AUTH": "deskhook-redis"}
    assert redis["livenessProbe"] and redis["readinessProbe"]
    [claim] = statefulset["spec"]["volumeClaimTemplates"]
    assert claim["spec"]["resources"]["requests"]["storage"] == "1Gi"
    assert redis["volumeMounts"] == [{"name": "data", "mountPath": "/data"}]
    redis_labels = statefulset["spec"]["template"]["metadata"]["labels"]
    # deskhook's pods get the URL and run the shared queue.
    env = {e["name"]: e for e in container(documents)["env"]}
    assert env["DESKHOOK_REDIS_URL"]["valueFrom"]["secretKeyRef"] == {
        "name": "deskhook-redis", "key": "redis-url"}
    assert env["DESKHOOK_REDIS_KEY_PREFIX"]["value"] == "deskhook"
    assert one(documents, "WebhookAutomation")["spec"]["queue"]["backend"] == "redis"
    assert one(documents, "Deployment")["spec"]["replicas"] == 2
    assert "PodDisruptionBudget" in kinds(documents)
    # Egress from deskhook to Redis; ingress to Redis from deskhook only.
    policies = {d.name: d.obj["spec"] for d in documents if d.kind == "NetworkPolicy"}
    to_redis = [rule for rule in policies["deskhook"]["egress"] if "to" in rule
                and rule["to"][0]["podSelector"]["matchLabels"].items() <= redis_labels.items()]
    assert to_redis and to_redis[0]["ports"] == [{"port": 6379, "protocol": "TCP"}]
    guard = policies["deskhook-redis"]
    assert guard["podSelector"]["matchLabels"].items() <= redis_labels.items()
    pod_labels = one(documents, "Deployment")["spec"]["template"]["metadata"]["labels"]
    assert guard["ingress"][0]["from"][0]["podSelector"]["matchLabels"].items() \
        <= pod_labels.items()
    service = {d.name: d.obj for d in documents if d.kind == "Service"}["deskhook-redis"]
    assert service["spec"]["selector"].items() <= redis_labels.items()


def test_an_external_redis_comes_from_its_secret():
    documents = valid(chart.render({"replicaCount": 3, "redis": {"urlSecret": {
        "name": "team-redis", "key": "url"}, "keyPrefix": "support"}}))
    env = {e["name"]: e for e in container(documents)["env"]}
    assert env["DESKHOOK_REDIS_URL"]["valueFrom"]["secretKeyRef"] == {"name": "team-redis",
                                                                      "key": "url"}
    assert env["DESKHOOK_REDIS_KEY_PREFIX"]["value"] == "support"
    assert "StatefulSet" not in kinds(documents)


def test_a_redis_cluster_is_named_to_the_pods_and_needs_its_url():
    documents = valid(chart.render({"replicaCount": 3, "redis": {
        "urlSecret": {"name": "team-redis", "key": "url"}, "cluster": True}}))
    env = {e["name"]: e for e in container(documents)["env"]}
    assert env["DESKHOOK_REDIS_CLUSTER"]["value"] == "true"
    single = valid(chart.render({"redis": {"urlSecret": {"name": "team-redis"}}}))
    assert "DESKHOOK_REDIS_CLUSTER" not in {e["name"] for e in container(single)["env"]}
    with pytest.raises(helm.HelmRenderError, match="the chart's own Redis is a single server"):
        chart.render({"redis": {"enabled": True, "cluster": True}})


def test_the_charts_redis_refuses_writes_past_its_memory_instead_of_being_killed():
    documents = valid(chart.render({"redis": {"enabled": True}}))
    redis = one(documents, "StatefulSet")["spec"]["template"]["spec"]["containers"][0]
    command = " ".join(redis["args"])
    assert "--maxmemory 200mb --maxmemory-policy noeviction" in command


def test_an_autoscaler_on_redis_uses_a_global_metric():
    documents = valid(chart.render({"redis": {"enabled": True}, "autoscaling": {
        "enabled": True, "customMetric": {"enabled": True}}}))
    types = {m["type"] for m in one(documents, "HorizontalPodAutoscaler")["spec"]["metrics"]}
    assert "External" in types and "Pods" not in types


# --- Typed values ---------------------------------------------------------------------------------


@pytest.mark.parametrize("spec,where", [
    ({"departements": ["DOC"]}, "'departements'"),
    ({"zoho": {"orgId": 700000001}}, "/webhookAutomation/spec/zoho/orgId"),
    ({"queue": {"workers": 1000}}, "/webhookAutomation/spec/queue/workers"),
    ({"routing": [{"name": "x", "then": {"departmnt": "DOC"}}]}, "'departmnt'"),
])
def test_a_mistake_in_the_resource_values_is_refused_naming_the_key(spec, where):
    with pytest.raises(helm.HelmValuesError) as refused:
        chart.render({"webhookAutomation": {"spec": spec}})
    assert where in str(refused.value)
    report = helm.lint(chart.CHART, chart.with_required({"webhookAutomation": {"spec": spec}}),
                       strict=True, kube_version="v1.30.0")
    assert any(where in error for error in report["errors"]), report


def test_the_values_schema_is_generated_from_the_committed_crd():
    import values_schema

    assert (chart.CHART / "values.schema.json").read_text() == values_schema.updated_schema(), (
        "values.schema.json is out of date with the CRD: run `make values-schema`")


def test_the_generated_schema_keeps_the_crds_types_and_closes_every_object():
    import values_schema

    crd = {"spec": {"versions": [{"storage": True, "schema": {"openAPIV3Schema": {
        "properties": {"spec": {"type": "object", "required": ["a"], "properties": {
            "a": {"type": "string", "pattern": "^x$", "nullable": True},
            "b": {"type": "object", "properties": {"c": {"type": "integer", "minimum": 1}}},
            "d": {"type": "object", "additionalProperties": {"type": "string"}},
            "e": {"x-kubernetes-preserve-unknown-fields": True},
        }}}}}}]}}
    assert values_schema.spec_schema(crd) == {
        "type": "object", "additionalProperties": False, "properties": {
            "a": {"type": ["string", "null"], "pattern": "^x$"},
            "b": {"type": "object", "additionalProperties": False,
                  "properties": {"c": {"type": "integer", "minimum": 1}}},
            "d": {"type": "object", "additionalProperties": {"type": "string"}},
            "e": {},
        }}


# --- Labels, ports, extras ------------------------------------------------------------------------


def test_overlapping_label_maps_render_each_key_once(rendered_sets):
    documents = valid(rendered_sets["everything-on"])
    for doc in documents:
        labels = doc.obj["metadata"].get("labels", {})
        if labels:
            # The chart's own labels win over commonLabels.
            assert labels.get("app.kubernetes.io/part-of") == "deskhook", doc
    deployment = one(documents, "Deployment")
    assert deployment["metadata"]["labels"]["team"] == "support"
    assert deployment["spec"]["template"]["metadata"]["labels"]["team"] == "support-pods"


def test_common_labels_overlapping_every_label_the_chart_adds_render_each_key_once():
    overlapping = {"release": "from-common", "app.kubernetes.io/component": "from-common",
                   "grafana_dashboard": "0", "rbac.authorization.k8s.io/aggregate-to-view": "false",
                   "rbac.authorization.k8s.io/aggregate-to-edit": "false"}
    documents = valid(chart.render({
        **REDIS, "commonLabels": overlapping, "monitoringCapabilityCheck": False,
        "serviceMonitor": {"enabled": True, "labels": {"release": "kube-prometheus-stack"}},
        "prometheusRule": {"enabled": True, "labels": {"release": "kube-prometheus-stack"}},
        "dashboard": {"enabled": True}}))
    labels = {(d.kind, d.name): d.obj["metadata"]["labels"] for d in documents}
    # What the chart adds for a purpose wins over commonLabels.
    assert labels[("ServiceMonitor", "deskhook")]["release"] == "kube-prometheus-stack"
    assert labels[("PrometheusRule", "deskhook")]["release"] == "kube-prometheus-stack"
    assert labels[("ConfigMap", "deskhook-dashboard")]["grafana_dashboard"] == "1"
    assert labels[("Service", "deskhook-admin")]["app.kubernetes.io/component"] == "admin"
    assert labels[("StatefulSet", "deskhook-redis")]["app.kubernetes.io/component"] == "queue"
    view = labels[("ClusterRole", "deskhook-deskhook-view")]
    assert view["rbac.authorization.k8s.io/aggregate-to-view"] == "true"
    edit = labels[("ClusterRole", "deskhook-deskhook-edit")]
    assert edit["rbac.authorization.k8s.io/aggregate-to-edit"] == "true"


def test_pods_take_extra_volumes_containers_and_probes(rendered_sets):
    documents = rendered_sets["everything-on"]
    pod = one(documents, "Deployment")["spec"]["template"]["spec"]
    assert [c["name"] for c in pod["containers"]] == ["deskhook", "log-shipper"]
    assert [c["name"] for c in pod["initContainers"]] == ["wait-for-dns"]
    assert {"name": "tmp", "emptyDir": {}} in pod["volumes"]
    assert {"name": "tmp", "mountPath": "/tmp"} in container(documents)["volumeMounts"]
    assert container(documents)["startupProbe"]["httpGet"] == {"path": "/health",
                                                               "port": "metrics"}
    assert pod["priorityClassName"] == "high-priority"


def test_network_destinations_and_limits_reach_the_pods_from_values(rendered_sets):
    env = {e["name"]: e.get("value") for e in container(rendered_sets["everything-on"])["env"]}
    assert env["DESKHOOK_LLM_URL"] == "https://llm.example.com:8443/v1/chat/completions"
    assert env["DESKHOOK_JWKS_URL"] == "https://desk.zoho.eu/api/v1/webhooks/jwks"
    assert env["DESKHOOK_DEAD_LETTER_MAX"] == "5000"
    assert env["DESKHOOK_MAX_BUFFERED_BODY_BYTES"] == "33554432"
    assert env["OTEL_EXPORTER_OTLP_ENDPOINT"] == "http://otel-collector.monitoring:4318"
    defaults = {e["name"] for e in container(rendered_sets["defaults"])["env"]}
    assert not {"DESKHOOK_LLM_URL", "DESKHOOK_DEAD_LETTER_MAX", "DESKHOOK_JWKS_URL"} & defaults


def test_every_value_set_passes_the_duplicate_key_rule_and_both_schemas(rendered_sets):
    for documents in rendered_sets.values():
        valid(documents)


def test_chart_metadata_is_complete():
    metadata = yaml.safe_load((chart.CHART / "Chart.yaml").read_text())
    for field in ("home", "sources", "maintainers", "icon", "kubeVersion", "description"):
        assert metadata.get(field), field
    report = helm.lint(chart.CHART, chart.with_required({}), strict=True, kube_version="v1.30.0")
    assert not [m for m in report["messages"] if m["severity"] >= 1], report["messages"]


