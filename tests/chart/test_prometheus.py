"""The chart's alerts against a live Prometheus scraping the real binary.

promtool's unit tests (alerts_test.yaml) check the rules against made-up series; this checks the
whole chain: the metrics deskhook really exports, the rules as the chart renders them (their
`for` scaled down by `prometheusRule.forScalePercent`), Prometheus evaluating them every second.
Clean traffic first, which must leave every alert quiet; then each condition is caused for real
(bad signatures, broken JSON, events without ticket id, a failing step against the Zoho stand-in,
a dead letter, a full queue, revoked Zoho credentials, a refused settings edit, Redis stopped, no
pod left) and its alert must fire.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import shutil
import subprocess
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import yaml

import render as chart
from conftest import one
from fake_zoho import FakeZoho
from pod import OPENER, Pod
from services import RedisServer, free_port

PROMETHEUS = shutil.which("prometheus")
ALERT_TIMEOUT = 90.0
HMAC_KEY = "prometheus-test-key-0123456789abcdef"
HEADER = "X-Zoho-Signature"

VALUES: dict[str, Any] = {
    "secrets": {
        "hmacSecrets": [HMAC_KEY],
        "adminToken": "admin-token-0123456789abcdef0123456789",
        "zohoClientId": "1000.FAKECLIENTID",
        "zohoClientSecret": "fake-client-secret",
        "zohoRefreshToken": "1000.fake-refresh-token",
    },
    "redis": {"urlSecret": {"name": "test-redis"}},
    "webhookAutomation": {"spec": {
        # Suggestions only: every run reads from Zoho and writes nothing.
        "automation": {"dispatch": False, "link": False},
        "zoho": {"region": "com", "orgId": "700000001"},
        # One worker and a queue of 5: a slow Zoho fills it within a few deliveries. One
        # attempt: a failed job is dead-lettered at once.
        "queue": {"capacity": 5, "workers": 1, "redis": {"maxAttempts": 1, "capacity": 5}},
    }},
    "monitoringCapabilityCheck": False,
    "prometheusRule": {
        "enabled": True,
        # 10m becomes 6 s, 1m 1 s: the whole sequence runs in about a minute.
        "forScalePercent": 1,
        "thresholds": {"queueDepth": 2},
    },
}


class Prometheus:
    def __init__(self, directory: Path, target: str, rules: list[dict[str, Any]]):
        assert PROMETHEUS, "prometheus is not installed (Debian package `prometheus`)"
        self.port = free_port()
        (directory / "rules.yaml").write_text(yaml.safe_dump({"groups": rules}))
        config = {
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s",
                       "scrape_timeout": "900ms"},
            "rule_files": [str(directory / "rules.yaml")],
            # As the Prometheus Operator labels the ServiceMonitor's targets.
            "scrape_configs": [{"job_name": "deskhook-admin", "static_configs": [{
                "targets": [target], "labels": {"namespace": "deskhook", "pod": "deskhook-0"}}]}],
        }
        (directory / "prometheus.yml").write_text(yaml.safe_dump(config))
        self.process = subprocess.Popen(
            [PROMETHEUS, f"--config.file={directory / 'prometheus.yml'}",
             f"--storage.tsdb.path={directory / 'data'}",
             f"--web.listen-address=127.0.0.1:{self.port}"],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL)
        self._wait_until(lambda: self._get("/-/ready") is not None, "Prometheus is not ready")
        self._wait_until(lambda: self.query('up{job="deskhook-admin"} == 1'),
                         "Prometheus does not scrape deskhook")

    def _get(self, path: str) -> bytes | None:
        try:
            with OPENER.open(f"http://127.0.0.1:{self.port}{path}", timeout=5) as response:
                return response.read()
        except OSError:
            return None

    def _wait_until(self, condition, what: str, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while not condition():
            assert self.process.poll() is None, self.process.stderr.read().decode()[-2000:]
            assert time.monotonic() < deadline, what
            time.sleep(0.2)

    def query(self, expr: str) -> list[dict[str, Any]]:
        body = self._get(f"/api/v1/query?query={urllib.request.quote(expr)}")
        return json.loads(body)["data"]["result"] if body else []

    def alerts(self) -> dict[str, str]:
        """Active alert name → state (`pending` or `firing`)."""
        found: dict[str, str] = {}
        for alert in json.loads(self._get("/api/v1/alerts"))["data"]["alerts"]:
            name = alert["labels"]["alertname"]
            if found.get(name) != "firing":
                found[name] = alert["state"]
        return found

    def wait_for_firing(self, name: str) -> None:
        deadline = time.monotonic() + ALERT_TIMEOUT
        while (state := self.alerts().get(name)) != "firing":
            assert time.monotonic() < deadline, (
                f"{name} is {state or 'inactive'} after {ALERT_TIMEOUT} s; active: {self.alerts()}")
            time.sleep(0.5)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=20)


def event(ticket_id: str | None, n: int) -> bytes:
    payload: dict[str, Any] = {"subject": "Question sur ma facture", "departmentId":
                               "1892000000006907", "email": "client@example.fr"}
    if ticket_id:
        payload["id"] = ticket_id
    return json.dumps([{"eventType": "Ticket_Add", "eventTime": str(1714560000000 + n),
                        "orgId": "700000001", "payload": payload}]).encode()


def post(pod: Pod, body: bytes, signature: str | None = None) -> int:
    signature = signature or hmac.new(HMAC_KEY.encode(), body, hashlib.sha256).hexdigest()
    request = urllib.request.Request(f"http://{pod.addr['http']}/webhook/zoho-desk", data=body,
                                     headers={"Content-Type": "application/json",
                                              HEADER: signature})
    try:
        with OPENER.open(request, timeout=30) as response:
            return response.status
    except urllib.error.HTTPError as error:
        return error.code


@pytest.fixture(scope="module")
def live(deskhook_bin, tmp_path_factory):
    directory = tmp_path_factory.mktemp("prometheus")
    redis = RedisServer(directory / "redis")
    (directory / "redis").mkdir()
    redis.start()
    zoho = FakeZoho()
    (directory / "pod").mkdir()
    pod = Pod(deskhook_bin, "prometheus", directory / "pod", values=VALUES,
              external={"test-redis": {"redis-url": redis.url}})
    for variable in ("DESKHOOK_ZOHO_ACCOUNTS_URL", "DESKHOOK_ZOHO_DESK_URL",
                     "DESKHOOK_ZOHO_CRM_URL"):
        pod.env[variable] = zoho.url
    pod.start()
    rules = one(pod.documents, "PrometheusRule")["spec"]["groups"]
    prometheus = Prometheus(directory, pod.addr["metrics"], rules)
    try:
        yield pod, prometheus, zoho, redis
    finally:
        prometheus.stop()
        pod.stop()
        zoho.stop()
        redis.stop()


def runs(prometheus: Prometheus, result: str) -> float:
    found = prometheus.query(f'sum(deskhook_workflow_runs_total{{result="{result}"}})')
    return float(found[0]["value"][1]) if found else 0.0


def test_every_alert_fires_on_its_condition_and_none_on_clean_traffic(live):
    pod, prometheus, zoho, redis = live

    # Clean traffic: deliveries verified, queued and run against a healthy Zoho.
    for n in range(6):
        assert post(pod, event(f"19870900043836{n:04d}", n)) == 200
    deadline = time.monotonic() + ALERT_TIMEOUT
    while runs(prometheus, "success") < 6:
        assert time.monotonic() < deadline, f"runs did not succeed: {pod.output()}"
        time.sleep(0.5)
    # Longer than the longest scaled `for` (6 s), over several evaluations.
    quiet_until = time.monotonic() + 10
    while time.monotonic() < quiet_until:
        assert prometheus.alerts() == {}, "an alert is active under clean traffic"
        time.sleep(0.5)

    # Forged deliveries: more than the threshold of 5.
    for n in range(8):
        assert post(pod, event("198709000438366101", 100 + n), signature="0" * 64) == 401
    prometheus.wait_for_firing("DeskhookSignatureFailures")

    broken = b'[{"eventType": '
    assert post(pod, broken) == 400
    prometheus.wait_for_firing("DeskhookPayloadParseErrors")

    assert post(pod, event(None, 200)) == 400
    prometheus.wait_for_firing("DeskhookMissingTicketId")

    # Zoho fails: the fetch step fails, the run fails, and with one attempt it is dead-lettered.
    zoho.mode = "failing"
    assert post(pod, event("198709000438366300", 300)) == 200
    for name in ("DeskhookWorkflowStepErrors", "DeskhookDeadLetters", "DeskhookWorkflowFailing",
                 "DeskhookZohoApiErrors"):
        prometheus.wait_for_firing(name)

    # Zoho answers slowly: one worker, a queue of 5, and more deliveries than that.
    zoho.mode = "slow"
    statuses = [post(pod, event(f"1987090004383664{n:02d}", 400 + n)) for n in range(12)]
    assert 503 in statuses and 200 in statuses, statuses
    for name in ("DeskhookQueueNearlyFull", "DeskhookDeliveriesRefused", "DeskhookQueueBacklog"):
        prometheus.wait_for_firing(name)

    # The refresh token is revoked: the access token is refused, and so is the refresh.
    zoho.mode = "revoked"
    # The queue drains fast now (every job fails at once); a delivery then finds room.
    deadline = time.monotonic() + ALERT_TIMEOUT
    n = 500
    while post(pod, event(f"198709000438366{n}", n)) != 200:
        assert time.monotonic() < deadline, "the queue never had room again"
        n += 1
        time.sleep(0.5)
    prometheus.wait_for_firing("DeskhookZohoCredentialsRejected")

    # A resource edit the pod refuses (a flag that is not a boolean); the last good settings stay.
    resource = pod.workdir / "webhookautomation.yaml"
    broken_edit = yaml.safe_load(resource.read_text())
    broken_edit["spec"]["automation"]["respond"] = "yes"
    resource.write_text(yaml.safe_dump(broken_edit))
    prometheus.wait_for_firing("DeskhookSettingsRejected")

    redis.stop()
    prometheus.wait_for_firing("DeskhookRedisUnreachable")

    # No pod left to scrape.
    pod.stop()
    prometheus.wait_for_firing("DeskhookMetricsAbsent")
