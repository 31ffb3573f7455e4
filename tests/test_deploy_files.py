"""The deploy files run every long-running deployable the local stack runs (a service missing there is a feature
missing in a deployment: without LLM workers every Ask is degraded), each by its `mmrag` subcommand."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import pytest
import yaml

from local_stack.stack import SHARD_WORKERS, STACK_SERVICES, TEXT_LANES
from operator_cli.deployables import SERVICE_MODULES

pytestmark = pytest.mark.unit
ROOT = Path(__file__).resolve().parents[1]


def command(name: str) -> str:
    return name.replace("_", "-")


def stack_services() -> set[str]:
    """What `mmrag stack up` runs with Milvus (the deploy files' index backend), as `mmrag` subcommands."""
    return {command(n) for n in (*STACK_SERVICES, *SHARD_WORKERS["milvus"])}


def test_compose_runs_every_service_of_the_stack() -> None:
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    ours = [s for s in compose["services"].values() if s.get("image") == "kafka-mmrag:latest"]
    commands = {s["command"][0] for s in ours}
    assert commands <= {command(n) for n in SERVICE_MODULES}
    assert stack_services() - {"sqs-bridge"} <= commands  # compose's source is MinIO's webhook


def test_helm_values_name_every_service_of_the_stack() -> None:
    values = yaml.safe_load((ROOT / "helm/kafka-mmrag/values.yaml").read_text())
    commands = {cfg.get("command", name) for name, cfg in values["deployables"].items()}
    deployables = commands | {"retrieval-worker"}  # shards: a Deployment per shard
    assert deployables <= {command(n) for n in SERVICE_MODULES}
    assert stack_services() <= deployables


def test_deploy_files_run_the_text_lanes_the_stack_runs() -> None:
    lanes = sorted(lane for _, lane in TEXT_LANES)
    assert lanes == ["heavy", "light"]
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    text = [s for s in compose["services"].values() if s.get("command") == ["text-embedder"]]
    assert sorted(s["environment"]["MMRAG_LANE"] for s in text) == lanes
    assert all(s["environment"]["MMRAG_BOOTSTRAP_SERVERS"] == "kafka:9092" for s in text)  # the shared env too
    values = yaml.safe_load((ROOT / "helm/kafka-mmrag/values.yaml").read_text())
    helm = [cfg for name, cfg in values["deployables"].items() if cfg.get("command", name) == "text-embedder"]
    assert sorted(cfg["env"]["MMRAG_LANE"] for cfg in helm) == lanes
    template = (ROOT / "helm/kafka-mmrag/templates/deployments.yaml").read_text()
    assert "$cfg.command | default $name" in template and "range $k, $v := $cfg.env" in template


def dockerfile_stages() -> dict[str, str]:
    """The Dockerfile's stages by name (`FROM ... AS name`), each its text."""
    stages: dict[str, str] = {}
    name = ""
    for line in (ROOT / "Dockerfile").read_text().splitlines():
        if line.startswith("FROM "):
            name = line.split(" AS ")[-1].strip()
            stages[name] = ""
        elif name:
            stages[name] += line + "\n"
    return stages


def test_the_image_installs_what_the_deployables_need_from_apt() -> None:
    stages = dockerfile_stages()
    # redis-server: the tests' cache; prometheus: the local stack's monitoring
    needed = set((ROOT / "scripts/apt-packages.txt").read_text().split()) - {"redis-server", "prometheus"}
    assert all(package in stages["runtime-base"] for package in needed)
    assert "cmake" in stages["build"] and "g++" in stages["build"]  # llama-cpp-python's build, left in its stage
    assert "cmake" not in stages["runtime-base"] + stages["runtime"]


def test_the_image_runs_as_a_non_root_user_in_both_variants() -> None:
    stages = dockerfile_stages()
    for target in ("runtime", "gpu"):
        assert "USER 10001:10001" in stages[target], target
    assert "consumers.llm_worker.native_build" in stages["build"]  # the portable llama.cpp check
    instructions = [line.split()[0] for line in (ROOT / "Dockerfile").read_text().splitlines() if line[:1].isalpha()]
    assert "HEALTHCHECK" not in instructions  # Kubernetes probes /healthz and /readyz
    assert list(stages)[-1] == "runtime"  # a plain `docker build` gives the CPU image


def test_the_image_carries_the_extras_its_deployables_import() -> None:
    sync = next(line for line in (ROOT / "Dockerfile").read_text().splitlines() if "uv sync" in line)
    assert "--no-dev" in sync and "--extra llm" in sync and "--extra faiss" in sync, sync


def test_compose_file_passes_the_compose_specification_schema() -> None:
    """docker-compose.yml against the Compose specification's JSON schema (deploy/schemas, vendored from compose-go,
    the library Docker Compose validates with); the validator refuses a misspelt key, so it can fail."""
    schema_path = next((ROOT / "deploy/schemas").glob("compose-spec-*/compose-spec.json"))
    validator = jsonschema.Draft202012Validator(json.loads(schema_path.read_text()))
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    assert [e.message for e in validator.iter_errors(compose)] == []
    broken = {**compose, "services": {**compose["services"], "normalizer": {**compose["services"]["normalizer"]}}}
    broken["services"]["normalizer"]["restart_policy"] = "always"
    assert any("restart_policy" in e.message for e in validator.iter_errors(broken))
