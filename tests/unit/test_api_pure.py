"""Pure parts of the API server: settings, options, error mapping, worker choice, body parsing,
COMPAT utterances. No sockets."""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from api_server.errors import FeatureNotAvailable, NoWorkers, http_error
from api_server.limits import RateLimited
from api_server.listen_options import ListenOptions, parse_listen_options
from api_server.request_body import MAX_FIELD_BYTES, read_json, read_multipart, read_raw
from api_server.routes_compat import compat_options
from api_server.settings import ApiConfigError, load_api_settings, worker_address
from api_server.utterance_shapes import utterances
from api_server.workers import WorkerView, parse_registry_record, pick_worker
from oyez.errors import AudioTooLong, FileTooLarge, InvalidParameter, UnsupportedFormat


# --- settings -------------------------------------------------------------------------------------
@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> pytest.MonkeyPatch:
    for name in (
        "LIGHTNING_ASR_BASE_URL", "ASR_BASE_URL", "API_BASE_URL", "API_SERVER_PORT", "PORT", "REDIS_URL",
        "REDIS_HOST", "REDIS_PORT", "REDIS_PASSWORD", "REDIS_SSL", "LICENSE_KEY",
    ):  # fmt: skip
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("OYEZ_API_CONFIG_FILE", str(tmp_path / "none.toml"))
    (tmp_path / "none.toml").write_text("")
    return monkeypatch


def test_settings_defaults_follow_the_contract(clean_env: pytest.MonkeyPatch) -> None:
    settings = load_api_settings()
    assert settings.port == 7100
    assert settings.license_proxy_url == "http://license-proxy:6699"
    assert settings.worker_addresses == ["lightning-asr:2233"]
    assert settings.resolved_redis_url is None
    assert settings.request_timeout_s == 300


def test_settings_aliases_and_redis_parts(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("ASR_BASE_URL", "http://w1:2233, http://w2:2269,w3")
    clean_env.setenv("API_SERVER_PORT", "8080")
    clean_env.setenv("REDIS_HOST", "redis.internal")
    clean_env.setenv("REDIS_PASSWORD", "p@ss/word")
    clean_env.setenv("REDIS_SSL", "true")
    settings = load_api_settings()
    assert settings.worker_addresses == ["w1:2233", "w2:2269", "w3:2233"]
    assert settings.port == 8080
    assert settings.resolved_redis_url == "rediss://:p%40ss%2Fword@redis.internal:6379/0"


def test_toml_file_is_read_and_env_wins(clean_env: pytest.MonkeyPatch, tmp_path: Path) -> None:
    config = tmp_path / "api.toml"
    config.write_text(
        '[license_proxy]\n  url = ["http://lp-internal:3369"]\n'
        '[server]\n  port = 7200\n  lightning_asr_url = "http://asr-internal:2269"\n'
        '  redis_host = "r"\n  redis_port = 6380\n'
    )
    clean_env.setenv("OYEZ_API_CONFIG_FILE", str(config))
    settings = load_api_settings()
    assert (settings.port, settings.license_proxy_url) == (7200, "http://lp-internal:3369")
    assert settings.worker_addresses == ["asr-internal:2269"]
    assert settings.resolved_redis_url == "redis://r:6380/0"
    clean_env.setenv("API_SERVER_PORT", "7300")
    assert load_api_settings().port == 7300


def test_bad_settings_name_the_variable(clean_env: pytest.MonkeyPatch, tmp_path: Path) -> None:
    clean_env.setenv("LIGHTNING_ASR_BASE_URL", "ftp://nope")
    with pytest.raises(ApiConfigError, match="LIGHTNING_ASR_BASE_URL"):
        load_api_settings()
    clean_env.delenv("LIGHTNING_ASR_BASE_URL")
    clean_env.setenv("REDIS_URL", "http://not-redis")
    with pytest.raises(ApiConfigError, match="REDIS_URL: must start with redis://"):
        load_api_settings()
    clean_env.delenv("REDIS_URL")
    broken = tmp_path / "broken.toml"
    broken.write_text("[server\nport = ")
    clean_env.setenv("OYEZ_API_CONFIG_FILE", str(broken))
    with pytest.raises(ApiConfigError, match="cannot read the config file"):
        load_api_settings()


def test_worker_address_forms() -> None:
    assert worker_address("http://[::1]:2233") == "[::1]:2233"
    assert worker_address("grpc://asr") == "asr:2233"
    with pytest.raises(ValueError, match="not a worker URL"):
        worker_address("mailto:x")


# --- options --------------------------------------------------------------------------------------
def test_option_defaults_and_parsing() -> None:
    assert parse_listen_options({}) == ListenOptions()
    parsed = parse_listen_options({"language": "EN", "punctuate": "false", "timestamps": True})
    assert parsed == ListenOptions(language="en", punctuate=False, timestamps=True)
    assert parsed.features() == ["batch", "timestamps"]


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({"punctuate": "yes please"}, "punctuate must be true or false"),
        ({"timestamps": 3}, "timestamps must be true or false"),
        ({"language": "english"}, "ISO 639-1"),
        ({"language": 7}, "ISO 639-1"),
        ({"colour": "red"}, "unknown option(s) colour"),
    ],
)
def test_bad_options_say_what_to_fix(raw: dict[str, object], message: str) -> None:
    with pytest.raises(InvalidParameter) as caught:
        parse_listen_options(raw)
    assert message in caught.value.message


def test_language_detection_is_not_in_this_release() -> None:
    with pytest.raises(FeatureNotAvailable):
        parse_listen_options({"language": "auto"})


def test_diarize_and_num_speakers() -> None:
    parsed = parse_listen_options({"diarize": "true", "num_speakers": "3"})
    assert (parsed.diarize, parsed.num_speakers) == (True, 3)
    assert "diarization" in parsed.features()
    assert parse_listen_options({"diarize": "true"}).num_speakers is None
    with pytest.raises(InvalidParameter, match="num_speakers needs diarize=true"):
        parse_listen_options({"num_speakers": "2"})
    with pytest.raises(InvalidParameter, match="num_speakers must be a whole number from 1 to 32"):
        parse_listen_options({"diarize": "true", "num_speakers": "33"})


def test_callback_url_is_accepted_and_needs_the_callbacks_feature() -> None:
    parsed = parse_listen_options({"callback_url": "https://x/y"})
    assert parsed.callback_url == "https://x/y"
    assert "callbacks" in parsed.features()
    with pytest.raises(InvalidParameter, match="callback_url must be an http:// or https:// URL"):
        parse_listen_options({"callback_url": "ftp://x/y"})


def test_num_speakers_range_is_checked_first() -> None:
    with pytest.raises(InvalidParameter, match="num_speakers must be a whole number from 1 to 32"):
        parse_listen_options({"num_speakers": "0"})


# --- error mapping --------------------------------------------------------------------------------
def test_documented_error_bodies() -> None:
    too_large = http_error(FileTooLarge("the upload is larger than 100 MB", max_size_mb=100))
    assert too_large.status == 422
    assert too_large.body == {
        "error": "Audio file too large",
        "code": "FILE_TOO_LARGE",
        "detail": "the upload is larger than 100 MB",
        "max_size_mb": 100,
    }
    long = http_error(AudioTooLong("2 h 10 min"))
    assert (long.status, long.body["error"], long.body["max_duration_s"]) == (422, "Audio too long", 7200)
    unsupported = http_error(UnsupportedFormat("webm"))
    assert unsupported.status == 415
    assert unsupported.body["supported_formats"] == ["wav", "mp3", "flac", "ogg", "m4a"]
    busy = http_error(NoWorkers("queue full"))
    assert busy.status == 503 and busy.body["retry_after"] == 30 and busy.headers["Retry-After"] == "30"
    limited = http_error(RateLimited("Rate limit exceeded: 60 requests per minute", retry_after=12))
    assert limited.status == 429 and limited.headers["Retry-After"] == "12"
    assert limited.body["error"] == "Rate limit exceeded" and limited.body["retry_after"] == 12


def test_unknown_codes_are_500_without_details() -> None:
    class Strange(InvalidParameter):
        code = "SOMETHING_NEW"

    answer = http_error(Strange("internal detail that must not leak"))
    assert answer.status == 500 and "internal detail" not in str(answer.body)


# --- worker choice --------------------------------------------------------------------------------
def _worker(
    address: str, in_flight: int = 0, capacity: int = 4, languages: str = "en", ready: bool = True
) -> WorkerView:
    return WorkerView(
        address,
        "registry",
        languages=frozenset(languages.split(",")),
        capacity=capacity,
        in_flight=in_flight,
        ready=ready,
    )


def test_pick_prefers_the_less_loaded_of_two() -> None:
    workers = [_worker("a", in_flight=3), _worker("b", in_flight=0)]
    picks = {pick_worker(workers, "en", {}, rng=random.Random(seed)).address for seed in range(20)}  # type: ignore[union-attr]
    assert picks == {"b"}


def test_pick_respects_language_readiness_room_and_exclusion() -> None:
    workers = [
        _worker("full", in_flight=4),
        _worker("draining", ready=False),
        _worker("spanish", languages="es"),
        _worker("ok"),
    ]
    assert pick_worker(workers, "en", {}).address == "ok"  # type: ignore[union-attr]
    assert pick_worker(workers, "en", {}, exclude=frozenset({"ok"})) is None
    assert pick_worker(workers, "es", {}).address == "spanish"  # type: ignore[union-attr]
    assert pick_worker(workers, "en", {"ok": 4}) is None  # this replica alone filled it


def test_registry_records_are_parsed_or_ignored() -> None:
    record = {"address": "10.0.0.5:2233", "model": "m", "languages": "en,es", "capacity": "8",
              "in_flight": "2", "queued": "1", "state": "ready"}  # fmt: skip
    view = parse_registry_record(record)
    assert view is not None and view.ready and view.languages == frozenset({"en", "es"})
    assert view.busy(0) == 3
    assert parse_registry_record({**record, "state": "draining"}).ready is False  # type: ignore[union-attr]
    assert parse_registry_record({"address": "x"}) is None
    assert parse_registry_record({**record, "capacity": "many"}) is None


# --- bodies ---------------------------------------------------------------------------------------
async def _chunks(data: bytes, size: int = 7) -> AsyncIterator[bytes]:
    for start in range(0, len(data), size):
        yield data[start : start + size]


def _form(*parts: tuple[str, bytes, str | None]) -> bytes:
    out = b""
    for name, value, filename in parts:
        disposition = f'form-data; name="{name}"' + (f'; filename="{filename}"' if filename else "")
        out += b"--B\r\nContent-Disposition: " + disposition.encode() + b"\r\n\r\n" + value + b"\r\n"
    return out + b"--B--\r\n"


def test_multipart_in_small_chunks() -> None:
    body = asyncio.run(
        read_multipart(
            _chunks(_form(("audio", b"RIFF....WAVE", "a.wav"), ("language", b"en", None))),
            "multipart/form-data; boundary=B",
            1000,
        )
    )
    assert body.audio == b"RIFF....WAVE" and body.filename == "a.wav" and body.options == {"language": "en"}


def test_multipart_limits_and_mistakes() -> None:
    with pytest.raises(FileTooLarge):
        asyncio.run(
            read_multipart(_chunks(_form(("audio", b"x" * 50, None))), "multipart/form-data; boundary=B", 10)
        )
    with pytest.raises(InvalidParameter, match="exactly one 'audio' part"):
        asyncio.run(
            read_multipart(
                _chunks(_form(("audio", b"a", None), ("audio", b"b", None))),
                "multipart/form-data; boundary=B",
                10,
            )
        )
    with pytest.raises(InvalidParameter, match="given twice"):
        asyncio.run(
            read_multipart(
                _chunks(_form(("language", b"en", None), ("language", b"fr", None))),
                "multipart/form-data; boundary=B",
                10,
            )
        )
    with pytest.raises(InvalidParameter, match="before the closing boundary"):
        asyncio.run(
            read_multipart(_chunks(_form(("audio", b"a", None))[:-8]), "multipart/form-data; boundary=B", 10)
        )
    with pytest.raises(InvalidParameter, match="boundary"):
        asyncio.run(read_multipart(_chunks(b""), "multipart/form-data", 10))
    big_field = _form(("language", b"e" * (MAX_FIELD_BYTES + 1), None))
    with pytest.raises(Exception, match="over 8192 bytes"):
        asyncio.run(read_multipart(_chunks(big_field, 4096), "multipart/form-data; boundary=B", 10))


def test_raw_and_json_bodies() -> None:
    assert asyncio.run(read_raw(_chunks(b"abc"), 3)) == b"abc"
    with pytest.raises(FileTooLarge):
        asyncio.run(read_raw(_chunks(b"abcd"), 3))
    parsed = asyncio.run(read_json(_chunks(b'{"url": "https://x/a.wav", "timestamps": true}')))
    assert parsed.url == "https://x/a.wav" and parsed.options == {"timestamps": True}
    with pytest.raises(InvalidParameter, match="malformed JSON"):
        asyncio.run(read_json(_chunks(b"{")))


# --- COMPAT ---------------------------------------------------------------------------------------
def test_compat_options() -> None:
    options, detections = compat_options({"word_timestamps": "true", "age_detection": "true", "model": "x"})
    assert options.timestamps and detections == {
        "age_detection": True,
        "gender_detection": False,
        "emotion_detection": False,
    }
    with pytest.raises(InvalidParameter, match="unknown parameter"):
        compat_options({"wordtimestamps": "true"})
    diarized, _ = compat_options({"diarize": "true"})
    assert diarized.diarize


def test_utterances_split_on_sentence_end_and_pause() -> None:
    words = [
        {"word": "Hello", "start": 0.0, "end": 0.4},
        {"word": "there.", "start": 0.5, "end": 0.9},
        {"word": "How", "start": 1.0, "end": 1.2},
        {"word": "are", "start": 1.3, "end": 1.5},
        {"word": "you", "start": 3.0, "end": 3.3},
    ]
    assert utterances(words) == [
        {"text": "Hello there.", "start": 0.0, "end": 0.9},
        {"text": "How are", "start": 1.0, "end": 1.5},
        {"text": "you", "start": 3.0, "end": 3.3},
    ]
    assert utterances([]) == []
