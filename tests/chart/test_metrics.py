"""Alerts and dashboard against the binary: every metric they use is one deskhook really exports,
promtool accepts the rules, and the alerts fire (and stay quiet) as intended.

Labelled metrics appear in /metrics only once a label value was used, so the pod is driven first:
a refused delivery, a verified one and a broken one, with the Zoho APIs answered by a local test
double (a token, then server errors), so that every family has had a chance to show up.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import subprocess
import threading
import time
import urllib.error
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import yaml

import render as chart
from conftest import one, require_tool
from pod import OPENER, Pod
from promql import families, family_of, metric_names

FAMILY_TIMEOUT = 30.0


def alert_rules(documents) -> list[dict]:
    rule = one(documents, "PrometheusRule")
    return [r for group in rule["spec"]["groups"] for r in group["rules"]]


def dashboard_exprs() -> list[tuple[str, str]]:
    dashboard = json.loads((chart.CHART / "dashboards" / "deskhook.json").read_text())
    found = [(p["title"], t["expr"]) for p in dashboard["panels"] for t in p.get("targets", [])]
    for variable in dashboard["templating"]["list"]:
        if variable["type"] == "query":
            # label_values(SELECTOR, LABEL): only the selector is PromQL.
            query = re.fullmatch(r"label_values\((.*),\s*\w+\)", variable["query"]["query"])
            found.append((f"${variable['name']}", query.group(1)))
    return found


def test_metric_name_reader():
    assert metric_names(
        'max by (namespace, pod) (deskhook_queue_depth{job="x"} / deskhook_queue_capacity{job="x"})'
        " > 0.8") == {"deskhook_queue_depth", "deskhook_queue_capacity"}
    assert metric_names(
        'histogram_quantile(0.95, sum by (le, api) (rate(deskhook_zoho_request_duration_seconds_bucket'
        '{namespace="$namespace"}[$__rate_interval])))') == {
            "deskhook_zoho_request_duration_seconds_bucket"}
    assert metric_names('absent(up{job="a"}) or vector(0) unless on(job) foo_total offset 5m') == {
        "up", "foo_total"}
    assert metric_names('sum(rate(made_up_total{a="b"}[5m])) by (pod)') == {"made_up_total"}
    known = {"deskhook_x_seconds": "histogram", "deskhook_y_total": "counter"}
    assert family_of("deskhook_x_seconds_bucket", known) == "deskhook_x_seconds"
    assert family_of("deskhook_y_total_bucket", known) is None
    assert family_of("deskhook_made_up_total", known) is None


# --- The pod, driven until its families show --------------------------------------------------


class ZohoDouble(BaseHTTPRequestHandler):
    """Zoho Accounts hands out a token; every API call then fails with a server error."""

    def do_POST(self):  # noqa: N802
        self._answer()

    def do_GET(self):  # noqa: N802
        self._answer()

    def do_PATCH(self):  # noqa: N802
        self._answer()

    def do_PUT(self):  # noqa: N802
        self._answer()

    def _answer(self):
        length = int(self.headers.get("Content-Length") or 0)
        self.rfile.read(length)
        if self.path.startswith("/oauth/v2/token"):
            host = f"http://{self.server.server_address[0]}:{self.server.server_address[1]}"
            status, body = 200, {"access_token": "test-access-token", "expires_in": 3600,
                                 "api_domain": host, "token_type": "Bearer"}
        else:
            status, body = 500, {"errorCode": "INTERNAL_SERVER_ERROR", "message": "test double"}
        payload = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def zoho_double():
    server = ThreadingHTTPServer(("127.0.0.1", 0), ZohoDouble)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def post(pod: Pod, body: bytes, headers: dict[str, str]) -> int:
    request = urllib.request.Request(f"http://{pod.addr['http']}/webhook/zoho-desk", data=body,
                                     headers={"Content-Type": "application/json", **headers})
    try:
        with OPENER.open(request, timeout=10) as response:
            return response.status
    except urllib.error.HTTPError as error:
        return error.code


def needed_families() -> dict[str, list[str]]:
    """Metric name → where it is used, over the alerts of the fullest value set and the dashboard."""
    used: dict[str, list[str]] = {}
    for rule in alert_rules(chart.render(chart.load_values("everything-on"))):
        for name in metric_names(rule["expr"]):
            used.setdefault(name, []).append(f"alert {rule['alert']}")
    for title, expr in dashboard_exprs():
        for name in metric_names(expr):
            used.setdefault(name, []).append(f"panel {title}")
    return used


@pytest.fixture(scope="module")
def exported(deskhook_bin, tmp_path_factory, zoho_double, external_secrets) -> dict[str, str]:
    """Metric families of the everything-on pod after it handled some traffic."""
    pod = Pod(deskhook_bin, "everything-on", tmp_path_factory.mktemp("pod"),
              external=external_secrets)
    for variable in ("DESKHOOK_ZOHO_ACCOUNTS_URL", "DESKHOOK_ZOHO_DESK_URL", "DESKHOOK_ZOHO_CRM_URL"):
        pod.env[variable] = zoho_double
    pod.start()
    try:
        resource = one(pod.documents, "WebhookAutomation")["spec"]
        header = resource["verification"]["hmac"]["header"]
        key = pod.secret["hmac-secrets"].split("\n")[0].encode()

        def signed(body: bytes) -> dict[str, str]:
            return {header: hmac.new(key, body, hashlib.sha256).hexdigest()}

        event = json.dumps([{
            "eventType": "Ticket_Add", "eventTime": "1714560000000", "orgId": "700000001",
            "payload": {"id": "198709000438366101", "subject": "Question sur ma facture",
                        "departmentName": "FACTURATION", "email": "client@example.fr"},
        }]).encode()
        assert post(pod, event, {header: "0" * 64}) == 401
        assert post(pod, event, signed(event)) == 200
        broken = b'[{"eventType": '
        assert post(pod, broken, signed(broken)) == 400
        needed = {name for name in needed_families() if name.startswith("deskhook_")}
        deadline = time.monotonic() + FAMILY_TIMEOUT
        while True:
            status, text = pod.get("metrics", "/metrics")
            assert status == 200
            found = families(text)
            if all(family_of(name, found) for name in needed) or time.monotonic() > deadline:
                return found
            time.sleep(0.5)
    finally:
        pod.stop()


def test_alerts_and_dashboard_use_only_exported_metrics(exported):
    missing = {
        name: where for name, where in needed_families().items()
        if family_of(name, exported) is None
    }
    assert not missing, (
        "used but not exported by `deskhook serve` after traffic:\n"
        + "\n".join(f"  {name}: {', '.join(sorted(set(where)))}" for name, where in
                    sorted(missing.items()))
        + f"\nexported: {', '.join(sorted(exported))}"
    )


def test_every_seed_alert_family_is_exported(exported):
    for name in ("deskhook_signature_failures_total", "deskhook_payload_parse_errors_total",
                 "deskhook_missing_ticket_id_total", "deskhook_webhook_requests_total"):
        assert name in exported, name


# --- promtool ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def promtool() -> str:
    return require_tool("promtool", "Debian package prometheus")


@pytest.fixture(scope="module")
def rules_file(tmp_path_factory, promtool) -> Path:
    directory = tmp_path_factory.mktemp("rules")
    values = chart.load_values("everything-on")
    # Every alert, with the `for` the chart gives it.
    values["prometheusRule"]["alerts"] = {"DeskhookZohoThrottled": {"enabled": True},
                                          "DeskhookQueueBacklog": {"for": "10m"}}
    spec = one(chart.render(values), "PrometheusRule")["spec"]
    path = directory / "deskhook-rules.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def test_rules_pass_promtool_check(rules_file, promtool):
    result = subprocess.run([promtool, "check", "rules", str(rules_file)], capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_alerts_fire_as_intended(rules_file, promtool):
    tests = Path(__file__).resolve().parent / "alerts_test.yaml"
    target = rules_file.parent / "alerts_test.yaml"
    target.write_text(tests.read_text())
    result = subprocess.run([promtool, "test", "rules", str(target)], capture_output=True,
                            text=True, timeout=120, cwd=rules_file.parent)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_dashboard_queries_parse(tmp_path, promtool):
    """promtool has no query checker; each panel query is wrapped in a recording rule instead."""
    rules = []
    for i, (_title, expr) in enumerate(dashboard_exprs()):
        expr = expr.replace("$__rate_interval", "5m").replace("$namespace", "deskhook") \
            .replace("$job", "deskhook")
        rules.append({"record": f"dashboard:panel_{i}", "expr": expr})
    path = tmp_path / "dashboard-rules.yaml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    result = subprocess.run([promtool, "check", "rules", str(path)], capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
