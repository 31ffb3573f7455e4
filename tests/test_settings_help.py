"""Each deployable's --help lists its MMRAG_* settings with defaults and descriptions."""

from __future__ import annotations

import pytest

from mmrag.service import service_main, settings_epilog
from mmrag.settings import BaseServiceSettings, S3Settings

pytestmark = pytest.mark.unit


class ExampleSettings(BaseServiceSettings, S3Settings):
    group: str = "example-group"


def test_epilog_names_every_setting_with_default_and_description() -> None:
    text = settings_epilog(ExampleSettings)
    lines = text.splitlines()
    assert f"  MMRAG_{'bootstrap_servers'.upper()} [127.0.0.1:9092]" in lines
    assert "      Kafka bootstrap servers (host:port,...)" in lines
    assert "  MMRAG_GROUP [example-group]" in lines
    assert "  MMRAG_S3_SECRET_ACCESS_KEY [secret]" in lines and "mmrag-secret" not in text
    assert "  MMRAG_TOPIC_PREFIX [unset]" in lines
    named = {line.split()[0] for line in lines if line.startswith("  MMRAG_")}
    assert named == {f"MMRAG_{name.upper()}" for name in ExampleSettings.model_fields}


def test_help_prints_the_epilog(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        service_main("example", ExampleSettings, lambda settings, probes: None, ["--help"])  # type: ignore[arg-type, return-value]
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert "usage: example" in out and "MMRAG_MAX_BATCH [32]" in out and "most messages one poll batch takes" in out
