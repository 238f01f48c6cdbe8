"""`diarize` and `num_speakers` through the real stack (license server + proxy, a tiny.en worker with
its speaker encoder, the API): the documented `speakers` turns, `speaker` on words, the COMPAT
route's speaker fields, the license feature, and the bad values."""

from __future__ import annotations

import io
from collections.abc import Iterator

import httpx
import numpy as np
import pytest
import soundfile as sf

from tests.integration.api_stack import ApiStack
from tests.license_support import dev_key
from tests.speech_data import speech_clip

TIMEOUT = 120.0
SAMPLE_RATE = 16000


@pytest.fixture(scope="module")
def stack(api_stack: ApiStack) -> ApiStack:
    return api_stack


@pytest.fixture
def client(stack: ApiStack) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=stack.url, timeout=TIMEOUT) as http:
        yield http


@pytest.fixture(scope="module")
def two_speakers() -> bytes:
    """The LibriVox reader, J. F. Kennedy, the reader again, with half-second pauses (about 30 s)."""
    parts = []
    for clip_id in ("librivox_0870", "jfk", "librivox_0880"):
        audio, rate = sf.read(speech_clip(clip_id).path, dtype="float32")
        assert rate == SAMPLE_RATE
        parts += [audio, np.zeros(SAMPLE_RATE // 2, dtype=np.float32)]
    out = io.BytesIO()
    sf.write(out, np.concatenate(parts), SAMPLE_RATE, format="WAV", subtype="PCM_16")
    return out.getvalue()


def test_diarize_returns_speaker_turns_and_speaker_words(
    client: httpx.Client, stack: ApiStack, two_speakers: bytes
) -> None:
    response = client.post(
        "/v1/listen",
        headers=stack.auth(),
        files={"audio": ("talk.wav", two_speakers, "audio/wav")},
        data={"diarize": "true", "num_speakers": "2", "timestamps": "true"},
    )
    assert response.status_code == 200, response.text
    body = response.json()
    turns = body["speakers"]
    assert [t["speaker"] for t in turns] == ["SPEAKER_00", "SPEAKER_01", "SPEAKER_00"]
    assert set(turns[0]) == {"speaker", "text", "start", "end"}
    assert "ask not what your country can do for you" in turns[1]["text"].lower().replace("asked", "ask")
    assert turns[0]["start"] < turns[0]["end"] <= turns[1]["start"] < turns[1]["end"] <= turns[2]["start"]
    assert {w["speaker"] for w in body["words"]} == {"SPEAKER_00", "SPEAKER_01"}
    assert " ".join(t["text"] for t in turns) == body["text"]


def test_without_num_speakers_the_count_is_found(
    client: httpx.Client, stack: ApiStack, two_speakers: bytes
) -> None:
    response = client.post(
        "/v1/listen",
        headers={**stack.auth(), "Content-Type": "audio/wav"},
        params={"diarize": "true"},
        content=two_speakers,
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert {t["speaker"] for t in body["speakers"]} == {"SPEAKER_00", "SPEAKER_01"}
    assert "words" not in body, "words only with timestamps=true"


def test_single_speaker_and_silence(client: httpx.Client, stack: ApiStack) -> None:
    jfk = speech_clip("jfk").path.read_bytes()
    one = client.post(
        "/v1/listen",
        headers={**stack.auth(), "Content-Type": "audio/wav"},
        params={"diarize": "true", "num_speakers": "3"},
        content=jfk,
    )
    assert one.status_code == 200, one.text
    assert {t["speaker"] for t in one.json()["speakers"]} == {"SPEAKER_00"}
    quiet = io.BytesIO()
    sf.write(quiet, np.zeros(3 * SAMPLE_RATE, dtype=np.float32), SAMPLE_RATE, format="WAV", subtype="PCM_16")
    silent = client.post(
        "/v1/listen",
        headers={**stack.auth(), "Content-Type": "audio/wav"},
        params={"diarize": "true"},
        content=quiet.getvalue(),
    )
    assert silent.status_code == 200, silent.text
    assert silent.json()["speakers"] == [] and silent.json()["text"] == ""


def test_undiarized_responses_are_unchanged(
    client: httpx.Client, stack: ApiStack, two_speakers: bytes
) -> None:
    body = client.post(
        "/v1/listen",
        headers={**stack.auth(), "Content-Type": "audio/wav"},
        params={"timestamps": "true"},
        content=two_speakers,
    ).json()
    assert "speakers" not in body
    assert all("speaker" not in w for w in body["words"])


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"num_speakers": "2"}, "num_speakers needs diarize=true"),
        ({"diarize": "true", "num_speakers": "0"}, "num_speakers must be a whole number from 1 to 32"),
        ({"diarize": "true", "num_speakers": "two"}, "num_speakers must be a whole number from 1 to 32"),
        ({"diarize": "sometimes"}, "diarize must be true or false"),
    ],
)
def test_bad_diarization_options_are_a_clear_400(
    client: httpx.Client, stack: ApiStack, params: dict[str, str], message: str
) -> None:
    response = client.post(
        "/v1/listen",
        headers={**stack.auth(), "Content-Type": "audio/wav"},
        params=params,
        content=speech_clip("jfk").path.read_bytes(),
    )
    assert response.status_code == 400, response.text
    assert response.json()["code"] == "INVALID_PARAMETER"
    assert message in response.json()["error"]


def test_diarization_needs_the_licensed_feature(client: httpx.Client, stack: ApiStack) -> None:
    without = dev_key(license_id=stack.license_id, features=["batch", "timestamps", "punctuation"])
    response = client.post(
        "/v1/listen",
        headers={**stack.auth(without), "Content-Type": "audio/wav"},
        params={"diarize": "true"},
        content=speech_clip("jfk").path.read_bytes(),
    )
    assert response.status_code == 403, response.text
    assert response.json()["code"] == "FEATURE_NOT_LICENSED" and response.json()["feature"] == "diarization"


def test_compat_route_names_speakers_the_vendors_way(
    client: httpx.Client, stack: ApiStack, two_speakers: bytes
) -> None:
    response = client.post(
        "/api/v1/lightning/get_text",
        headers={**stack.auth(), "Content-Type": "audio/wav"},
        params={"diarize": "true", "word_timestamps": "true"},
        content=two_speakers,
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert {w["speaker"] for w in body["words"]} == {"speaker_0", "speaker_1"}
    speakers = [u["speaker"] for u in body["utterances"]]
    assert speakers[0] == "speaker_0" and "speaker_1" in speakers
    assert all(
        a["speaker"] != b["speaker"] or a["end"] <= b["start"]
        for a, b in zip(body["utterances"], body["utterances"][1:], strict=False)
    )
