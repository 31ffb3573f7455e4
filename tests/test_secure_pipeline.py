"""The pipeline on the secured Kafka: every deployable connects as its own SCRAM principal holding exactly the ACLs
of its declaration (mmrag/access.py), and upload -> indexed -> Search -> Ask, a dead letter and a delete work as on
the plaintext stack. Anything a deployable touches beyond its declaration would stop it (TOPIC/GROUP/
TRANSACTIONAL_ID_AUTHORIZATION_FAILED, exit 78), so this run is also the check that the declarations are complete.
Afterwards no password appears in any log, the broker's included, nor in any dead letter."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from mmrag.access import ADMIN, DECLARATIONS
from mmrag.object_store import S3ObjectStore
from producers.upload import upload_files
from tests.ask_tools import ask, start_with_corpus
from tests.kafka_tools import read_topic, wait_for
from tests.scripted_llm import scripted_llm
from tests.test_end_to_end import found_ids

pytestmark = [pytest.mark.kafka, pytest.mark.secure]

CORPUS = {
    "server-room.md": "The access code for the server room is 4417. The server room is in the basement.",
    "ferry.md": "The ferry from Lindholm to Skarra leaves at 7:40 every morning and takes two hours.",
}
QUESTION = "What is the access code of the server room?"


def copy_the_code_sentence(prompt: str) -> str:
    """A faithful model: the prompt's sentence about the access code, cited [1]."""
    found = re.search(r"[^.\n]*access code[^.\n]*\.", prompt)
    return f"{found.group(0).strip()} [1]" if found else "I do not know."


def assert_no_secret_anywhere(dep: Any, passwords: list[str]) -> None:
    """No password in any log of the deployment's services, in the secured broker's log, nor in any dead letter."""
    security_dir = Path(dep.endpoints.security.dir)
    logs = [*sorted((dep.state_dir / "logs").glob("*.log")), *sorted(security_dir.parent.glob("node-*/*.log"))]
    assert len(logs) > 5, logs
    for path in logs:
        text = path.read_text(errors="replace")
        assert not [p for p in passwords if p in text], f"a password in {path}"
    for record in read_topic(dep.endpoints.bootstrap_servers, f"{dep.topic_prefix}dlq.v1", idle_s=1.0):
        seen = (record.value or b"").decode(errors="replace") + repr(record.headers)
        assert not [p for p in passwords if p in seen], f"a password in the dead letter {record.key}"


def test_pipeline_on_the_secured_kafka(secure_deployment: Any, tmp_path: Path) -> None:
    dep = secure_deployment
    security = dep.endpoints.security
    with scripted_llm(copy_the_code_sentence) as llm:
        worker = dep.service("llm_worker", MMRAG_LLM_BACKEND="openai", MMRAG_LLM_BASE_URL=llm.base_url)
        start_with_corpus(dep, CORPUS, "server room ferry", tmp_path, [dep.service("query_service"), worker])
        port, bucket = dep.grpc_port, dep.bucket

        final = ask(port, QUESTION).final
        assert final is not None and not final.is_degraded, final
        assert final.answer.startswith("The access code for the server room is 4417.")
        assert [c.object_id for c in final.citations] == [f"{bucket}/server-room.md"]

        store = S3ObjectStore(dep.s3_settings(), "test")
        (tmp_path / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n this is not really a png")
        upload_files(store, bucket, [tmp_path / "broken.png"])
        broken = f"{bucket}/broken.png"
        dlq = f"{dep.topic_prefix}dlq.v1"
        wait_for(lambda: [m for m in read_topic(dep.endpoints.bootstrap_servers, dlq) if m.key == broken], 60, "DLQ")

        store.delete(bucket, "ferry.md")
        wait_for(lambda: f"{bucket}/ferry.md" not in found_ids(port, text="ferry Lindholm"), 90, "the delete")
        assert f"{bucket}/server-room.md" in found_ids(port, text="server room access code")
    passwords = [security.password(user) for user in [ADMIN, *(d.name for d in DECLARATIONS)]]
    assert_no_secret_anywhere(dep, passwords)
