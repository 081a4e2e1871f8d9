"""The Deployment against the real binary: every argument is one `deskhook serve` accepts, the
ports are the ones it listens on, the probes and the Ingress path are routes it serves, and the
termination grace period covers its drain."""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import subprocess
import time
import urllib.request

import pytest

import render as chart
from conftest import VALUE_SETS, one
from pod import OPENER, Pod

# Value sets whose pods can start outside a cluster (defaults configure no verification, and the
# binary rightly refuses to start then).
RUNNABLE = ["everything-on", "existing-secret", "ingress-cert-manager"]


@pytest.fixture(scope="module")
def serve_help(deskhook_bin) -> str:
    result = subprocess.run([str(deskhook_bin), "serve", "--help"], capture_output=True,
                            text=True, timeout=30, check=True)
    return result.stdout


def serve_options(help_text: str) -> dict[str, bool]:
    """`--flag` → whether it takes a value, from `deskhook serve --help`."""
    options = {}
    for match in re.finditer(r"^\s+(?:-\w, )?(--[a-z][a-z0-9-]*)(?: <([A-Z_]+)>)?", help_text,
                             re.MULTILINE):
        options[match.group(1)] = match.group(2) is not None
    return options


def test_help_parser_reads_the_serve_options(serve_help):
    options = serve_options(serve_help)
    assert options["--listen"] is True and options["--insecure-no-verification"] is False
    assert "--no-such-flag" not in options


@pytest.mark.parametrize("value_set", VALUE_SETS)
def test_deployment_arguments_are_accepted_by_deskhook_serve(serve_help, value_set):
    options = serve_options(serve_help)
    container = one(chart.render(chart.load_values(value_set)), "Deployment")["spec"]["template"][
        "spec"]["containers"][0]
    args = container["args"]
    assert args[0] == "serve"
    i = 1
    while i < len(args):
        flag = args[i]
        assert flag in options, (
            f"the Deployment passes {flag}, which `deskhook serve --help` does not list")
        i += 2 if options[flag] else 1
    log_format = args[args.index("--log-format") + 1]
    assert re.search(rf"^\s+- {log_format}\b", serve_help, re.MULTILINE)
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert args[args.index("--listen") + 1] == f"0.0.0.0:{ports['http']}"
    assert args[args.index("--metrics-listen") + 1] == f"0.0.0.0:{ports['metrics']}"


def test_chart_default_ports_are_the_binary_defaults(serve_help):
    """Someone running the image by hand gets the ports the chart and the Dockerfile expose."""
    values = chart.load_values("defaults")
    with_defaults = one(chart.render(values), "Deployment")["spec"]["template"]["spec"][
        "containers"][0]
    ports = {p["name"]: p["containerPort"] for p in with_defaults["ports"]}
    assert "0.0.0.0:5000" in serve_help and ports["http"] == 5000
    assert "0.0.0.0:9090" in serve_help and ports["metrics"] == 9090


@pytest.fixture
def pod(deskhook_bin, tmp_path, request, external_secrets):
    running = Pod(deskhook_bin, request.param, tmp_path, external=external_secrets).start()
    yield running
    running.stop()


@pytest.mark.parametrize("pod", RUNNABLE, indirect=True)
def test_pod_serves_its_probes_and_the_webhook_path(pod):
    http = pod.container["livenessProbe"]["httpGet"]
    status, _ = pod.get(http["port"], http["path"])
    assert status == 200, f"livenessProbe {http} answered {status}"
    # Ready once its Redis has answered (the upkeep's first round), polled as a kubelet does.
    http = pod.container["readinessProbe"]["httpGet"]
    deadline = time.monotonic() + 10
    while (status := pod.get(http["port"], http["path"])[0]) != 200 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert status == 200, f"readinessProbe {http} answered {status}"
    ingress = one(chart.render(chart.load_values("ingress-cert-manager")), "Ingress")
    for path in ingress["spec"]["rules"][0]["http"]["paths"]:
        port = path["backend"]["service"]["port"]["name"]
        # Zoho Desk validates the URL with a GET when the webhook is saved.
        status, body = pod.get(port, path["path"])
        assert status == 200, (path, status, body)
    status, body = pod.get("metrics", "/metrics")
    assert status == 200 and "# TYPE deskhook_" in body
    # Metrics stay off the listener the Ingress exposes.
    assert pod.get("http", "/metrics")[0] == 404


@pytest.mark.parametrize("pod", ["everything-on"], indirect=True)
def test_pod_runs_with_every_credential_of_the_chart(pod):
    schemes = next(e for e in pod.events() if e.get("message") == "deskhook ready")["schemes"]
    assert "hmac" in schemes.lower() and "jwt" in schemes.lower(), schemes
    for value in pod.secret.values():
        assert value not in "\n".join(pod.lines), "a credential appeared in the logs"


@pytest.mark.parametrize("pod", ["existing-secret"], indirect=True)
def test_pod_drains_within_the_termination_grace_period(pod):
    period = pod.spec["terminationGracePeriodSeconds"]
    started = time.monotonic()
    pod.terminate()
    ready = pod.container["readinessProbe"]["httpGet"]
    live = pod.container["livenessProbe"]["httpGet"]
    deadline = started + 2
    while pod.get(ready["port"], ready["path"])[0] != 503:
        assert time.monotonic() < deadline, "readiness did not turn false after SIGTERM"
        time.sleep(0.05)
    # Not ready, but alive: the kubelet must not restart a draining pod.
    assert pod.get(live["port"], live["path"])[0] == 200
    assert pod.process.wait(timeout=period) == 0
    elapsed = time.monotonic() - started
    assert elapsed < period, f"the drain took {elapsed:.1f} s, the pod gets {period} s"


@pytest.mark.parametrize("value_set", RUNNABLE)
def test_pod_in_kube_mode_gets_as_far_as_the_api_server(deskhook_bin, tmp_path, value_set,
                                                        external_secrets):
    """With the Deployment's own command line, `--kube` included, and no cluster to talk to,
    the only thing left to fail is the Kubernetes client: arguments, credentials and settings
    must all have been accepted before it."""
    pod = Pod(deskhook_bin, value_set, tmp_path, external=external_secrets)
    env = {**pod.env, "HOME": str(tmp_path)}  # no kubeconfig, no in-cluster variables
    result = subprocess.run(pod.kube_argv(), env=env, capture_output=True, text=True, timeout=60,
                            stdin=subprocess.DEVNULL)
    output = result.stdout + result.stderr
    assert result.returncode != 0, output
    assert "Kubernetes" in output, (
        "deskhook serve --kube stopped before reaching the Kubernetes client:\n" + output[-2000:])


def test_the_charts_redis_runs_as_rendered_and_the_pods_use_it(deskhook_bin, tmp_path):
    """The chart's Redis command line on a real redis-server (only the address and data
    directory changed), its password enforced, and a pod reaching it with the generated URL."""
    import base64
    import shutil
    import socket

    from services import free_port

    values = {"replicaCount": 2, "redis": {"enabled": True},
              "secrets": {"hmacSecrets": ["0123456789abcdef0123456789abcdef"]}}
    documents = chart.render(values)
    secrets = {d.name: {k: base64.b64decode(v).decode() for k, v in d.obj["data"].items()}
               for d in documents if d.kind == "Secret"}
    [redis] = one(documents, "StatefulSet")["spec"]["template"]["spec"]["containers"]
    assert redis["command"] == ["sh", "-c"]
    port = free_port()
    data = tmp_path / "data"
    data.mkdir()
    script = redis["args"][0].replace("--dir /data", f"--dir {data}")
    script += f" --port {port} --bind 127.0.0.1"
    env = {"PATH": "/usr/bin:/bin"}
    for variable in redis["env"]:
        ref = variable["valueFrom"]["secretKeyRef"]
        env[variable["name"]] = secrets[ref["name"]][ref["key"]]
    server = subprocess.Popen(["sh", "-c", script], env=env, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL)
    try:
        probe = redis["readinessProbe"]["exec"]["command"]
        assert shutil.which(probe[0]), f"{probe[0]} is not installed"
        deadline = time.monotonic() + 10
        while True:
            answer = subprocess.run([probe[0], "-p", str(port), *probe[1:]], env=env,
                                    capture_output=True, text=True, timeout=10)
            if answer.stdout.strip() == "PONG":
                break
            assert time.monotonic() < deadline, answer.stdout + answer.stderr
            time.sleep(0.1)
        # Without the password Redis refuses every command.
        with socket.create_connection(("127.0.0.1", port), timeout=5) as conn:
            conn.sendall(b"PING\r\n")
            assert conn.recv(64).startswith(b"-NOAUTH")
        # The pod reads the URL from the chart's Secret; only the Service's address changes.
        url = secrets["deskhook-redis"]["redis-url"].replace(
            "deskhook-redis.deskhook.svc:6379", f"127.0.0.1:{port}")
        (tmp_path / "pod").mkdir()
        pod = Pod(deskhook_bin, "chart-redis", tmp_path / "pod", values=values,
                  external={"deskhook-redis": {**secrets["deskhook-redis"], "redis-url": url}})
        pod.start()
        try:
            # A delivery is acknowledged only once stored: in this Redis, under the key prefix.
            key = values["secrets"]["hmacSecrets"][0].encode()
            body = json.dumps([{"eventType": "Ticket_Add", "orgId": "700000001",
                                "payload": {"id": "198709000438366101"}}]).encode()
            request = urllib.request.Request(
                f"http://{pod.addr['http']}/webhook/zoho-desk", data=body, headers={
                    "Content-Type": "application/json",
                    "X-Zoho-Signature": hmac.new(key, body, hashlib.sha256).hexdigest()})
            with OPENER.open(request, timeout=10) as response:
                assert response.status == 200
        finally:
            pod.stop()
        stored = subprocess.run([probe[0], "-p", str(port), "--scan", "--pattern", "{deskhook}:*"],
                                env=env, capture_output=True, text=True, timeout=10)
        assert stored.stdout.split(), f"nothing stored in the chart's Redis: {stored.stderr}"
        assert (data / "appendonlydir").is_dir(), "Redis runs without its append-only file"
    finally:
        server.terminate()
        server.wait(timeout=10)
