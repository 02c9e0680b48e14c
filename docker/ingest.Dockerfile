# syntax=docker/dockerfile:1
# memos ingest image: document parsers on top of the runtime (requirements/ingest.txt); no torch.
# Build from the repository root:  docker build -f docker/ingest.Dockerfile -t memos/ingest .
#
# The base is pinned to an exact Python patch release on Debian bookworm; pin its digest too
# when publishing (PYTHON_IMAGE=python:3.11.14-slim-bookworm@sha256:...).
ARG PYTHON_IMAGE=python:3.11.14-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
# Only this service's requirement files (each includes runtime.txt), so the image holds what
# the service imports and nothing else (tests/deploy/test_image_deps.py checks both sides).
COPY requirements/runtime.txt requirements/ingest.txt /src/requirements/
RUN python -m venv /opt/venv \
 && /opt/venv/bin/pip install -r /src/requirements/ingest.txt

FROM ${PYTHON_IMAGE}
# A fixed uid/gid that the chart's securityContext (runAsUser 10001) matches.
RUN groupadd --gid 10001 memos \
 && useradd --uid 10001 --gid memos --home-dir /tmp --no-create-home --shell /usr/sbin/nologin memos
COPY --from=build /opt/venv /opt/venv
# Generated stubs, the shared runtime and this one service: no other service's code.
COPY gen/python/ /app/gen/python/
COPY shared/ /app/shared/
COPY services/__init__.py /app/services/__init__.py
COPY services/ingest/ /app/services/ingest/
# Bytecode now: the root filesystem is read-only at run time.
RUN python -m compileall -q /app
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONPATH=/app:/app/gen/python \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HOME=/tmp \
    MEMOS_LISTEN_ADDR=0.0.0.0:50053
WORKDIR /app
USER 10001:10001
EXPOSE 50053
ENTRYPOINT ["python"]
CMD ["-m", "services.ingest"]
