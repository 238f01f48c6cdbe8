# syntax=docker/dockerfile:1.7
# The SpeechDeployment operator (`oyez operator`). Build from the repository root:
#   docker build -f images/operator.Dockerfile -t ghcr.io/oyez-dev/operator:0.1.0 .
ARG PYTHON_IMAGE=python:3.11.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
COPY pyproject.toml README.md ./
COPY oyez/ oyez/
COPY oyez_operator/ oyez_operator/
RUN python -m venv /opt/oyez/venv \
    && /opt/oyez/venv/bin/pip install ".[operator]"

FROM ${PYTHON_IMAGE}
LABEL org.opencontainers.image.title="oyez operator" \
      org.opencontainers.image.source="https://github.com/oyez-dev/oyez" \
      org.opencontainers.image.licenses="Apache-2.0"
RUN groupadd --system --gid 10001 oyez \
    && useradd --system --uid 10001 --gid oyez --no-create-home --home-dir /nonexistent \
       --shell /usr/sbin/nologin oyez
COPY --from=build /opt/oyez/venv /opt/oyez/venv
ENV PATH=/opt/oyez/venv/bin:$PATH \
    HOME=/tmp \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    OYEZ_OPERATOR_LIVENESS_PORT=8080
USER 10001:10001
EXPOSE 8080
# Alive (GET /healthz): kopf's liveness endpoint, answered while the operator's loop runs.
HEALTHCHECK --interval=15s --timeout=3s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/healthz' % os.environ.get('OYEZ_OPERATOR_LIVENESS_PORT', '8080'), timeout=2)"]
ENTRYPOINT ["oyez", "operator"]
