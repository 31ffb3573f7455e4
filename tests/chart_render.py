"""The Helm chart rendered by the real helm binary, and the tools that check it (setup installs them into the
project's tools directory); a missing tool fails the test with the command that installs it."""

from __future__ import annotations

import functools
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
CHART = ROOT / "helm" / "kafka-mmrag"
VALUES = {path.name.removesuffix("-values.yaml"): path for path in sorted((CHART / "ci").glob("*-values.yaml"))}
RELEASE = "mmrag"
# the Kubernetes the chart is rendered, linted and validated for: the oldest minor its API versions and the pod-index
# label need (Chart.yaml kubeVersion) would be 1.28; this is a supported one above it
KUBE_VERSION = "1.33.0"
# what scripts/setup.sh installs, by tool
INSTALL = {
    "helm": "go install helm.sh/helm/v3/cmd/helm@v3.21.4",
    "kube-score": "go install github.com/zegl/kube-score/cmd/kube-score@v1.20.0",
}
Manifest = dict[str, Any]


def tool(name: str) -> str:
    """The path of ``name``: on PATH or in the project's tools directory; fails the test naming the install step."""
    tools = Path(os.environ.get("MMRAG_CACHE_DIR") or Path.home() / ".cache" / "kafka-mmrag") / "tools" / "bin"
    found = shutil.which(name) or shutil.which(name, path=str(tools))
    if found is None:
        pytest.fail(
            f"[chart tests] {name} is not installed -> run `bash scripts/setup.sh` "
            f"(it runs `GOBIN={tools} {INSTALL[name]}`)"
        )
    return found


def run(args: list[str], stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, input=stdin, capture_output=True, text=True, timeout=120, cwd=ROOT)


@functools.cache
def rendered_text(values: str) -> str:
    """`helm template` of the chart with the ci/ values file ``values`` (hooks included)."""
    done = run(
        [
            tool("helm"),
            "template",
            RELEASE,
            str(CHART),
            "--namespace",
            "mmrag",
            "--kube-version",
            KUBE_VERSION,
            "-f",
            str(VALUES[values]),
        ]
    )
    assert done.returncode == 0, f"helm template with {values}: {done.stderr}"
    return done.stdout


def rendered(values: str) -> list[Manifest]:
    """The rendered objects (empty documents dropped)."""
    return [doc for doc in yaml.safe_load_all(rendered_text(values)) if doc]


def of_kind(objects: list[Manifest], kind: str) -> list[Manifest]:
    return [o for o in objects if o["kind"] == kind]


def pod_specs(objects: list[Manifest]) -> dict[str, dict[str, Any]]:
    """Each workload's pod spec by ``Kind/name`` (a CronJob's from its job template)."""
    specs = {}
    for o in objects:
        if o["kind"] in ("Deployment", "StatefulSet", "Job", "CronJob"):
            spec = o["spec"]["jobTemplate"]["spec"] if o["kind"] == "CronJob" else o["spec"]
            specs[f"{o['kind']}/{o['metadata']['name']}"] = spec["template"]["spec"]
    return specs
