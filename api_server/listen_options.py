"""``POST /v1/listen`` options: parsing and validation (pure; no I/O).

Options arrive as query parameters, multipart form fields (strings) or JSON members; all go through
:func:`parse_listen_options`, so every route validates the same way and every error names the
option and the values it accepts. Defaults follow api-contract.md C5.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

from api_server.errors import FeatureNotAvailable
from oyez import constants
from oyez.errors import InvalidParameter

_LANGUAGE = re.compile(r"^[a-z]{2,3}$")
_TRUE = frozenset({"true", "1", "yes"})
_FALSE = frozenset({"false", "0", "no"})
MAX_SPEAKERS = constants.MAX_SPEAKERS
AUTO_LANGUAGES = frozenset({"auto", "multi"})
MAX_CALLBACK_URL_CHARS = 2048


@dataclass(frozen=True)
class ListenOptions:
    language: str = "en"
    punctuate: bool = True
    diarize: bool = False
    num_speakers: int | None = None
    timestamps: bool = False
    callback_url: str | None = None

    def features(self) -> list[str]:
        """License feature names this request uses (for feature checks and usage events)."""
        used = ["batch"]
        if self.timestamps:
            used.append("timestamps")
        if self.punctuate:
            used.append("punctuation")
        if self.diarize:
            used.append("diarization")
        if self.callback_url:
            used.append("callbacks")
        return used


KNOWN_OPTIONS = ("language", "punctuate", "diarize", "num_speakers", "timestamps", "callback_url")


def parse_bool(name: str, value: object) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in _TRUE | _FALSE:
        return value.strip().lower() in _TRUE
    raise InvalidParameter(f"{name} must be true or false, got {_show(value)}")


def parse_language(value: object) -> str:
    if not isinstance(value, str):
        raise InvalidParameter(f"language must be an ISO 639-1 code such as 'en', got {_show(value)}")
    code = value.strip().lower()
    if code in AUTO_LANGUAGES:
        raise FeatureNotAvailable(
            f"language={code} (automatic detection) is not available yet; pass the ISO 639-1 code, e.g. 'en'"
        )
    if not _LANGUAGE.match(code):
        raise InvalidParameter(f"language must be an ISO 639-1 code such as 'en', got {_show(value)}")
    return code


def parse_num_speakers(value: object) -> int:
    """``num_speakers``: a whole number 1..MAX_SPEAKERS (an int, or its digits in a string)."""
    number: int | None = None
    if isinstance(value, int) and not isinstance(value, bool):
        number = value
    elif isinstance(value, str) and value.strip().isdigit():
        number = int(value.strip())
    if number is None or not 1 <= number <= MAX_SPEAKERS:
        raise InvalidParameter(
            f"num_speakers must be a whole number from 1 to {MAX_SPEAKERS}, got {_show(value)}"
        )
    return number


def _parse_callback(value: object) -> str | None:
    """An http(s) URL, or None. Its host is checked against the SSRF guard when the job is
    submitted (that needs DNS, so it is not done here)."""
    if value is None or value == "":
        return None
    if not isinstance(value, str) or not value.strip().lower().startswith(("http://", "https://")):
        raise InvalidParameter(f"callback_url must be an http:// or https:// URL, got {_show(value)}")
    if len(value) > MAX_CALLBACK_URL_CHARS:
        raise InvalidParameter(f"callback_url is longer than {MAX_CALLBACK_URL_CHARS} characters")
    return value.strip()


def _show(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def parse_listen_options(raw: Mapping[str, object]) -> ListenOptions:
    """Validate options; unknown names are refused (a typo must not be silently ignored)."""
    unknown = sorted(set(raw) - set(KNOWN_OPTIONS))
    if unknown:
        raise InvalidParameter(
            f"unknown option(s) {', '.join(unknown)}; known options: {', '.join(KNOWN_OPTIONS)}"
        )
    options = ListenOptions(
        language=parse_language(raw["language"]) if "language" in raw else "en",
        punctuate=parse_bool("punctuate", raw["punctuate"]) if "punctuate" in raw else True,
        diarize=parse_bool("diarize", raw["diarize"]) if "diarize" in raw else False,
        num_speakers=parse_num_speakers(raw["num_speakers"])
        if raw.get("num_speakers") not in (None, "")
        else None,
        timestamps=parse_bool("timestamps", raw["timestamps"]) if "timestamps" in raw else False,
        callback_url=_parse_callback(raw.get("callback_url")),
    )
    if options.num_speakers is not None and not options.diarize:
        raise InvalidParameter("num_speakers needs diarize=true (it is the expected number of speakers)")
    return options
