"""The Helm chart renders for each ci/ values file (minimal, production: Strimzi + KEDA + SASL_SSL Kafka + gRPC TLS,
gpu: GPU vision embedders + Faiss shards) into objects that pass the real schemas: core kinds against Kubernetes'
(kubernetes-validate), Strimzi/KEDA/Prometheus Operator kinds against their CRDs vendored in deploy/schemas, with
unknown fields refused as the API server's strict field validation does; `helm lint --strict` and kube-score pass."""

from __future__ import annotations

import copy
import functools
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml

from deploy.generate import stale_files
from tests.chart_render import CHART, KUBE_VERSION, ROOT, VALUES, Manifest, rendered, rendered_text, run, tool

pytestmark = pytest.mark.unit
SCHEMAS = ROOT / "deploy" / "schemas"


def test_generated_parts_are_in_step_with_the_code() -> None:
    assert stale_files() == [], "run `uv run --frozen python -m deploy.generate`"


def _strict(schema: Any) -> Any:
    """``schema`` with unknown properties refused wherever the CRD does not keep them (the API server prunes
    them silently; kubectl --validate=strict refuses them: a misspelt field must not pass)."""
    if isinstance(schema, dict):
        schema = {k: _strict(v) for k, v in schema.items()}
        keeps = schema.get("x-kubernetes-preserve-unknown-fields") or "additionalProperties" in schema
        if "properties" in schema and not keeps:
            schema["additionalProperties"] = False
        return schema
    if isinstance(schema, list):
        return [_strict(item) for item in schema]
    return schema


@functools.cache
def crd_schemas() -> dict[tuple[str, str], Any]:
    """(apiVersion, kind) -> the strict openAPIV3Schema of each vendored CRD version that is served."""
    found = {}
    for path in sorted(SCHEMAS.glob("*/*.yaml")):
        crd = yaml.safe_load(path.read_text())
        if crd.get("kind") != "CustomResourceDefinition":
            continue
        for version in crd["spec"]["versions"]:
            if version.get("served", True):
                schema = copy.deepcopy(version["schema"]["openAPIV3Schema"])
                schema["properties"]["metadata"] = {"type": "object"}
                key = (f"{crd['spec']['group']}/{version['name']}", crd["spec"]["names"]["kind"])
                found[key] = _strict(schema)
    return found


def validate(obj: Manifest) -> None:
    """Raises when ``obj`` does not pass its kind's schema (a CRD's or Kubernetes')."""
    key = (obj["apiVersion"], obj["kind"])
    if key in crd_schemas():
        jsonschema.Draft7Validator(crd_schemas()[key]).validate(obj)
    else:
        kubernetes_validate.validate(obj, KUBE_VERSION, strict=True)


@pytest.mark.parametrize("values", sorted(VALUES))
def test_every_rendered_object_passes_its_schema(values: str) -> None:
    objects = rendered(values)
    assert len(objects) > 20
    failures = []
    for obj in objects:
        try:
            validate(obj)
        except (jsonschema.ValidationError, kubernetes_validate.ValidationError) as exc:
            failures.append(f"{obj['kind']}/{obj['metadata']['name']}: {str(exc)[:300]}")
    assert failures == []


def test_a_misspelt_field_is_refused() -> None:
    """The validators can fail: a typo in a ScaledObject and in a Deployment does not pass."""
    objects = rendered("production")
    scaled = copy.deepcopy(next(o for o in objects if o["kind"] == "ScaledObject"))
    scaled["spec"]["maxReplicas"] = scaled["spec"].pop("maxReplicaCount")
    with pytest.raises(jsonschema.ValidationError, match="maxReplicas"):
        validate(scaled)
    deployment = copy.deepcopy(next(o for o in objects if o["kind"] == "Deployment"))
    deployment["spec"]["template"]["spec"]["containers"][0]["resource"] = {}
    with pytest.raises(kubernetes_validate.ValidationError):
        validate(deployment)


def test_every_kind_rendered_has_a_schema_checked() -> None:
    kinds = {(o["apiVersion"], o["kind"]) for v in VALUES for o in rendered(v)}
    core = {"v1", "apps/v1", "batch/v1", "policy/v1", "autoscaling/v2", "networking.k8s.io/v1"}
    custom = {k for k in kinds if k[0] not in core}
    assert custom <= set(crd_schemas()), custom - set(crd_schemas())
    assert {k for _, k in custom} >= {"KafkaTopic", "ScaledObject", "TriggerAuthentication", "ServiceMonitor"}


@pytest.mark.parametrize("values", sorted(VALUES))
def test_helm_lint_strict(values: str) -> None:
    done = run(
        [tool("helm"), "lint", "--strict", "--kube-version", KUBE_VERSION, str(CHART), "-f", str(VALUES[values])]
    )
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.mark.parametrize("values", sorted(VALUES))
def test_kube_score_finds_nothing_unjustified(values: str) -> None:
    """kube-score's critical and warning findings are fixed in the chart, or justified there by a
    `kube-score/ignore` annotation on the object (each with its reason beside it)."""
    done = run([tool("kube-score"), "score", "--output-format", "ci", "-"], stdin=rendered_text(values))
    findings = [line for line in done.stdout.splitlines() if line.startswith(("[CRITICAL]", "[WARNING]"))]
    assert findings == [], "\n".join(findings)


def test_the_chart_files_are_the_generated_ones() -> None:
    """The templates read generated data only through .Files: nothing under generated/ is hand-made."""
    for path in (CHART / "generated").glob("*.yaml"):
        assert path.read_text().startswith("# Generated by `python -m deploy.generate`"), path


def test_vendored_schemas_name_their_version() -> None:
    sources = (SCHEMAS / "SOURCES.md").read_text()
    for directory in sorted(p for p in SCHEMAS.iterdir() if p.is_dir()):
        assert directory.name in sources, directory
        assert any(Path(directory).iterdir())
