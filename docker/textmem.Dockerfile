# syntax=docker/dockerfile:1
# memos textmem image: requirements/textmem.txt (pymilvus, Milvus Lite, Neo4j driver, and torch
# with sentence-transformers for the in-process MiniLM embedder, shipped as a package).
# Build from the repository root:  docker build -f docker/textmem.Dockerfile -t memos/textmem .
# CPU-only torch (a much smaller image) when embeddings run in process on CPU nodes:
#   --build-arg PIP_EXTRA_INDEX_URL=https://download.pytorch.org/whl/cpu
#
# The base is pinned to an exact Python patch release on Debian bookworm; pin its digest too
# when publishing (PYTHON_IMAGE=python:3.11.14-slim-bookworm@sha256:...).
ARG PYTHON_IMAGE=python:3.11.14-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ARG PIP_EXTRA_INDEX_URL=""
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_EXTRA_INDEX_URL=${PIP_EXTRA_INDEX_URL}
# Only this service's requirement files, so the image holds what the service imports and nothing
# else (tests/deploy/test_image_deps.py checks both sides).
COPY requirements/runtime.txt requirements/textmem.txt /src/requirements/
RUN python -m venv /opt/venv \
 && /opt/venv/bin/pip install -r /src/requirements/textmem.txt

FROM ${PYTHON_IMAGE}
# A fixed uid/gid that the chart's securityContext (runAsUser 10001) matches.
RUN groupadd --gid 10001 memos \
 && useradd --uid 10001 --gid memos --home-dir /tmp --no-create-home --shell /usr/sbin/nologin memos
COPY --from=build /opt/venv /opt/venv
# Generated stubs, the shared runtime and this one service: no other service's code.
COPY gen/python/ /app/gen/python/
COPY shared/ /app/shared/
COPY services/__init__.py /app/services/__init__.py
COPY services/textmem/ /app/services/textmem/
# Bytecode now: the root filesystem is read-only at run time.
RUN python -m compileall -q /app
# The ONNX export of the bundled embedder, made now so that pods (read-only root, empty /tmp)
# never spend their first seconds exporting it; MEMOS_EMBEDDING_ONNX_CACHE_DIR points at it.
RUN cd /app && PYTHONPATH=/app:/app/gen/python /opt/venv/bin/python -c \
    "from services.textmem.embedders import OnnxEmbedder; OnnxEmbedder(cache_dir='/opt/memos/onnx', quantize='int8')"
# The embedder ships in a package: never reach the Hugging Face hub at run time.
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONPATH=/app:/app/gen/python \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HOME=/tmp \
    HF_HUB_OFFLINE=1 \
    MEMOS_DATA_DIR=/data \
    MEMOS_EMBEDDING_ONNX_CACHE_DIR=/opt/memos/onnx \
    MEMOS_LISTEN_ADDR=0.0.0.0:50052
WORKDIR /app
USER 10001:10001
EXPOSE 50052
ENTRYPOINT ["python"]
CMD ["-m", "services.textmem"]
