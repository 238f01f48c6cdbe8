"""WorkerSettings: documented env names, OYEZ_ names, bounds, and errors that name the variable."""

from __future__ import annotations

import socket

import pytest

from asr_worker.service.settings import (
    WorkerConfigError,
    WorkerSettings,
    env_name,
    load_worker_settings,
)

DIGEST = "ab" * 32


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    """Remove every variable the settings read, so the host environment cannot leak in."""
    for field in WorkerSettings.model_fields:
        monkeypatch.delenv(env_name(field), raising=False)
    monkeypatch.delenv("OYEZ_MODEL_CACHE_DIR", raising=False)
    monkeypatch.setenv("MODEL_URL", "https://models.example/base.tar")
    return monkeypatch


def config_error(monkeypatch: pytest.MonkeyPatch, **env: str) -> str:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(WorkerConfigError) as caught:
        load_worker_settings()
    assert caught.value.code == "INVALID_CONFIG"
    return caught.value.message


def test_defaults_follow_the_contract() -> None:
    settings = load_worker_settings()
    assert settings.model_url == ["https://models.example/base.tar"]
    assert (settings.port, settings.http_port, settings.host) == (2233, 9090, "0.0.0.0")
    assert (settings.gpu_device_id, settings.require_gpu, settings.redis_url) == (0, False, None)
    assert (settings.max_batch_size, settings.max_batch_wait_ms) == (8, 10)
    assert (settings.drain_grace_s, settings.heartbeat_s, settings.heartbeat_ttl_s) == (30, 5, 15)
    assert settings.intra_op_threads == 0
    assert settings.license_key is None


def test_documented_and_prefixed_names_are_read(clean_env: pytest.MonkeyPatch) -> None:
    env = {
        "MODEL_URL": " https://a/1.tar , https://a/2.tar ",
        "MODEL_SHA256": f"{DIGEST},{DIGEST.upper()}",
        "MODEL_CACHE_DIR": "/models",
        "LICENSE_KEY": "lic-123",
        "REDIS_URL": "redis://:pw@redis:6379/0",
        "PORT": "2269",
        "GPU_DEVICE_ID": "1",
        "OYEZ_HTTP_PORT": "9191",
        "OYEZ_REQUIRE_GPU": "true",
        "OYEZ_MAX_CONCURRENCY": "12",
        "OYEZ_MAX_QUEUE": "3",
        "OYEZ_WORKER_ID": "asr-0",
        "OYEZ_ADVERTISE_ADDRESS": "asr-0.lightning-asr:2269",
        "OYEZ_INTRA_OP_THREADS": "4",
    }
    for name, value in env.items():
        clean_env.setenv(name, value)
    settings = load_worker_settings()
    assert settings.model_url == ["https://a/1.tar", "https://a/2.tar"]
    assert settings.model_sha256 == [DIGEST, DIGEST]
    assert str(settings.model_cache_dir) == "/models"
    assert settings.license_key is not None and settings.license_key.get_secret_value() == "lic-123"
    assert "lic-123" not in repr(settings)
    assert (settings.redis_url, settings.port, settings.gpu_device_id) == (
        "redis://:pw@redis:6379/0",
        2269,
        1,
    )
    assert (settings.http_port, settings.require_gpu, settings.capacity, settings.max_queue) == (
        9191,
        True,
        12,
        3,
    )
    assert settings.resolved_worker_id(2269) == "asr-0"
    assert settings.resolved_advertise_address(2269) == "asr-0.lightning-asr:2269"
    assert settings.intra_op_threads == 4


@pytest.mark.parametrize(("urls", "capacity"), [("a", 128), ("a,b", 128), ("a,b,c", 144)])
def test_auto_concurrency_follows_the_checkpoint_rule(
    clean_env: pytest.MonkeyPatch, urls: str, capacity: int
) -> None:
    clean_env.setenv("MODEL_URL", urls)
    assert load_worker_settings().capacity == capacity


def test_worker_id_and_address_default_to_hostname_and_port() -> None:
    settings = load_worker_settings()
    host = socket.gethostname()
    assert settings.resolved_worker_id(2233) == f"{host}-2233"
    assert settings.resolved_advertise_address(2233) == f"{host}:2233"


def test_more_than_three_model_urls_is_refused(clean_env: pytest.MonkeyPatch) -> None:
    message = config_error(clean_env, MODEL_URL="a,b,c,d")
    assert "MODEL_URL: at most 3 comma-separated checkpoint URLs, got 4" in message


def test_missing_model_url_names_the_variable(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.delenv("MODEL_URL")
    message = config_error(clean_env)
    assert message.startswith("Invalid worker configuration: MODEL_URL: ")


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("PORT", "70000"),
        ("PORT", "http"),
        ("GPU_DEVICE_ID", "-1"),
        ("OYEZ_HTTP_PORT", "-5"),
        ("OYEZ_REQUIRE_GPU", "maybe"),
        ("OYEZ_MAX_CONCURRENCY", "0"),
        ("OYEZ_MAX_QUEUE", "-1"),
        ("OYEZ_MAX_BATCH_SIZE", "0"),
        ("OYEZ_MAX_BATCH_WAIT_MS", "5000"),
        ("OYEZ_DRAIN_GRACE_S", "-1"),
        ("OYEZ_HEARTBEAT_S", "0"),
        ("OYEZ_WORKER_ID", "bad id with spaces"),
        ("OYEZ_INTRA_OP_THREADS", "-2"),
        ("REDIS_URL", "http://redis:6379"),
        ("MODEL_SHA256", "not-a-digest"),
    ],
)
def test_bad_values_name_the_variable(clean_env: pytest.MonkeyPatch, name: str, value: str) -> None:
    message = config_error(clean_env, **{name: value})
    assert f"{name}: " in message


def test_sha256_count_must_match_urls(clean_env: pytest.MonkeyPatch) -> None:
    message = config_error(clean_env, MODEL_URL="a,b", MODEL_SHA256=DIGEST)
    assert "MODEL_SHA256 lists 1 digests for 2 MODEL_URL(s)" in message


def test_heartbeat_ttl_must_exceed_the_interval(clean_env: pytest.MonkeyPatch) -> None:
    message = config_error(clean_env, OYEZ_HEARTBEAT_S="10", OYEZ_HEARTBEAT_TTL_S="10")
    assert "OYEZ_HEARTBEAT_TTL_S must be greater than OYEZ_HEARTBEAT_S" in message


def test_overrides_win_over_the_environment(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("PORT", "2269")
    assert load_worker_settings(port=0).port == 0
