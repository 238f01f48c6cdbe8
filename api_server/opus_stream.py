"""Opus in live streams: raw Opus packets (``encoding=opus``, one packet per WebSocket message) or
an Ogg Opus byte stream (``encoding=ogg_opus``, split anywhere), decoded here to 48 kHz mono 16-bit
PCM for the worker. The Ogg page parsing is pure; decoding uses FFmpeg's Opus decoder (PyAV).
"""

from __future__ import annotations

import struct
from typing import Any

import numpy as np

from oyez.errors import InvalidParameter

OPUS_RATE = 48000
_PAGE_HEADER = struct.Struct("<4sBBqIIIB")  # capture, version, type, granule, serial, seq, crc, segments
MAX_PAGE_BYTES = 27 + 255 + 255 * 255
# RFC 7845: an Ogg Opus packet holds at most 120 ms of audio, 48 frames of at most 1275 bytes.
MAX_OPUS_PACKET_BYTES = 48 * 1275


class OggPacketReader:
    """Bytes of an Ogg stream in, complete packets out (a packet may span pages)."""

    def __init__(self) -> None:
        self._buffer = b""
        self._partial = b""

    def feed(self, data: bytes) -> list[bytes]:
        self._buffer += data
        packets: list[bytes] = []
        while True:
            if len(self._buffer) < _PAGE_HEADER.size:
                return packets
            capture, version, _, _, _, _, _, segments = _PAGE_HEADER.unpack_from(self._buffer)
            if capture != b"OggS" or version != 0:
                raise InvalidParameter("encoding=ogg_opus: the stream is not Ogg (no 'OggS' page header)")
            table_end = _PAGE_HEADER.size + segments
            if len(self._buffer) < table_end:
                return packets
            lacing = self._buffer[_PAGE_HEADER.size : table_end]
            page_end = table_end + sum(lacing)
            if len(self._buffer) < page_end:
                return packets
            position = table_end
            for value in lacing:
                self._partial += self._buffer[position : position + value]
                position += value
                if len(self._partial) > MAX_OPUS_PACKET_BYTES:
                    raise InvalidParameter(
                        f"encoding=ogg_opus: a packet is larger than {MAX_OPUS_PACKET_BYTES} bytes, "
                        "the most Opus allows; the stream is damaged"
                    )
                if value < 255:
                    packets.append(self._partial)
                    self._partial = b""
            self._buffer = self._buffer[page_end:]


class OpusDecoder:
    """Opus packets -> 48 kHz mono little-endian int16 bytes."""

    def __init__(self) -> None:
        import av

        self._av: Any = av
        self._codec = av.CodecContext.create("opus", "r")
        self._codec.sample_rate = OPUS_RATE
        self._to_pcm = av.AudioResampler(format="s16", layout="mono", rate=OPUS_RATE)

    def decode(self, packet: bytes) -> bytes:
        if not packet:
            return b""
        try:
            frames = self._codec.decode(self._av.Packet(packet))
        except self._av.error.FFmpegError as exc:
            raise InvalidParameter(f"an Opus packet could not be decoded ({exc})") from None
        pcm = b""
        for frame in frames:
            for converted in self._to_pcm.resample(frame):
                pcm += np.ascontiguousarray(converted.to_ndarray().reshape(-1), dtype="<i2").tobytes()
        return pcm


class OggOpusDecoder:
    """An Ogg Opus byte stream -> 48 kHz mono int16 bytes (the OpusHead/OpusTags packets skipped)."""

    def __init__(self) -> None:
        self._reader = OggPacketReader()
        self._decoder = OpusDecoder()
        self._headers_left = 2

    def decode(self, data: bytes) -> bytes:
        pcm = b""
        for packet in self._reader.feed(data):
            if self._headers_left:
                if self._headers_left == 2 and not packet.startswith(b"OpusHead"):
                    raise InvalidParameter(
                        "encoding=ogg_opus: the Ogg stream does not carry Opus (no OpusHead)"
                    )
                self._headers_left -= 1
                continue
            pcm += self._decoder.decode(packet)
        return pcm
