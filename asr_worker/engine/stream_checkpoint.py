"""Where a live stream stands after a final: enough to continue it on another worker exactly.

After each final the stream's position is packed into an opaque token: the committed end ``E``
(16 kHz samples since the stream began), the VAD's position ``V`` (samples it has judged; ``V >= E``),
the VAD's recurrent state and context, and whether speech was in progress. A new stream opened with
the token and fed the audio from ``E`` on continues as the first would have: the samples up to ``V``
join the pending utterance without being judged again, the VAD resumes in the same state, and
times stay on the original timeline. Only 16 kHz input replays bit for bit (other rates pass through
a fresh resampler), which is the point where a replay can differ at all.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

import numpy as np

from oyez.errors import InvalidParameter

_MAGIC = b"OYZ1"
_HEADER = struct.Struct("<4sQQ?")
STATE_SHAPE = (2, 1, 128)
CONTEXT_SHAPE = (1, 64)
_STATE_FLOATS = 2 * 128
_CONTEXT_FLOATS = 64
TOKEN_BYTES = _HEADER.size + 4 * (_STATE_FLOATS + _CONTEXT_FLOATS)


@dataclass(frozen=True)
class StreamCheckpoint:
    committed_samples: int  # E
    vad_samples: int  # V
    in_speech: bool
    vad_state: np.ndarray  # float32 (2, 1, 128)
    vad_context: np.ndarray  # float32 (1, 64)

    def pack(self) -> bytes:
        return (
            _HEADER.pack(_MAGIC, self.committed_samples, self.vad_samples, self.in_speech)
            + np.ascontiguousarray(self.vad_state, dtype="<f4").tobytes()
            + np.ascontiguousarray(self.vad_context, dtype="<f4").tobytes()
        )


def unpack_checkpoint(token: bytes) -> StreamCheckpoint:
    """The checkpoint in ``token``; :class:`InvalidParameter` when it is not one this build wrote."""
    if len(token) != TOKEN_BYTES or not token.startswith(_MAGIC):
        raise InvalidParameter("resume_token is not a stream checkpoint written by this worker version")
    _, committed, vad, in_speech = _HEADER.unpack_from(token)
    if vad < committed:
        raise InvalidParameter("resume_token is inconsistent (VAD position before the committed end)")
    floats = np.frombuffer(token, dtype="<f4", offset=_HEADER.size)
    state = floats[:_STATE_FLOATS].reshape(STATE_SHAPE).astype(np.float32)
    context = floats[_STATE_FLOATS:].reshape(CONTEXT_SHAPE).astype(np.float32)
    if not (np.isfinite(state).all() and np.isfinite(context).all()):
        raise InvalidParameter("resume_token holds non-finite VAD state")
    return StreamCheckpoint(int(committed), int(vad), bool(in_speech), state, context)
