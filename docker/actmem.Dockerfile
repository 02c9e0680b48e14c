# syntax=docker/dockerfile:1
# memos actmem image: requirements/actmem.txt (torch, transformers, safetensors) beside the model.
# Build from the repository root:
#   docker build -f docker/actmem.Dockerfile -t memos/actmem .
# vLLM variant (the same image also runs `vllm serve`, e.g. as the chart's sidecar):
#   docker build -f docker/actmem.Dockerfile --build-arg VARIANT=vllm -t memos/actmem:vllm .
# VLLM_VERSION must be one whose torch pin equals requirements/actmem.txt's: both are resolved
# together so that a mismatch fails the build instead of silently replacing torch.
#
# The base is pinned to an exact Python patch release on Debian bookworm; pin its digest too
# when publishing (PYTHON_IMAGE=python:3.11.14-slim-bookworm@sha256:...).
ARG PYTHON_IMAGE=python:3.11.14-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ARG VARIANT=transformers
ARG VLLM_VERSION=0.33.0
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
# Only this service's requirement files, so the image holds what the service imports and nothing
# else (tests/deploy/test_image_deps.py checks both sides).
COPY requirements/runtime.txt requirements/actmem.txt /src/requirements/
RUN python -m venv /opt/venv \
 && case "${VARIANT}" in \
      transformers) /opt/venv/bin/pip install -r /src/requirements/actmem.txt ;; \
      vllm) /opt/venv/bin/pip install -r /src/requirements/actmem.txt "vllm==${VLLM_VERSION}" ;; \
      *) echo "VARIANT must be transformers or vllm, not ${VARIANT}" >&2; exit 1 ;; \
    esac

FROM ${PYTHON_IMAGE}
# A fixed uid/gid that the chart's securityContext (runAsUser 10001) matches.
RUN groupadd --gid 10001 memos \
 && useradd --uid 10001 --gid memos --home-dir /tmp --no-create-home --shell /usr/sbin/nologin memos
# libdeflate: its crc32 (the same checksum as zlib's, ~2.5x faster) checks every cache that is
# transferred, dumped or loaded; services/actmem/codec.py falls back to zlib without it.
RUN apt-get update \
 && apt-get install -y --no-install-recommends libdeflate0 \
 && rm -rf /var/lib/apt/lists/*
COPY --from=build /opt/venv /opt/venv
# Generated stubs, the shared runtime and this one service: no other service's code.
COPY gen/python/ /app/gen/python/
COPY shared/ /app/shared/
COPY services/__init__.py /app/services/__init__.py
COPY services/actmem/ /app/services/actmem/
# Bytecode now: the root filesystem is read-only at run time.
RUN python -m compileall -q /app
# Models come from a mounted directory or the local cache only (MEMOS_MODEL_PATH); never the hub.
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONPATH=/app:/app/gen/python \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HOME=/tmp \
    HF_HUB_OFFLINE=1 \
    MEMOS_DATA_DIR=/data \
    MEMOS_LISTEN_ADDR=0.0.0.0:50054
WORKDIR /app
USER 10001:10001
EXPOSE 50054
ENTRYPOINT ["python"]
CMD ["-m", "services.actmem"]
