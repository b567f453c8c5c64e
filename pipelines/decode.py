"""Reading a track as the job asks: its size and length limits, whole or as a stream of blocks.

:func:`decode_track` reads a track whole, from one read of its bytes (its tags come from the
same bytes); a track larger than ``job.stream_above_mb`` (:func:`streams`) or longer than
``job.stream_above_s`` (:class:`LongTrack`, from its header) is read block by block instead
(:func:`open_track_stream`), in memory bounded by the block. Failures are
:class:`pipelines.units.UnitFailed` with the row's ``error_type``. Nothing here imports Beam.
"""
from __future__ import annotations

import contextlib
import traceback

import fsspec
import numpy as np

from sepops import AudioError, Operator
from sepops.audio import decode_audio, read_bytes
from sepops.tags import TrackTags, read_tags

from .config import JobConfig
from .units import UnitFailed

__all__ = [
    "LongTrack",
    "MonoStream",
    "can_stream",
    "check_channels",
    "check_size",
    "decode_track",
    "open_track_stream",
    "read_source_tags",
    "source_size",
    "streams",
]


class LongTrack(Exception):
    """Raised by :func:`decode_track` for a track too long to decode whole: stream it."""

    def __init__(self, tags: TrackTags):
        super().__init__(f"{tags.duration_s} s")
        self.tags = tags


def decode_track(
    source_uri: str, job: JobConfig, size: int | None = None, *, stream_above_s: float | None = None
) -> tuple[np.ndarray, int, TrackTags]:
    """The track's audio as the job's ``audio`` settings ask, shape (channels, samples), and
    the source's tags, from one read of the file. ``size`` (bytes, from
    :func:`source_size`) is looked up when not given.

    Raises
    ------
    LongTrack
        Before decoding, when the header says the track is longer than ``stream_above_s``
        (a long track in a small file: a podcast at a low bit rate): stream it instead.
    UnitFailed
        With the ``AudioError``'s kind (``empty``, ``too_long``, ``too_short``, ...), or
        ``decode_error`` for anything else (e.g. a ``MemoryError`` on a huge file); its
        ``tags`` are the file's when its bytes could be read.
    """
    settings, limits = job.audio, job.job
    tags = None
    try:
        check_size(source_uri, source_size(source_uri) if size is None else size, limits.max_file_mb)
        data = read_bytes(source_uri)
        tags = read_tags(data)
        if stream_above_s is not None and (tags.duration_s or 0) > stream_above_s:
            raise LongTrack(tags)
        audio, sr = decode_audio(
            data, uri=source_uri, sr=settings.sample_rate, mono=settings.mono, max_duration_s=limits.max_duration_s
        )
        check_channels(source_uri, audio.shape[0], limits.max_channels)
        duration = audio.shape[1] / sr
        if duration < limits.min_duration_s:
            raise AudioError(
                source_uri, "too_short", f"{duration:.3f} s is shorter than the minimum of {limits.min_duration_s:g} s"
            )
    except AudioError as exc:
        # The cause says it all; a traceback of the decoder would only be noise.
        raise UnitFailed(exc.kind, exc.message, traceback_text="", tags=tags) from None
    except LongTrack:
        raise
    except Exception as exc:  # noqa: BLE001
        raise UnitFailed(
            "decode_error", f"{type(exc).__name__}: {exc}", traceback_text=traceback.format_exc(), tags=tags
        ) from None
    return audio, sr, tags


def source_size(source_uri: str) -> int | None:
    """The source file's size in bytes (a stat, or one HEAD on a store); ``None`` when the
    store cannot say (reading it will report what is wrong)."""
    try:
        fs, path = fsspec.core.url_to_fs(source_uri)
        return fs.size(path)
    except Exception:  # noqa: BLE001
        return None


def check_size(source_uri: str, size: int | None, max_file_mb: float | None) -> None:
    """Refuse a file over the limit from its size alone, before a byte is read."""
    if max_file_mb is not None and size is not None and size > max_file_mb * 1e6:
        raise AudioError(
            source_uri, "too_large", f"{size / 1e6:.0f} MB is larger than the limit of {max_file_mb:g} MB (job.max_file_mb)"
        )


def check_channels(source_uri: str, channels: int, max_channels: int) -> None:
    if channels > max_channels:
        raise AudioError(
            source_uri, "too_many_channels",
            f"{channels} channels is more than the limit of {max_channels} (job.max_channels)",
        )


#: Output formats a stem can be written in blocks to (Opus resamples: whole tracks only).
_STREAMED_FORMATS = ("flac", "wav", "mp3")


def can_stream(job: JobConfig, operators: list[Operator]) -> bool:
    """Whether long tracks of this job can be separated as streams of blocks: every operator
    works in blocks (all but the oracles), and the job neither resamples nor writes Opus."""
    if job.audio.sample_rate is not None or job.audio.format not in _STREAMED_FORMATS:
        return False
    return all(op.works_in_blocks for op in operators)


def streams(job: JobConfig, operators: list[Operator], size: int | None) -> bool:
    """Whether this track is streamed because of its size: it is larger than
    ``job.stream_above_mb`` (``size``, from :func:`source_size`) and :func:`can_stream`.
    (Tracks longer than ``job.stream_above_s`` are streamed too: :func:`decode_track` says
    so from their header.) Streamed tracks use memory bounded by the block length
    (``job.block_s``) whatever their length; see :mod:`sepops.blocks` for how each operator
    works in blocks."""
    limit = job.job.stream_above_mb
    return limit is not None and (size or 0) > limit * 1e6 and can_stream(job, operators)


def read_source_tags(source_uri: str) -> TrackTags:
    """The source's tags, read through a file object (never the whole file); empty when it
    cannot be opened (its decoding says why)."""
    try:
        fs, path = fsspec.core.url_to_fs(source_uri)
        with fs.open(path, "rb") as handle:
            return read_tags(handle)
    except Exception:  # noqa: BLE001
        return TrackTags()


@contextlib.contextmanager
def open_track_stream(source_uri: str, job: JobConfig):
    """The track from its start as the job reads it, block by block (``audio.mono`` averages
    the channels); ``AudioError`` when it cannot be opened or has too many channels. Each
    pass of an operator's fitting (``Operator.fit_stream``) opens it again."""
    from sepops.stream import open_stream

    with open_stream(source_uri, max_duration_s=job.job.max_duration_s) as stream:
        check_channels(source_uri, stream.channels, job.job.max_channels)
        yield MonoStream(stream) if job.audio.mono and stream.channels > 1 else stream


class MonoStream:
    """A stream's blocks averaged over their channels (``audio.mono``)."""

    def __init__(self, stream):
        self.sr, self.channels, self.frames = stream.sr, 1, stream.frames
        self._stream = stream

    def read(self, n: int) -> np.ndarray:
        return self._stream.read(n).mean(axis=0, keepdims=True)
