"""Properties of the rendered chart, checked against the code it deploys: every deployable the local stack runs has
a workload; every consumer group one ScaledObject with the group and topic the code uses; every registered topic a
KafkaTopic with the settings `mmrag topics` gives it; no secret in a ConfigMap or an env literal; every container
probed, sized and non-root; the rules and dashboard carried unchanged."""

from __future__ import annotations

import importlib
import json
import re
from dataclasses import replace
from typing import Any

import pytest
import yaml
from pydantic import SecretStr
from pydantic_settings import BaseSettings

from deploy.chart_data import _sources, consumer_groups
from local_stack.stack import SHARD_WORKERS, STACK_SERVICES
from mmrag.access import DECLARATIONS, Principal, resolve
from mmrag.topics import SPACE_OWNED, SPECS, Topics, min_insync_for, topic_config
from tests.chart_render import CHART, VALUES, Manifest, of_kind, pod_specs, rendered

pytestmark = pytest.mark.unit


def values_of(name: str) -> dict[str, Any]:
    """The chart's values with the ci/ file ``name`` on top (top-level keys replaced, as far as these tests read)."""
    base = yaml.safe_load((CHART / "values.yaml").read_text())
    extra = yaml.safe_load(VALUES[name].read_text()) or {}
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            base[key] = {**base[key], **value}
        else:
            base[key] = value
    return base


def commands(objects: list[Manifest]) -> set[str]:
    return {c["args"][0] for spec in pod_specs(objects).values() for c in spec["containers"]}


@pytest.mark.parametrize("values", sorted(VALUES))
def test_every_deployable_of_the_stack_has_a_workload(values: str) -> None:
    backend = values_of(values)["indexBackend"]
    wanted = {n.replace("_", "-") for n in (*STACK_SERVICES, *SHARD_WORKERS[backend])}
    assert wanted <= commands(rendered(values))


def scaled_objects(values: str) -> dict[str, Manifest]:
    return {o["metadata"]["name"]: o for o in of_kind(rendered(values), "ScaledObject")}


def test_every_consumer_group_has_one_scaled_object_with_its_group_and_topic() -> None:
    values = values_of("production")
    prefix, space, shards = values["topicPrefix"], values["jobs"]["reindex"]["space"], values["shards"]
    from consumers.retrieval_worker.handler import RetrievalWorkerSettings

    wanted = {(g["group"], g["topic"]) for name, g in consumer_groups(prefix).items() if name != "retrieval-shard"}
    wanted |= {
        (s.group_id(s.group), s.topics.search_requests)
        for s in (RetrievalWorkerSettings(shard=k, topic_prefix=prefix) for k in range(shards))
    }
    space_stages = ("text-embedder", "text-embedder-heavy", "vision-embedder", "index-updater")
    wanted |= {(g["group"], g["topic"]) for n, g in consumer_groups(prefix, space).items() if n in space_stages}
    triggers = [o["spec"]["triggers"] for o in scaled_objects("production").values()]
    assert all(len(t) == 1 for t in triggers)
    found = [(t[0]["metadata"]["consumerGroup"], t[0]["metadata"]["topic"]) for t in triggers]
    assert sorted(found) == sorted(wanted)  # each group exactly once


def test_scaled_objects_target_their_workload_and_never_exceed_the_partitions() -> None:
    objects = rendered("production")
    workloads = {(o["kind"], o["metadata"]["name"]) for o in objects if o["kind"] in ("Deployment", "StatefulSet")}
    topics = {o["spec"]["topicName"]: o["spec"]["partitions"] for o in of_kind(objects, "KafkaTopic")}
    auths = {o["metadata"]["name"]: o["spec"] for o in of_kind(objects, "TriggerAuthentication")}
    users = {o["metadata"]["name"] for o in of_kind(objects, "KafkaUser")}
    for scaled in scaled_objects("production").values():
        target = scaled["spec"]["scaleTargetRef"]
        assert (target["kind"], target["name"]) in workloads
        topic = scaled["spec"]["triggers"][0]["metadata"]["topic"]
        assert 1 <= scaled["spec"]["minReplicaCount"] <= scaled["spec"]["maxReplicaCount"] <= topics[topic]
        auth = auths[scaled["spec"]["triggers"][0]["authenticationRef"]["name"]]  # SASL via a TriggerAuthentication
        assert {r["name"] for r in auth["secretTargetRef"] if r["parameter"] == "password"} <= users
    autoscaled = {
        (o["spec"]["scaleTargetRef"]["kind"], o["spec"]["scaleTargetRef"]["name"])
        for o in scaled_objects("production").values()
    }
    for obj in objects:
        if (obj["kind"], obj["metadata"]["name"]) in autoscaled:
            assert "replicas" not in obj["spec"], obj["metadata"]["name"]  # KEDA owns the count


def test_every_registered_topic_has_a_kafka_topic_with_the_settings_of_mmrag_topics() -> None:
    values = values_of("production")
    rf, shards, space = values["kafka"]["replicas"], values["shards"], values["jobs"]["reindex"]["space"]
    live, spaced = Topics(values["topicPrefix"]), Topics(values["topicPrefix"], space)
    wanted = {}
    for spec in SPECS:
        partitions = shards if spec.base == "vectors" else spec.partitions
        setting = (partitions, rf, topic_config(spec, min_insync_for(rf)))
        wanted[live.name(spec.base)] = setting
        if spec.base in SPACE_OWNED:
            wanted[spaced.name(spec.base)] = setting
    found = {
        o["spec"]["topicName"]: (o["spec"]["partitions"], o["spec"]["replicas"], o["spec"]["config"])
        for o in of_kind(rendered("production"), "KafkaTopic")
    }
    assert found == wanted


# modules defining the deployables' settings classes besides those deploy.chart_data imports
SETTINGS_MODULES = (
    "producers.webhook",
    "producers.sqs_bridge",
    "producers.backfill",
    "query_service.settings",
    "consumers.faiss_worker.__main__",
    "index_updater.pruning",
)


def settings_classes() -> list[type[BaseSettings]]:
    """Every MMRAG_ settings class of the deployables (their modules imported so the classes are defined)."""
    for module in SETTINGS_MODULES:
        importlib.import_module(module)
    for source in _sources():
        source.settings()
    found, todo = [], list(BaseSettings.__subclasses__())
    while todo:
        cls = todo.pop()
        todo.extend(cls.__subclasses__())
        if cls.model_config.get("env_prefix") == "MMRAG_":
            found.append(cls)
    return found


def secret_settings() -> set[str]:
    """MMRAG_* names of every SecretStr setting of the deployables."""
    return {
        f"MMRAG_{n}".upper()
        for cls in settings_classes()
        for n, f in cls.model_fields.items()
        if f.annotation is SecretStr
    }


@pytest.mark.parametrize("values", sorted(VALUES))
def test_no_secret_is_in_a_config_map_or_an_env_literal(values: str) -> None:
    secrets = secret_settings() | {"MMRAG_KAFKA_SASL_PASSWORD"}
    assert {"MMRAG_WEBHOOK_TOKEN", "MMRAG_S3_SECRET_ACCESS_KEY", "MMRAG_MILVUS_TOKEN"} <= secrets
    objects = rendered(values)
    assert of_kind(objects, "Secret") == []  # referenced, never made here
    for config_map in of_kind(objects, "ConfigMap"):
        assert not secrets & set(config_map.get("data", {})), config_map["metadata"]["name"]
    for name, spec in pod_specs(objects).items():
        for container in spec["containers"]:
            literal = {e["name"] for e in container.get("env", []) if "value" in e}
            assert not secrets & literal, name


def test_production_takes_every_secret_from_a_secret_reference() -> None:
    referenced = {
        e["name"]
        for spec in pod_specs(rendered("production")).values()
        for c in spec["containers"]
        for e in c["env"]
        if "secretKeyRef" in e.get("valueFrom", {})
    }
    assert referenced >= {"MMRAG_KAFKA_SASL_PASSWORD", "MMRAG_S3_SECRET_ACCESS_KEY", "MMRAG_MILVUS_TOKEN"}


@pytest.mark.parametrize("values", sorted(VALUES))
def test_every_container_is_probed_sized_and_non_root(values: str) -> None:
    for name, spec in pod_specs(rendered(values)).items():
        assert spec["securityContext"]["runAsNonRoot"] is True, name
        for c in spec["containers"]:
            if not name.startswith(("Job/", "CronJob/")):
                for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
                    assert c[probe]["httpGet"]["path"] in ("/healthz", "/readyz"), (name, probe)
                assert c["readinessProbe"]["httpGet"]["path"] == "/readyz"
            assert set(c["resources"]) == {"requests", "limits"}, name
            assert {"cpu", "memory"} <= set(c["resources"]["requests"]) & set(c["resources"]["limits"]), name
            security = c["securityContext"]
            assert security["runAsNonRoot"] and security["readOnlyRootFilesystem"], name
            assert security["allowPrivilegeEscalation"] is False and security["capabilities"]["drop"] == ["ALL"]


def test_gpu_values_put_the_vision_embedder_on_gpu_nodes_with_the_gpu_image() -> None:
    specs = pod_specs(rendered("gpu"))
    vision = specs["Deployment/mmrag-vision-embedder"]
    container = vision["containers"][0]
    assert container["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert container["image"].endswith("-gpu")
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in vision["tolerations"]
    assert {"name": "MMRAG_DEVICE", "value": "cuda"} in container["env"]
    others = [s for n, s in specs.items() if n != "Deployment/mmrag-vision-embedder"]
    assert all("nvidia.com/gpu" not in c["resources"]["limits"] for s in others for c in s["containers"])
    settings = of_kind(rendered("gpu"), "ConfigMap")[0]["data"]
    assert settings["MMRAG_PRECISION"] == "fp16"  # the whole space, the query service included
    faiss = [o for o in rendered("gpu") if o["kind"] == "StatefulSet" and "retrieval-shard" in o["metadata"]["name"]]
    assert len(faiss) == 2 and all(o["spec"]["volumeClaimTemplates"] for o in faiss)


def test_query_service_replicas_own_distinct_reply_partitions() -> None:
    objects = rendered("production")
    query = next(o for o in objects if o["metadata"]["name"] == "mmrag-query-service" and o["kind"] == "StatefulSet")
    env = {e["name"]: e for e in query["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["MMRAG_REPLY_PARTITION"]["valueFrom"]["fieldRef"]["fieldPath"].endswith(
        "['apps.kubernetes.io/pod-index']"
    )
    hpa = of_kind(objects, "HorizontalPodAutoscaler")[0]
    replies = min(s.partitions for s in SPECS if s.base in ("search.replies", "llm.replies"))
    assert hpa["spec"]["scaleTargetRef"]["kind"] == "StatefulSet" and hpa["spec"]["maxReplicas"] <= replies


def test_monitoring_carries_the_rules_and_dashboard_unchanged() -> None:
    objects = rendered("production")
    monitors = {
        o["spec"]["selector"]["matchLabels"]["app.kubernetes.io/name"] for o in of_kind(objects, "ServiceMonitor")
    }
    services = {o["spec"]["selector"]["app.kubernetes.io/name"] for o in of_kind(objects, "Service")}
    assert monitors == services
    rules = sorted((CHART / "files" / "rules").glob("*.yml"))
    groups = [g for path in rules for g in yaml.safe_load(path.read_text())["groups"]]
    rendered_rules = of_kind(objects, "PrometheusRule")
    assert [r["spec"]["groups"] for r in rendered_rules] == ([groups] if groups else [])
    dashboards = {p.name: json.loads(p.read_text()) for p in (CHART / "files" / "dashboards").glob("*.json")}
    maps = [o for o in of_kind(objects, "ConfigMap") if o["metadata"].get("labels", {}).get("grafana_dashboard")]
    assert {k: json.loads(v) for m in maps for k, v in m.get("data", {}).items()} == dashboards


def test_every_scrape_target_carries_the_deployable_label_the_rules_use() -> None:
    """The alert and recording rules group and select by ``deployable`` (the module's short name, as the local
    stack's Prometheus labels its targets): each ServiceMonitor sets it, and every name a rule selects exists."""
    objects = rendered("production")
    labelled: dict[str, str] = {}
    for monitor in of_kind(objects, "ServiceMonitor"):
        (endpoint,) = monitor["spec"]["endpoints"]
        relabel = [r for r in endpoint.get("relabelings", []) if r.get("targetLabel") == "deployable"]
        assert len(relabel) == 1, monitor["metadata"]["name"]
        labelled[monitor["metadata"]["name"]] = relabel[0]["replacement"]
    assert labelled["mmrag-text-embedder-heavy"] == labelled["mmrag-text-embedder"] == "text_embedder"
    assert labelled["mmrag-retrieval-shard-0"] in ("retrieval_worker", "faiss_worker")
    rules = "".join(p.read_text() for p in (CHART / "files" / "rules").glob("*.yml"))
    selected = {n for regex in re.findall(r'deployable=~?"([^"]+)"', rules) for n in regex.split("|")}
    assert selected and selected <= set(labelled.values()) | {"faiss_worker", "retrieval_worker"}, selected


def principal_of(name: str, acls: list[dict[str, Any]]) -> Principal:
    """What a KafkaUser's ACL rules let it do, read back as a declaration resolved (rules beyond one are refused)."""
    rules: dict[tuple[str, str, str], set[str]] = {}
    for a in acls:
        resource = a["resource"]
        for op in a["operations"]:
            rules.setdefault((resource["type"], resource["patternType"], op), set()).add(resource["name"])
    txn = rules.pop(("transactionalId", "prefix", "Write"), set())
    principal = Principal(
        name=name,
        reads=frozenset(rules.pop(("topic", "literal", "Read"), set())),
        writes=frozenset(rules.pop(("topic", "literal", "Write"), set())),
        groups=frozenset(rules.pop(("group", "literal", "Read"), set())),
        group_prefixes=frozenset(rules.pop(("group", "prefix", "Read"), set())),
        groups_described=frozenset(rules.pop(("group", "prefix", "Describe"), set())),
        transactional_id_prefix=txn.pop() if txn else None,
    )
    assert rules == {} and not txn, (name, rules, txn)
    return principal


def test_each_kafka_user_has_exactly_the_acls_its_declaration_gives() -> None:
    values = values_of("production")
    prefix, space = values["topicPrefix"], values["jobs"]["reindex"]["space"]
    users = {u["metadata"]["name"]: u["spec"] for u in of_kind(rendered("production"), "KafkaUser")}
    assert all(spec["authentication"] == {"type": "scram-sha-512"} for spec in users.values())
    for declaration in DECLARATIONS:
        spec = users.pop(f"mmrag-{declaration.name.replace('_', '-')}")
        assert spec["authorization"]["type"] == "simple"
        wanted = resolve(declaration, prefix, space)
        assert principal_of(declaration.name, spec["authorization"]["acls"]) == replace(wanted, idempotent=True)
    assert set(users) == {"mmrag-admin"} and "authorization" not in users["mmrag-admin"]  # a super user


def test_every_deployable_authenticates_as_the_user_of_its_principal() -> None:
    objects = rendered("production")
    users = {u["metadata"]["name"] for u in of_kind(objects, "KafkaUser")}
    for name, spec in pod_specs(objects).items():
        env = {e["name"]: e for e in spec["containers"][0]["env"]}
        user = env["MMRAG_KAFKA_SASL_USERNAME"]["value"]
        assert user in users, name
        assert env["MMRAG_KAFKA_SASL_PASSWORD"]["valueFrom"]["secretKeyRef"] == {"name": user, "key": "password"}
    text = [s["containers"][0]["env"] for n, s in pod_specs(objects).items() if "text-embedder" in n]
    assert len(text) == 4  # both lanes, live and the re-index space's
    assert {e["value"] for env in text for e in env if e["name"] == "MMRAG_KAFKA_SASL_USERNAME"} == {
        "mmrag-text-embedder"
    }
    shards = [s["containers"][0]["env"] for n, s in pod_specs(objects).items() if "retrieval-shard" in n]
    assert {e["value"] for env in shards for e in env if e["name"] == "MMRAG_KAFKA_SASL_USERNAME"} == {
        "mmrag-retrieval-worker"
    }


def known_settings() -> set[str]:
    """MMRAG_* names some deployable's settings read (and MMRAG_CACHE_DIR, read by mmrag.settings.cache_dir)."""
    return {"MMRAG_CACHE_DIR"} | {f"MMRAG_{n}".upper() for cls in settings_classes() for n in cls.model_fields}


@pytest.mark.parametrize("values", sorted(VALUES))
def test_every_setting_the_chart_sets_is_one_the_code_reads(values: str) -> None:
    """A misspelt MMRAG_* variable is ignored by the settings classes (extra="ignore"): the chart sets none."""
    objects = rendered(values)
    names = {k for m in of_kind(objects, "ConfigMap") if m["metadata"]["name"] == "mmrag-settings" for k in m["data"]}
    names |= {e["name"] for spec in pod_specs(objects).values() for c in spec["containers"] for e in c["env"]}
    assert {n for n in names if n.startswith("MMRAG_")} - known_settings() == set()


def test_compose_runs_what_the_chart_runs() -> None:
    """docker-compose.yml and the chart's minimal install run the same workloads: command, lane and shard (compose's
    only source is MinIO's webhook, so the chart's SQS bridge has no twin there)."""
    compose = yaml.safe_load((CHART.parents[1] / "docker-compose.yml").read_text())
    ours = [s for s in compose["services"].values() if s.get("image", "").startswith("kafka-mmrag")]

    def key(command: str, env: dict[str, str]) -> tuple[str, str, str]:
        return command, env.get("MMRAG_LANE", ""), env.get("MMRAG_SHARD", "")

    in_compose = {key(s["command"][0], s.get("environment", {})) for s in ours}
    in_chart = set()
    for name, spec in pod_specs(rendered("minimal")).items():
        if not name.startswith(("Job/", "CronJob/")):
            container = spec["containers"][0]
            in_chart.add(key(container["args"][0], {e["name"]: e.get("value", "") for e in container["env"]}))
    assert in_compose == in_chart - {("sqs-bridge", "", "")}
