"""Recognise audio containers by their content (magic bytes), with no decoding dependencies.

``sniff_format`` names the container of an upload so the decoder can pick a backend and reject
unsupported files with a precise message; ``describe_unsupported`` names common things we do *not*
decode (WebM, AIFF, a PDF, plain text, ...) for that message; ``parse_wav_header`` reads a WAV/RF64
header so the declared duration and sample rate can be checked before any sample is decoded.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from oyez.constants import SUPPORTED_FORMATS

__all__ = [
    "AAC_FAMILY",
    "SUPPORTED_FORMATS",
    "WavHeader",
    "describe_unsupported",
    "ogg_codec",
    "parse_wav_header",
    "sniff_format",
]

AAC_FAMILY = frozenset({"m4a", "aac"})
"""``sniff_format`` reports raw ADTS AAC as ``"aac"``; it is accepted as part of the M4A family."""

_MP4_NON_AUDIO_BRANDS = frozenset({b"heic", b"heix", b"hevc", b"mif1", b"msf1", b"avif", b"avis", b"crx "})
# MPEG audio: bitrates (kbit/s) by [version is MPEG-1][layer 1..3][index]; sample rates by version.
_MPEG1_BITRATES = {
    1: (0, 32, 64, 96, 128, 160, 192, 224, 256, 288, 320, 352, 384, 416, 448),
    2: (0, 32, 48, 56, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320, 384),
    3: (0, 32, 40, 48, 56, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320),
}
_MPEG2_BITRATES = {
    1: (0, 32, 48, 56, 64, 80, 96, 112, 128, 144, 160, 176, 192, 224, 256),
    2: (0, 8, 16, 24, 32, 40, 48, 56, 64, 80, 96, 112, 128, 144, 160),
    3: (0, 8, 16, 24, 32, 40, 48, 56, 64, 80, 96, 112, 128, 144, 160),
}
_MPEG_RATES = {3: (44100, 48000, 32000), 2: (22050, 24000, 16000), 0: (11025, 12000, 8000)}
_SNIFF_BYTES = 16384  # enough to see a second MPEG/ADTS frame header
# WAV data sizes that streaming writers leave in place when they cannot seek back (unknown length).
_WAV_SIZE_PLACEHOLDERS = frozenset({0, 0xFFFFFFFF, 0x7FFFF000})


def sniff_format(head: bytes) -> str | None:
    """Name the audio container in ``head`` (the first bytes of a file; more bytes, better checks).

    Returns ``"wav"``, ``"mp3"``, ``"flac"``, ``"ogg"``, ``"m4a"`` or ``"aac"`` (raw ADTS AAC, part
    of the M4A family), or ``None`` when the bytes are no container we decode.
    """
    if head[:3] == b"ID3":
        # An ID3v2 tag may precede MP3, ADTS AAC or even FLAC; look behind it when we can.
        after = _skip_id3(head)
        if after is not None and after < len(head):
            inner = _sniff_container(head[after : after + _SNIFF_BYTES])
            if inner in ("flac", "aac", "mp3"):
                return inner
        return "mp3"
    return _sniff_container(head[:_SNIFF_BYTES])


def _sniff_container(head: bytes) -> str | None:
    if len(head) >= 12 and head[:4] in (b"RIFF", b"RIFX", b"RF64", b"BW64") and head[8:12] == b"WAVE":
        return "wav"
    if head[:4] == b"fLaC":
        return "flac"
    if head[:4] == b"OggS":
        return "ogg"
    if len(head) >= 12 and head[4:8] == b"ftyp":
        return None if head[8:12] in _MP4_NON_AUDIO_BRANDS else "m4a"
    if _is_adts(head):
        return "aac"
    if _is_mpeg_audio(head):
        return "mp3"
    return None


def describe_unsupported(head: bytes) -> str | None:
    """Name a common container or file type that is *not* supported, for an error message."""
    head = bytes(head[:512])
    known: tuple[tuple[bytes, str], ...] = (
        (b"\x1a\x45\xdf\xa3", "WebM/Matroska"),
        (b"\x30\x26\xb2\x75\x8e\x66\xcf\x11", "WMA/ASF"),
        (b"#!AMR", "AMR"),
        (b"caff", "Apple CAF"),
        (b".snd", "Sun AU"),
        (b"MThd", "MIDI"),
        (b"wvpk", "WavPack"),
        (b"MAC ", "Monkey's Audio (APE)"),
        (b"%PDF", "a PDF document"),
        (b"\x89PNG", "a PNG image"),
        (b"\xff\xd8\xff", "a JPEG image"),
        (b"GIF8", "a GIF image"),
        (b"PK\x03\x04", "a ZIP archive"),
        (b"\x1f\x8b", "a gzip archive"),
    )
    for magic, name in known:
        if head.startswith(magic):
            return name
    if head[:4] == b"FORM" and head[8:12] in (b"AIFF", b"AIFC"):
        return "AIFF"
    if head[:4] == b"RIFF":
        return f"a RIFF {head[8:12].decode('latin-1')!r} file (not WAVE)"
    if len(head) >= 12 and head[4:8] == b"ftyp":
        return f"an MP4/HEIF image ({head[8:12].decode('latin-1').strip()!r} brand)"
    if _looks_like_text(head):
        return "text, not audio"
    return None


def ogg_codec(head: bytes) -> str | None:
    """The codec of the first logical stream in an Ogg file: ``"vorbis"``, ``"opus"``, ``"flac"``,
    ``"speex"``, or ``None`` if the first page is incomplete or holds something else."""
    if len(head) < 27 or head[:4] != b"OggS":
        return None
    start = 27 + head[26]  # page header + segment table
    packet = head[start : start + 8]
    for magic, name in (
        (b"\x01vorbis", "vorbis"),
        (b"OpusHead", "opus"),
        (b"\x7fFLAC", "flac"),
        (b"Speex   ", "speex"),
    ):
        if packet.startswith(magic):
            return name
    return None


@dataclass(frozen=True)
class WavHeader:
    """What a WAV (or RF64/BW64) header declares, read without decoding any samples."""

    format_tag: int
    channels: int
    sample_rate: int
    block_align: int
    bits_per_sample: int
    data_bytes: int | None
    """Size of the ``data`` chunk; ``None`` when it is a streaming placeholder (length unknown)."""

    @property
    def declared_seconds(self) -> float | None:
        """Duration the header claims, or ``None`` if it cannot be computed (e.g. compressed data)."""
        if self.data_bytes is None or self.block_align <= 0 or self.sample_rate <= 0:
            return None
        if self.format_tag not in (0x0001, 0x0003, 0x0006, 0x0007, 0xFFFE):  # PCM, float, A/µ-law, ext.
            return None
        return self.data_bytes / self.block_align / self.sample_rate


def parse_wav_header(head: bytes) -> WavHeader | None:
    """Parse the ``fmt `` (and ``ds64``) chunks up to the ``data`` chunk; ``None`` if incomplete.

    ``head`` must hold every chunk before the ``data`` chunk's own 8-byte header; that is a few dozen
    bytes for ordinary files (more when a large ``LIST``/``bext`` chunk comes first).
    """
    if len(head) < 12 or head[8:12] != b"WAVE" or head[:4] not in (b"RIFF", b"RF64", b"BW64"):
        return None
    fmt: tuple[int, int, int, int, int] | None = None
    ds64_data: int | None = None
    pos = 12
    while pos + 8 <= len(head):
        chunk_id = head[pos : pos + 4]
        (size,) = struct.unpack_from("<I", head, pos + 4)
        body = pos + 8
        if chunk_id == b"fmt " and body + 16 <= len(head):
            tag, channels, rate, _byte_rate, align, bits = struct.unpack_from("<HHIIHH", head, body)
            fmt = (tag, channels, rate, align, bits)
        elif chunk_id == b"ds64" and body + 16 <= len(head):
            (ds64_data,) = struct.unpack_from("<Q", head, body + 8)
        elif chunk_id == b"data":
            if fmt is None:
                return None
            data_bytes: int | None = size
            if head[:4] != b"RIFF" and size == 0xFFFFFFFF:
                data_bytes = ds64_data
            elif size in _WAV_SIZE_PLACEHOLDERS:
                data_bytes = None
            tag, channels, rate, align, bits = fmt
            return WavHeader(tag, channels, rate, align, bits, data_bytes)
        pos = body + size + (size & 1)
    return None


def _skip_id3(head: bytes) -> int | None:
    """Offset just past an ID3v2 tag at the start of ``head``, or ``None`` if it is malformed."""
    if len(head) < 10 or any(b & 0x80 for b in head[6:10]):
        return None
    size = (head[6] << 21) | (head[7] << 14) | (head[8] << 7) | head[9]
    footer = 10 if head[5] & 0x10 else 0
    return 10 + size + footer


def _is_adts(head: bytes) -> bool:
    """ADTS AAC: 12-bit sync, layer bits ``00``; checks the next frame's sync when it is present."""
    if len(head) < 7 or head[0] != 0xFF or (head[1] & 0xF6) != 0xF0:
        return False
    if (head[2] >> 2) & 0x0F > 12:  # sampling frequency index
        return False
    frame_len = ((head[3] & 0x03) << 11) | (head[4] << 3) | (head[5] >> 5)
    if frame_len < 7:
        return False
    nxt = head[frame_len : frame_len + 2]
    return len(nxt) < 2 or (nxt[0] == 0xFF and (nxt[1] & 0xF6) == 0xF0)


def _mpeg_frame_length(h: bytes) -> int | None:
    """Length in bytes of the MPEG audio (layer I/II/III) frame whose header is ``h[:4]``."""
    if len(h) < 4 or h[0] != 0xFF or (h[1] & 0xE0) != 0xE0:
        return None
    version = (h[1] >> 3) & 0x03  # 3 = MPEG-1, 2 = MPEG-2, 0 = MPEG-2.5, 1 = reserved
    layer = 4 - ((h[1] >> 1) & 0x03)  # bits 11/10/01 -> layer 1/2/3; 00 (-> 4) is reserved
    bitrate_index = h[2] >> 4
    rate_index = (h[2] >> 2) & 0x03
    if version == 1 or layer == 4 or bitrate_index in (0, 15) or rate_index == 3:
        return None
    table = _MPEG1_BITRATES if version == 3 else _MPEG2_BITRATES
    bitrate = table[layer][bitrate_index] * 1000
    rate = _MPEG_RATES[version][rate_index]
    padding = (h[2] >> 1) & 0x01
    if layer == 1:
        return (12 * bitrate // rate + padding) * 4
    per_frame = 144 if (layer == 2 or version == 3) else 72
    return per_frame * bitrate // rate + padding


def _is_mpeg_audio(head: bytes) -> bool:
    """An MPEG audio frame header (not ADTS); checks the following frame's header when present."""
    length = _mpeg_frame_length(head)
    if length is None:
        return False
    if len(head) < length + 4:
        return True
    return _mpeg_frame_length(head[length : length + 4]) is not None


def _looks_like_text(head: bytes) -> bool:
    if not head:
        return False
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError:
        # A multi-byte character may be cut at the end of ``head``; retry without the last 3 bytes.
        try:
            text = head[:-3].decode("utf-8")
        except UnicodeDecodeError:
            return False
    printable = sum(ch.isprintable() or ch in "\r\n\t" for ch in text)
    return bool(text) and printable / len(text) > 0.95
