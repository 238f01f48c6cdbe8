# syntax=docker/dockerfile:1.7
# The license proxy (`oyez license-proxy`, HTTP :6699). Build from the repository root:
#   docker build -f images/license-proxy.Dockerfile -t ghcr.io/oyez-dev/license-proxy:0.1.0 .
ARG PYTHON_IMAGE=python:3.11.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
COPY pyproject.toml README.md ./
COPY oyez/ oyez/
COPY license_proxy/ license_proxy/
RUN python -m venv /opt/oyez/venv \
    && /opt/oyez/venv/bin/pip install ".[license]"

FROM ${PYTHON_IMAGE}
LABEL org.opencontainers.image.title="oyez license-proxy" \
      org.opencontainers.image.source="https://github.com/oyez-dev/oyez" \
      org.opencontainers.image.licenses="Apache-2.0"
RUN groupadd --system --gid 10001 oyez \
    && useradd --system --uid 10001 --gid oyez --no-create-home --home-dir /nonexistent \
       --shell /usr/sbin/nologin oyez \
    && install -d -o 10001 -g 10001 -m 0700 /var/lib/oyez-license
COPY --from=build /opt/oyez/venv /opt/oyez/venv
# The validation cache and usage spool live in OYEZ_LICENSE_STATE_DIR: mount a volume there.
ENV PATH=/opt/oyez/venv/bin:$PATH \
    HOME=/tmp \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PORT=6699 \
    OYEZ_LICENSE_STATE_DIR=/var/lib/oyez-license \
    OYEZ_LOG_FORMAT=json
USER 10001:10001
EXPOSE 6699
# Healthy (GET /health) only while the license is valid or inside its offline grace period.
HEALTHCHECK --interval=10s --timeout=3s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/health' % os.environ.get('PORT', '6699'), timeout=2)"]
ENTRYPOINT ["oyez", "license-proxy"]
