"""Where a live stream stands after a final: enough to continue it on another worker exactly.

After each final the stream's position is packed into an opaque token: the committed end ``E``
(16 kHz samples since the stream began), the VAD's position ``V`` (samples it has judged; ``V >= E``),
the VAD's recurrent state and context, whether speech was in progress, the VAD's speech
probabilities for the chunks from the one holding ``E`` up to ``V`` (the speech regions a diarized
final is cut into), and the session's voice profiles (see :mod:`.speaker_tracking`). A new stream
opened with the token and fed the audio from ``E`` on continues as the first would have: the samples
up to ``V`` join the pending utterance without being judged again, the VAD resumes in the same
state, times stay on the original timeline and speakers keep their labels. Only 16 kHz input
replays bit for bit (other rates pass through a fresh resampler), which is the point where a replay
can differ at all.

Layout (little-endian): ``OYZ2``, E (u64), V (u64), in speech (bool), probabilities (u16 count),
speakers (u16 count); VAD state (2x1x128 f32), context (1x64 f32); the probabilities (f32 each);
per speaker its window count (u32) and embedding sum (256 f32). ``OYZ1`` tokens (the header's first
four fields and the VAD floats, from workers before diarization) are still read.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from oyez.constants import MAX_SPEAKERS
from oyez.errors import InvalidParameter

from .speaker_tracking import EMBEDDING_SIZE, VoiceProfile
from .vad import CHUNK

_MAGIC_V1 = b"OYZ1"
_MAGIC = b"OYZ2"
_HEADER_V1 = struct.Struct("<4sQQ?")
_HEADER = struct.Struct("<4sQQ?HH")
_PROFILE = struct.Struct("<I")
STATE_SHAPE = (2, 1, 128)
CONTEXT_SHAPE = (1, 64)
_STATE_FLOATS = 2 * 128
_CONTEXT_FLOATS = 64
_VAD_BYTES = 4 * (_STATE_FLOATS + _CONTEXT_FLOATS)
_PROFILE_BYTES = _PROFILE.size + 4 * EMBEDDING_SIZE
V1_TOKEN_BYTES = _HEADER_V1.size + _VAD_BYTES
_STALE = "resume_token is not a stream checkpoint written by this worker version"


@dataclass(frozen=True)
class StreamCheckpoint:
    committed_samples: int  # E
    vad_samples: int  # V
    in_speech: bool
    vad_state: np.ndarray  # float32 (2, 1, 128)
    vad_context: np.ndarray  # float32 (1, 64)
    # VAD speech probabilities of the chunks from the one holding E (start E // CHUNK * CHUNK) to V.
    speech_probabilities: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.float32))
    speakers: Sequence[VoiceProfile] = ()

    @property
    def probabilities_start(self) -> int:
        """The stream position (samples) of the first of ``speech_probabilities``."""
        return self.committed_samples // CHUNK * CHUNK

    def pack(self) -> bytes:
        header = _HEADER.pack(
            _MAGIC,
            self.committed_samples,
            self.vad_samples,
            self.in_speech,
            len(self.speech_probabilities),
            len(self.speakers),
        )
        parts = [
            header,
            np.ascontiguousarray(self.vad_state, dtype="<f4").tobytes(),
            np.ascontiguousarray(self.vad_context, dtype="<f4").tobytes(),
            np.ascontiguousarray(self.speech_probabilities, dtype="<f4").tobytes(),
        ]
        for profile in self.speakers:
            total = np.ascontiguousarray(profile.total, dtype="<f4")
            parts += [_PROFILE.pack(profile.windows), total.tobytes()]
        return b"".join(parts)


def unpack_checkpoint(token: bytes) -> StreamCheckpoint:
    """The checkpoint in ``token``; :class:`InvalidParameter` when it is not one this build wrote."""
    if token.startswith(_MAGIC_V1) and len(token) == V1_TOKEN_BYTES:
        return _unpack_v1(token)
    if not token.startswith(_MAGIC) or len(token) < _HEADER.size + _VAD_BYTES:
        raise InvalidParameter(_STALE)
    _, committed, vad, in_speech, n_probabilities, n_speakers = _HEADER.unpack_from(token)
    if len(token) != _HEADER.size + _VAD_BYTES + 4 * n_probabilities + _PROFILE_BYTES * n_speakers:
        raise InvalidParameter(_STALE)
    if vad < committed:
        raise InvalidParameter("resume_token is inconsistent (VAD position before the committed end)")
    if vad % CHUNK or n_probabilities != (vad - committed // CHUNK * CHUNK) // CHUNK:
        raise InvalidParameter("resume_token is inconsistent (speech probabilities do not span E..V)")
    if n_speakers > MAX_SPEAKERS:
        raise InvalidParameter(f"resume_token holds {n_speakers} speakers, more than {MAX_SPEAKERS}")
    state, context = _vad_floats(token, _HEADER.size)
    offset = _HEADER.size + _VAD_BYTES
    probabilities = np.frombuffer(token, dtype="<f4", count=n_probabilities, offset=offset).astype(np.float32)
    if not np.isfinite(probabilities).all():
        raise InvalidParameter("resume_token holds non-finite speech probabilities")
    offset += 4 * n_probabilities
    speakers = []
    for _ in range(n_speakers):
        (windows,) = _PROFILE.unpack_from(token, offset)
        total = np.frombuffer(token, dtype="<f4", count=EMBEDDING_SIZE, offset=offset + _PROFILE.size)
        if windows == 0 or not np.isfinite(total).all():
            raise InvalidParameter("resume_token holds an invalid voice profile")
        speakers.append(VoiceProfile(total.astype(np.float32), int(windows)))
        offset += _PROFILE_BYTES
    return StreamCheckpoint(
        int(committed), int(vad), bool(in_speech), state, context, probabilities, tuple(speakers)
    )


def _unpack_v1(token: bytes) -> StreamCheckpoint:
    _, committed, vad, in_speech = _HEADER_V1.unpack_from(token)
    if vad < committed:
        raise InvalidParameter("resume_token is inconsistent (VAD position before the committed end)")
    state, context = _vad_floats(token, _HEADER_V1.size)
    # No probabilities were kept: the replayed stretch counts as speech if speech was in progress.
    span = max(0, -(-(vad - committed // CHUNK * CHUNK) // CHUNK))
    probabilities = np.full(span, 1.0 if in_speech else 0.0, dtype=np.float32)
    return StreamCheckpoint(int(committed), int(vad), bool(in_speech), state, context, probabilities)


def _vad_floats(token: bytes, offset: int) -> tuple[np.ndarray, np.ndarray]:
    floats = np.frombuffer(token, dtype="<f4", count=_STATE_FLOATS + _CONTEXT_FLOATS, offset=offset)
    state = floats[:_STATE_FLOATS].reshape(STATE_SHAPE).astype(np.float32)
    context = floats[_STATE_FLOATS:].reshape(CONTEXT_SHAPE).astype(np.float32)
    if not (np.isfinite(state).all() and np.isfinite(context).all()):
        raise InvalidParameter("resume_token holds non-finite VAD state")
    return state, context
