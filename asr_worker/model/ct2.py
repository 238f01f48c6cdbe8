"""Read a CTranslate2 ``model.bin`` (binary format 6) into numpy arrays.

Layout: uint32 version, string spec name, uint32 revision, uint32 variable count, then per
variable: string name, uint8 rank, uint32 dims[rank], uint8 dtype, uint32 byte count, raw bytes;
then uint32 alias count and (alias, target) string pairs. Strings are uint16 length (including a
NUL terminator) followed by UTF-8 bytes. Pure numpy, no CTranslate2 needed.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np
import numpy.typing as npt

from oyez.errors import ModelError

SUPPORTED_BINARY_VERSION = 6
_DTYPES: dict[int, npt.DTypeLike] = {
    0: np.float32,
    1: np.int8,
    2: np.int16,
    3: np.int32,
    4: np.float16,
}


@dataclass(frozen=True)
class Ct2Model:
    spec_name: str
    revision: int
    variables: dict[str, npt.NDArray[np.generic]]

    def get(self, name: str) -> npt.NDArray[np.generic]:
        try:
            return self.variables[name]
        except KeyError as exc:
            raise ModelError(f"CTranslate2 model has no variable {name!r}") from exc

    def float32(self, name: str) -> npt.NDArray[np.float32]:
        return np.asarray(self.get(name), dtype=np.float32)

    def scalar(self, name: str) -> int:
        return int(np.asarray(self.get(name)).reshape(-1)[0])


def _read(handle: BinaryIO, fmt: str) -> tuple[int, ...]:
    size = struct.calcsize("<" + fmt)
    raw = handle.read(size)
    if len(raw) != size:
        raise ModelError("CTranslate2 model.bin is truncated")
    return struct.unpack("<" + fmt, raw)


def _read_string(handle: BinaryIO) -> str:
    (length,) = _read(handle, "H")
    raw = handle.read(length)
    if len(raw) != length or not raw.endswith(b"\0"):
        raise ModelError("CTranslate2 model.bin has a malformed string")
    return raw[:-1].decode("utf-8")


def read_ct2_model(path: Path) -> Ct2Model:
    """Parse ``path``; aliases become extra keys pointing at the same arrays."""
    variables: dict[str, npt.NDArray[np.generic]] = {}
    with path.open("rb") as handle:
        (version,) = _read(handle, "I")
        if version != SUPPORTED_BINARY_VERSION:
            raise ModelError(f"CTranslate2 binary version {version} is not supported (need 6)")
        spec_name = _read_string(handle)
        (revision,) = _read(handle, "I")
        (count,) = _read(handle, "I")
        for _ in range(count):
            name = _read_string(handle)
            (rank,) = _read(handle, "B")
            dims = _read(handle, "I" * rank) if rank else ()
            (dtype_id,) = _read(handle, "B")
            (num_bytes,) = _read(handle, "I")
            if dtype_id not in _DTYPES:
                raise ModelError(f"CTranslate2 variable {name!r} has unsupported dtype id {dtype_id}")
            raw = handle.read(num_bytes)
            if len(raw) != num_bytes:
                raise ModelError(f"CTranslate2 model.bin is truncated inside {name!r}")
            variables[name] = np.frombuffer(raw, dtype=_DTYPES[dtype_id]).reshape(dims)
        (alias_count,) = _read(handle, "I")
        for _ in range(alias_count):
            alias, target = _read_string(handle), _read_string(handle)
            variables[alias] = variables[target]
    return Ct2Model(spec_name=spec_name, revision=revision, variables=variables)
