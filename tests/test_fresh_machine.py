"""The README's two commands on a fresh machine: a HOME without caches, no uv on PATH, the apt step really run.

CI's own machine already has uv, the caches and tesseract, so a green suite alone hid two broken install steps.
This test replays setup the way a fresh machine sees it: an empty HOME (no uv, no ~/.cache, no project caches), no
uv on PATH, and the apt step really run. It shares only what would cost minutes and proves nothing about the
install steps: uv's download/build cache, the Maven repository and Go's module and build caches (downloads and
compiled packages), and the checkout's synced `.venv`
(setup's `uv sync --frozen` checks it against uv.lock; a fresh environment would rebuild llama-cpp-python, about
11 CPU-minutes). Setup must install uv where the next script finds it, run the apt step as root without sudo, and
leave both README commands able to start from another directory.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def _fresh_env(home: Path) -> dict[str, str]:
    real_home = Path.home()
    uv = shutil.which("uv")
    hidden = {str(Path(uv).parent)} if uv else set()
    path = [p for p in os.environ["PATH"].split(os.pathsep) if p and p not in hidden and ".venv" not in p]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MMRAG_", "UV_", "VIRTUAL_ENV"))}
    env.update(
        HOME=str(home),
        PATH=os.pathsep.join(path),
        PYENV_ROOT=os.environ.get("PYENV_ROOT", str(real_home / ".pyenv")),  # the machine's Python, not a cache
        UV_CACHE_DIR=os.environ.get("UV_CACHE_DIR", str(real_home / ".cache" / "uv")),  # shared download cache
        MAVEN_OPTS=f"-Dmaven.repo.local={real_home / '.m2' / 'repository'}",
        # Go's module download cache and build cache: Jaeger is built in seconds from them, not 10 minutes
        GOMODCACHE=os.environ.get("GOMODCACHE", str(real_home / "go" / "pkg" / "mod")),
        GOCACHE=os.environ.get("GOCACHE", str(real_home / ".cache" / "go-build")),
        MMRAG_SETUP_APT="always",  # run the apt step even though the packages are there: it must work as root
    )
    return env


def _run(cmd: list[str], env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(cmd, env=env, cwd=cwd, capture_output=True, text=True, timeout=2400)
    assert done.returncode == 0, f"{' '.join(cmd)} failed ({done.returncode}):\n{done.stdout[-3000:]}\n{done.stderr}"
    return done


@pytest.mark.unit
@pytest.mark.timeout(2400)  # seconds with warm caches; a cold uv cache builds llama-cpp-python (~11 CPU-minutes)
@pytest.mark.skipif(shutil.which("apt-get") is None, reason="the README's machine kind has apt")
def test_readme_commands_work_on_a_fresh_machine(tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    env = _fresh_env(home)
    assert shutil.which("uv", path=env["PATH"]) is None, "the fresh PATH must not have uv"
    elsewhere = tmp_path / "elsewhere"  # both commands work from any current directory
    elsewhere.mkdir()

    setup = _run(["bash", str(REPO / "scripts/setup.sh")], env, elsewhere)
    assert "installing uv" in setup.stdout
    assert "installing apt packages" in setup.stdout
    assert (home / ".cache/kafka-mmrag/tools/bin/uv").exists()
    assert list((home / ".cache/kafka-mmrag").glob("kafka-*/libs/kafka_2.13-*.jar")), "Kafka jars not fetched"
    assert (home / ".cache/kafka-mmrag/tools/bin/jaeger").exists(), "Jaeger not built"
    for tool in ("helm", "kube-score"):  # the Helm chart's tests
        assert (home / ".cache/kafka-mmrag/tools/bin" / tool).exists(), f"{tool} not built"

    # Each README command runs setup again (now cached) and then finds uv in a shell of its own.
    demo = _run(["bash", str(REPO / "scripts/demo.sh"), "--help"], env, elsewhere)
    assert "installing uv" not in demo.stdout
    assert "usage: mmrag demo" in demo.stdout
    tests = _run(
        ["bash", str(REPO / "scripts/test.sh"), "--collect-only", "-q", "tests/test_ids_and_space.py"], env, elsewhere
    )
    assert "tests collected" in tests.stdout
