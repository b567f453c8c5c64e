"""Audio as streams of blocks: read a file a block of frames at a time, write a stem as it is
made. Together with :func:`sepops.blocks.separate_blocks` they keep memory bounded by the
block length, whatever the track's length.

>>> with open_stream("long.flac") as stream, open_writer("out.flac", stream.sr, stream.channels) as out:
...     while (block := stream.read(44100 * 60)).shape[1]:
...         out.write(block)

Readers take any fsspec URI (remote files are read through fsspec's seekable file objects,
never whole); libsndfile reads what it knows, FFmpeg the rest. Writers encode into a
temporary local file and, on success, rename it into place (local) or upload it in one
request (object stores), so readers of the output never see a partial stem.
"""
from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator

import fsspec
import numpy as np
import soundfile as sf

from .audio import (
    CONTAINERS,
    check_duration,
    checked_format,
    clip_for,
    is_local,
    temp_path,
)
from .errors import AudioError

__all__ = ["AudioStream", "StemWriter", "open_stream", "open_writer"]


class AudioStream:
    """A decoder positioned in a file: ``sr``, ``channels``, ``frames`` (``None`` when the
    container does not say) and :meth:`read`."""

    def __init__(self, uri: str, sr: int, channels: int, frames: int | None, blocks: Iterator[np.ndarray]):
        self.uri, self.sr, self.channels, self.frames = uri, sr, channels, frames
        self._blocks = blocks
        self._pending = np.zeros((channels, 0), np.float32)

    @property
    def duration_s(self) -> float | None:
        return None if self.frames is None else self.frames / self.sr

    def read(self, n: int) -> np.ndarray:
        """Up to ``n`` frames, float32 ``(channels, m)``; ``m < n`` only at the end."""
        parts, have = [self._pending], self._pending.shape[1]
        while have < n:
            block = next(self._blocks, None)
            if block is None:
                break
            parts.append(block)
            have += block.shape[1]
        data = np.concatenate(parts, axis=1) if len(parts) > 1 else parts[0]
        self._pending = data[:, n:]
        out = np.ascontiguousarray(data[:, :n], dtype=np.float32)
        if not np.isfinite(out).all():
            raise AudioError(self.uri, "non_finite", "the file holds NaN or infinite samples")
        return out


def _soundfile_blocks(f: sf.SoundFile, uri: str, size: int = 1 << 16) -> Iterator[np.ndarray]:
    while True:
        try:
            block = f.read(size, dtype="float32", always_2d=True)
        except Exception as exc:  # noqa: BLE001 - corrupt data part way through
            raise AudioError(uri, "unreadable", f"corrupt audio data ({exc})") from None
        if not len(block):
            return
        yield block.T


@contextlib.contextmanager
def open_stream(uri: str, *, max_duration_s: float | None = None) -> Iterator[AudioStream]:
    """Open ``uri`` for reading in blocks (libsndfile, else FFmpeg).

    Raises
    ------
    AudioError
        As :func:`sepops.load_audio`: ``not_found``, ``empty``, ``unsupported``, ``too_long``
        (from the header), ``unreadable``, ``non_finite`` (while reading).
    """
    try:
        fs, path = fsspec.core.url_to_fs(uri)
        handle = fs.open(path, "rb")
    except FileNotFoundError as exc:
        raise AudioError(uri, "not_found", f"file not found ({exc})") from None
    except Exception as exc:  # noqa: BLE001
        raise AudioError(uri, "unreadable", f"cannot read ({type(exc).__name__}: {exc})") from None
    with handle:
        try:
            f = sf.SoundFile(handle)
        except Exception:  # noqa: BLE001 - not a libsndfile format: FFmpeg
            f = None
        if f is not None:
            with f:
                if f.frames == 0:
                    raise AudioError(uri, "empty", "file holds no samples")
                check_duration(uri, f.frames, f.samplerate, max_duration_s)
                f.seek(0)  # Ogg Opus's pre-skip applies only after a seek (sepops.audio.decode_audio)
                yield AudioStream(uri, f.samplerate, f.channels, f.frames, _soundfile_blocks(f, uri))
            return
        handle.seek(0)
        from . import ffmpeg

        with ffmpeg.open_blocks(uri, handle, max_duration_s=max_duration_s) as (info, blocks):
            yield AudioStream(uri, info.sample_rate, info.channels, info.frames or None, blocks)


class StemWriter:
    """An encoder writing one stem block by block into a temporary file (see :func:`open_writer`)."""

    def __init__(self, f: sf.SoundFile):
        self._f = f
        self.frames = 0

    def write(self, block: np.ndarray) -> None:
        """Append ``(channels, n)`` float32 samples (clipped to [-1, 1) for integer formats)."""
        block = clip_for(np.atleast_2d(np.asarray(block, dtype=np.float32)), self._f.subtype)
        self._f.write(block.T)
        self.frames += block.shape[1]


@contextlib.contextmanager
def open_writer(
    uri: str, sr: int, channels: int, *, format: str = "flac", subtype: str | None = None,
    commit_context=None,
) -> Iterator[StemWriter]:
    """Write a stem to ``uri`` in blocks; it appears there, whole, only if the block exits
    without an exception (else nothing is left behind). Formats: ``flac``, ``wav``, ``mp3``
    (Opus needs its own rates: write it with :func:`sepops.save_audio`).

    ``commit_context``, a callable returning a context manager, is entered around the final
    rename or upload (the catalog job serialises it with its time limit)."""
    if format.lower() == "opus":
        raise ValueError(f"format {format!r} cannot be written in blocks; choose flac, wav or mp3")
    fmt, subtype = checked_format(format, subtype)
    fs, path = fsspec.core.url_to_fs(uri)
    local = is_local(fs)
    if local:
        os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    tmp = temp_path(path, None if local else tempfile.gettempdir())
    try:
        with sf.SoundFile(tmp, "w", samplerate=int(sr), channels=int(channels), format=CONTAINERS[fmt],
                          subtype=subtype) as f:
            yield StemWriter(f)
        with commit_context() if commit_context is not None else contextlib.nullcontext():
            if local:
                os.replace(tmp, path)
            else:
                fs.put_file(tmp, path)  # one request: the object appears whole or not at all
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
