"""Constants shared across services and the operator: ports, environment names, limits.

The operator renders manifests from these, and the services read them, so the two cannot drift.
"""

from __future__ import annotations

# Ports (api-contract.md, Decisions).
API_PORT = 7100
ASR_GRPC_PORT = 2233
ASR_HTTP_PORT = 9090
LICENSE_PROXY_PORT = 6699
REDIS_PORT = 6379

# Audio limits (api-contract.md C5 and Decisions).
MAX_UPLOAD_BYTES = 100 * 1024 * 1024
MAX_AUDIO_SECONDS = 2 * 60 * 60
MIN_SAMPLE_RATE = 8000
SAMPLE_RATE = 16000
SUPPORTED_FORMATS = ("wav", "mp3", "flac", "ogg", "m4a")

# Diarization: the most speakers num_speakers may ask for (API and worker).
MAX_SPEAKERS = 32

# Worker environment (names documented by the brief, honoured as given).
ENV_MODEL_URL = "MODEL_URL"
ENV_MODEL_SHA256 = "MODEL_SHA256"
ENV_MODEL_CACHE_DIR = "MODEL_CACHE_DIR"
ENV_REDIS_URL = "REDIS_URL"
ENV_PORT = "PORT"
ENV_GPU_DEVICE_ID = "GPU_DEVICE_ID"
ENV_LICENSE_KEY = "LICENSE_KEY"
ENV_REQUIRE_GPU = "OYEZ_REQUIRE_GPU"
ENV_OYEZ_MODEL_CACHE_DIR = "OYEZ_MODEL_CACHE_DIR"
# Read-only directory of bundles built into a container image (searched before the cache).
ENV_OYEZ_BUNDLED_MODELS_DIR = "OYEZ_BUNDLED_MODELS_DIR"

# Redis key layout for the worker registry (read by the API server).
REGISTRY_SET_KEY = "oyez:workers"
REGISTRY_WORKER_KEY_PREFIX = "oyez:worker:"

# Further environment names the operator renders (service settings use the OYEZ_ prefix).
ENV_WORKER_HTTP_PORT = "OYEZ_HTTP_PORT"
ENV_WORKER_ADVERTISE_ADDRESS = "OYEZ_ADVERTISE_ADDRESS"
ENV_WORKER_ID = "OYEZ_WORKER_ID"
ENV_INFERENCE_LANES = "OYEZ_INFERENCE_LANES"
ENV_DRAIN_GRACE_S = "OYEZ_DRAIN_GRACE_S"
ENV_LOG_FORMAT = "OYEZ_LOG_FORMAT"
ENV_API_PORT = "API_SERVER_PORT"
ENV_API_LICENSE_PROXY_URL = "API_BASE_URL"
ENV_API_ASR_URL = "LIGHTNING_ASR_BASE_URL"
ENV_LICENSE_SERVER_URL = "OYEZ_LICENSE_SERVER_URL"
ENV_LICENSE_PUBLIC_KEY = "OYEZ_LICENSE_PUBLIC_KEY"
ENV_LICENSE_STATE_DIR = "OYEZ_LICENSE_STATE_DIR"
ENV_LICENSE_ENV = "OYEZ_ENV"

# HTTP paths the probes use.
API_LIVENESS_PATH = "/api/v1/health"
API_READINESS_PATH = "/healthz"
WORKER_HEALTH_PATH = "/health"
METRICS_PATH = "/metrics"
LICENSE_PROXY_HEALTH_PATH = "/health"
LICENSE_PROXY_ALIVE_PATH = "/ready"
