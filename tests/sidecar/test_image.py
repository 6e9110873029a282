"""The Dockerfile, read statically: no container engine runs on this machine and no registry
serves base images, so the image is not built here; the sidecar tests run its entrypoint
exactly as the image does (tests/sidecar/image.py) inside a pod."""
from __future__ import annotations

import json

import pytest

from .image import DOCKERFILE, runtime, stages

pytestmark = [pytest.mark.sidecar]


def test_the_image_is_built_in_two_stages_and_runs_as_app_meshs_ignored_uid():
    build, run = stages()
    assert build.name == "build" and run.copies_from == ["build"]  # extensions compiled in stage 1 only
    assert run.base == build.base  # the same Python ABI the extensions were built for
    assert run.user == "1337:1337"
    assert run.entrypoint + run.cmd == ["meshd", "sidecar"]
    assert {"15000", "15001", "15443", "9901"} <= set(run.expose)
    assert run.env["MESHD_STATE_DIR"] == "/var/run/meshd" and run.env["PYTHONDONTWRITEBYTECODE"] == "1"
    text = DOCKERFILE.read_text()
    runtime_part = text[text.rindex("FROM "):]
    assert "build-essential" not in runtime_part and "-dev" not in runtime_part  # no toolchain shipped


def test_the_images_healthcheck_is_the_task_definitions_probe():
    td = json.loads((DOCKERFILE.parent / "deploy" / "ecs" / "task-definition.json").read_text())
    envoy = next(c for c in td["containerDefinitions"] if c["name"] == "envoy")
    assert envoy["healthCheck"]["command"] == ["CMD-SHELL", runtime().healthcheck]


def test_the_build_context_leaves_out_local_state():
    ignored = (DOCKERFILE.parent / ".dockerignore").read_text().split()
    for entry in (".venv", ".git", "build", "**/*.so", "**/*.c", "tests"):
        assert entry in ignored
