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

# Redis key layout for the worker registry (read by the API server).
REGISTRY_SET_KEY = "oyez:workers"
REGISTRY_WORKER_KEY_PREFIX = "oyez:worker:"
