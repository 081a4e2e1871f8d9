"""A pod of the chart run as a local process: the Deployment's own arguments and environment,
its Secret's keys written as the files the kubelet would mount, and loopback listeners.

Only what needs a cluster is changed: `--kube --resource NAME` becomes `--config FILE` with the
rendered WebhookAutomation (so the binary's own settings validation reads the chart's resource),
the listeners bind 127.0.0.1 on ephemeral ports, and the downward API gives fixed names.
"""

from __future__ import annotations

import base64
import json
import os
import signal
import subprocess
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import yaml

import render as chart

READY_TIMEOUT = 60.0
# Loopback only: never through a proxy the environment may name.
OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


class Pod:
    """`external` holds the Secrets the chart does not create (name → key → value), such as the
    one with an external Redis' URL; an existing credentials Secret gets made-up values."""

    def __init__(self, binary: Path, value_set: str, workdir: Path,
                 values: dict[str, Any] | None = None,
                 external: dict[str, dict[str, str]] | None = None):
        self.value_set = value_set
        self.values = chart.load_values(value_set) if values is None else values
        self.documents = chart.render(self.values)
        self.deployment = self._one("Deployment")
        self.spec = self.deployment["spec"]["template"]["spec"]
        self.container = next(c for c in self.spec["containers"] if c["name"] == "deskhook")
        self.ports = {p["name"]: p["containerPort"] for p in self.container["ports"]}
        self.workdir = workdir
        self.secrets = self._secrets(external or {})
        self.secret = self._secret_data()
        self.mounts = self._write_mounts()
        self.argv = [str(binary), *self._args()]
        self.env = self._env()
        self.lines: list[str] = []
        self.process: subprocess.Popen[str] | None = None
        self.addr: dict[str, str] = {}

    # --- what the kubelet would do ---------------------------------------------------------

    def _one(self, kind: str) -> dict[str, Any]:
        [found] = [d.obj for d in self.documents if d.kind == kind]
        return found

    def _secrets(self, external: dict[str, dict[str, str]]) -> dict[str, dict[str, str]]:
        """Every Secret the pod reads, by name: the chart's, the given ones and made-up values
        for an existing credentials Secret's keys."""
        found = {d.name: {k: base64.b64decode(v).decode() for k, v in d.obj["data"].items()}
                 for d in self.documents if d.kind == "Secret"}
        merged = chart.merged_values(self.values)["secrets"]
        if merged["existingSecret"]:
            found[merged["existingSecret"]] = {
                key: f"{name}-value-0123456789abcdef0123456789" for name, key in
                merged["existingSecretKeys"].items() if key}
        return {**found, **external}

    def _secret_data(self) -> dict[str, str]:
        """The credentials Secret's data (the chart's own or the existing one)."""
        merged = chart.merged_values(self.values)["secrets"]
        name = merged["existingSecret"] or self.deployment["metadata"]["name"]
        return self.secrets.get(name, {})

    def _write_mounts(self) -> dict[str, Path]:
        """Container mount path → local directory holding the Secret's items (or, for a
        writable volume, an empty directory)."""
        mounts = {}
        by_name = {v["name"]: v for v in self.spec.get("volumes", [])}
        for mount in self.container.get("volumeMounts", []):
            volume = by_name[mount["name"]]
            local = self.workdir / mount["name"]
            local.mkdir(parents=True, exist_ok=True)
            mounts[mount["mountPath"]] = local
            if "secret" not in volume:
                continue
            data = self.secrets[volume["secret"]["secretName"]]
            for item in volume["secret"]["items"]:
                assert item["key"] in data, f"the Secret has no key {item['key']}"
                (local / item["path"]).write_text(data[item["key"]])
        return mounts

    def _local(self, value: str) -> str:
        for mount_path, local in self.mounts.items():
            if value == mount_path:
                return str(local)
            if value.startswith(mount_path + "/"):
                return str(local / value[len(mount_path) + 1:])
        return value

    def kube_argv(self) -> list[str]:
        """The Deployment's command line as it is, `--kube` included, on loopback listeners."""
        return [self.argv[0], *self._args(keep_kube=True)]

    def _args(self, keep_kube: bool = False) -> list[str]:
        args = list(self.container["args"])
        out = []
        i = 0
        while i < len(args):
            arg = args[i]
            if arg == "--kube" and not keep_kube:
                i += 1
                continue
            if arg == "--resource" and not keep_kube:
                i += 2
                continue
            if arg in ("--listen", "--metrics-listen"):
                out += [arg, "127.0.0.1:0"]
                i += 2
                continue
            out.append(self._local(arg))
            i += 1
        if keep_kube:
            return out
        resource = self.workdir / "webhookautomation.yaml"
        resource.write_text(yaml.safe_dump(self._one("WebhookAutomation")))
        return [*out, "--config", str(resource)]

    def _env(self) -> dict[str, str]:
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin")}
        for var in self.container.get("env", []):
            if "value" in var:
                env[var["name"]] = self._local(var["value"])
                continue
            source = var["valueFrom"]
            if "fieldRef" in source:
                env[var["name"]] = {"metadata.name": "deskhook-0", "metadata.namespace":
                                    "deskhook"}[source["fieldRef"]["fieldPath"]]
            elif "secretKeyRef" in source:
                ref = source["secretKeyRef"]
                env[var["name"]] = self.secrets[ref["name"]][ref["key"]]
            else:
                raise AssertionError(f"unexpected env source {source}")
        return env

    # --- the process ---------------------------------------------------------------------------

    def start(self) -> "Pod":
        self.process = subprocess.Popen(
            self.argv, env=self.env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT, text=True,
        )
        threading.Thread(target=self._follow, daemon=True).start()
        deadline = time.monotonic() + READY_TIMEOUT
        while time.monotonic() < deadline:
            for event in self.events():
                if event.get("message") == "deskhook ready":
                    self.addr = {"http": event["addr"], "metrics": event["metrics_addr"]}
                    return self
            if self.process.poll() is not None:
                time.sleep(0.2)
                raise AssertionError(f"deskhook exited with {self.process.returncode} before "
                                     f"it was ready:\n{self.output()}")
            time.sleep(0.05)
        raise AssertionError(f"deskhook was not ready within {READY_TIMEOUT} s:\n{self.output()}")

    def _follow(self) -> None:
        assert self.process and self.process.stdout
        for line in self.process.stdout:
            self.lines.append(line.rstrip("\n"))

    def events(self) -> list[dict[str, Any]]:
        found = []
        for line in list(self.lines):
            try:
                found.append(json.loads(line))
            except ValueError:
                pass
        return found

    def output(self) -> str:
        return "\n".join(self.lines[-60:])

    def get(self, port_name: str, path: str) -> tuple[int, str]:
        """GET `path` on the listener behind the container port named `port_name`."""
        url = f"http://{self.addr[port_name]}{path}"
        try:
            with OPENER.open(url, timeout=5) as response:
                return response.status, response.read().decode()
        except urllib.error.HTTPError as error:
            return error.code, error.read().decode()

    def terminate(self) -> None:
        assert self.process
        self.process.send_signal(signal.SIGTERM)

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=10)
