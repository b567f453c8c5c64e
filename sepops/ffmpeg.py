"""Decoding with FFmpeg (PyAV) what libsndfile cannot read: AAC and ALAC (``.m4a``, ``.mp4``),
raw AAC (``.aac``), Opus in WebM/Matroska, WMA (``.wma``), and any other container FFmpeg
knows with an audio stream.

PyAV's wheel bundles FFmpeg and its decoders, so nothing is needed from the system.
:func:`sepops.audio.load_audio` tries libsndfile first (faster, and exact for PCM/FLAC) and
comes here when it does not recognise the file. Only the first audio stream is decoded (a
video's soundtrack, the first language of several).
"""
from __future__ import annotations

import contextlib
import io
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from .audio import check_duration
from .errors import AudioError

__all__ = ["StreamInfo", "decode", "gapless_length", "open_blocks", "probe"]


@dataclass(frozen=True)
class StreamInfo:
    """What the container says of its first audio stream (before decoding)."""

    sample_rate: int
    channels: int
    #: Frames, from the stream's or the container's duration (0 when neither is known).
    frames: int
    container: str
    codec: str
    bit_rate: int | None


def _open(uri: str, data):
    """The container of ``data`` (bytes or a binary file object)."""
    import av

    fileobj = io.BytesIO(data) if isinstance(data, (bytes, bytearray)) else data
    try:
        # Tags are not ours to judge here (mutagen reads them): bad UTF-8 in one must not
        # make an otherwise good file unreadable.
        container = av.open(fileobj, mode="r", metadata_errors="replace")
    except av.FFmpegError as exc:
        raise AudioError(uri, "unsupported", f"not a readable audio file ({_cause(exc)})") from None
    except Exception as exc:  # noqa: BLE001 - PyAV raises plain errors for some garbage
        raise AudioError(uri, "unsupported", f"not a readable audio file ({type(exc).__name__}: {exc})") from None
    if not container.streams.audio:
        container.close()
        raise AudioError(uri, "unsupported", "the file holds no audio stream")
    return container


def _cause(exc: Exception) -> str:
    # FFmpeg's message without the memory address of PyAV's file object.
    return getattr(exc, "strerror", None) or str(exc).split(":")[0]


def _info(uri: str, container, stream) -> StreamInfo:
    """The stream's facts; a damaged header is an ``AudioError`` (it can trip PyAV anywhere)."""
    if stream.codec_context is None:
        raise AudioError(uri, "unsupported", "no decoder for the file's audio stream")
    try:
        return _read_info(container, stream)
    except Exception as exc:  # noqa: BLE001
        raise AudioError(uri, "unreadable", f"damaged header ({type(exc).__name__}: {exc})") from None


def _read_info(container, stream) -> StreamInfo:
    sr = int(stream.codec_context.sample_rate or stream.rate or 0)
    channels = int(stream.codec_context.channels or 0)
    seconds = None
    if stream.duration is not None and stream.time_base is not None:
        seconds = float(stream.duration * stream.time_base)
    elif container.duration is not None:
        seconds = container.duration / 1_000_000  # av.time_base
    frames = round(seconds * sr) if seconds and sr else 0
    bit_rate = int(stream.codec_context.bit_rate or container.bit_rate or 0) or None
    return StreamInfo(sr, channels, frames, container.format.name.split(",")[0], stream.codec_context.name, bit_rate)


def probe(uri: str, data: bytes) -> StreamInfo:
    """The first audio stream's rate, channels, frames, container and codec.

    Raises
    ------
    AudioError
        ``unsupported`` when FFmpeg does not know the file or it has no audio stream.
    """
    container = _open(uri, data)
    try:
        return _info(uri, container, container.streams.audio[0])
    finally:
        container.close()


def decode(uri: str, data: bytes, *, max_duration_s: float | None = None) -> tuple[np.ndarray, int]:
    """Decode the first audio stream of ``data`` to float32 ``(channels, samples)``.

    Raises
    ------
    AudioError
        ``unsupported`` (not a container FFmpeg knows, or no audio stream), ``invalid``
        (no sample rate or channels), ``too_long`` (from the header, before decoding),
        ``unreadable`` (corrupt data), ``empty`` (nothing decodable).
    """
    with open_blocks(uri, data, max_duration_s=max_duration_s) as (info, blocks):
        chunks = [c for c in blocks if c.size]
    if not chunks:
        raise AudioError(uri, "empty", "file holds no decodable samples (truncated?)")
    audio = np.concatenate(chunks, axis=1) if len(chunks) > 1 else chunks[0]
    return np.ascontiguousarray(audio, dtype=np.float32), info.sample_rate


@contextlib.contextmanager
def open_blocks(uri: str, data, *, max_duration_s: float | None = None):
    """``(StreamInfo, blocks)`` of the first audio stream of ``data`` (bytes or a seekable
    binary file): ``blocks`` yields float32 ``(channels, n)`` arrays as FFmpeg decodes them,
    so a caller can keep only a few in memory. Errors as :func:`decode`, raised on opening or
    while iterating."""
    import av

    container = _open(uri, data)
    try:
        stream = container.streams.audio[0]
        info = _info(uri, container, stream)
        if info.sample_rate <= 0 or info.channels <= 0:
            raise AudioError(uri, "invalid", f"stream has {info.sample_rate} Hz and {info.channels} channels")
        check_duration(uri, info.frames, info.sample_rate, max_duration_s)
        length = gapless_length(container, stream, info)
        yield info, _trimmed(_blocks(uri, container, stream, info, max_duration_s, av), length)
    finally:
        container.close()


def gapless_length(container, stream, info: StreamInfo) -> int | None:
    """The length of the music in an MP4 (``None`` elsewhere: all FFmpeg decodes), so that
    the encoder's padding is cut as gapless players cut it.

    FFmpeg itself drops the encoder's delay: an MP4 edit list's start or the priming of
    iTunes's ``iTunSMPB`` tag (AAC), Opus pre-skip, WebM's CodecDelay. It keeps the padding
    after the music, whose length the edit list's duration or ``iTunSMPB`` gives.
    """
    if not info.container.startswith("mov"):
        return None
    smpb = _itunsmpb(container.metadata.get("iTunSMPB") or stream.metadata.get("iTunSMPB"))
    return smpb if smpb is not None else (info.frames or None)


def _itunsmpb(value: str | None) -> int | None:
    """The original length in an ``iTunSMPB`` value: " 00000000 00000840 000001CA
    00000000003F31F6 ..." (hex fields: zero, priming, padding, original length)."""
    try:
        fields = [int(f, 16) for f in (value or "").split()[:4]]
    except ValueError:
        return None
    return fields[3] if len(fields) == 4 and fields[3] > 0 else None


def _trimmed(blocks: Iterator[np.ndarray], length: int | None) -> Iterator[np.ndarray]:
    """``blocks`` cut after ``length`` samples."""
    left = length
    for block in blocks:
        if left is not None:
            block = block[:, :left]
            left -= block.shape[1]
        if block.shape[1]:
            yield block
        if left == 0:
            return


def _blocks(uri, container, stream, info: StreamInfo, max_duration_s, av) -> Iterator[np.ndarray]:
    try:
        # Planar float32 at the stream's own rate and layout, whatever the codec's format.
        resampler = av.AudioResampler(format="fltp", layout=stream.codec_context.layout, rate=info.sample_rate)
        total = 0
        limit = None if max_duration_s is None else int(max_duration_s * info.sample_rate) + info.sample_rate
        for frame in container.decode(stream):
            for out in resampler.resample(frame):
                block = out.to_ndarray()
                total += block.shape[1]
                yield block
            if limit is not None and total > limit:  # the header understated the length
                raise AudioError(uri, "too_long", f"more than {max_duration_s:g} s of audio")
        for out in resampler.resample(None):
            yield out.to_ndarray()
    except AudioError:
        raise
    except av.FFmpegError as exc:
        raise AudioError(uri, "unreadable", f"corrupt audio data ({_cause(exc)})") from None
    except MemoryError:
        raise
    except Exception as exc:  # noqa: BLE001 - damaged streams can trip PyAV anywhere
        raise AudioError(uri, "unreadable", f"corrupt audio data ({type(exc).__name__}: {exc})") from None
