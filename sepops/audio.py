"""Audio I/O for any fsspec URI: plain paths, ``file://``, ``memory://``, ``s3://``, ``gs://``.

Arrays are float32 shaped ``(channels, samples)`` everywhere in sepops.

Writes never leave a partial file: the whole file is encoded in memory first, then written
to a temporary name beside the target and renamed (local files), or uploaded in one request
(object stores, where a single PUT is atomic). Writing a soundfile straight into an s3fs file
object would corrupt it anyway: those objects cannot seek while writing.
"""
from __future__ import annotations

import io
import os
import uuid
from dataclasses import dataclass

import fsspec
import fsspec.implementations.memory
import numpy as np
import soundfile as sf

from .errors import AudioError

__all__ = [
    "AudioError",
    "AudioInfo",
    "audio_info",
    "decode_audio",
    "encode_audio",
    "load_audio",
    "read_bytes",
    "resample",
    "save_audio",
    "write_bytes_atomic",
]

#: Formats ``save_audio`` can write, with their default subtype.
OUTPUT_FORMATS = {"flac": "PCM_16", "wav": "PCM_16", "mp3": "MPEG_LAYER_III", "opus": "OPUS"}
#: Subtypes allowed per output format (FLAC stores integers only; MP3 and Opus are lossy
#: previews, encoded by libsndfile with LAME and libopus).
OUTPUT_SUBTYPES = {
    "flac": ("PCM_16", "PCM_24"),
    "wav": ("PCM_16", "PCM_24", "FLOAT"),
    "mp3": ("MPEG_LAYER_III",),
    "opus": ("OPUS",),
}
#: libsndfile container of each output format.
CONTAINERS = {"flac": "FLAC", "wav": "WAV", "mp3": "MP3", "opus": "OGG"}
#: The rates Opus codes at; anything else is resampled to 48 kHz.
_OPUS_RATES = (8000, 12000, 16000, 24000, 48000)


def check_duration(uri: str, frames: int, sr: int, max_duration_s: float | None) -> None:
    """Raise ``AudioError`` ``too_long`` when ``frames`` at ``sr`` exceed the limit (from a
    header, before decoding: every reader's one check)."""
    if max_duration_s is not None and frames / sr > max_duration_s:
        raise AudioError(uri, "too_long", f"{frames / sr:.1f} s is longer than the limit of {max_duration_s:g} s")


def checked_format(format: str, subtype: str | None) -> tuple[str, str]:
    """``(format, subtype)`` normalised and checked against :data:`OUTPUT_SUBTYPES`.

    Raises
    ------
    ValueError
        Naming the formats or subtypes to choose from.
    """
    fmt = format.lower()
    if fmt not in OUTPUT_FORMATS:
        raise ValueError(f"format {format!r} not supported; choose one of {sorted(OUTPUT_FORMATS)}")
    subtype = (subtype or OUTPUT_FORMATS[fmt]).upper()
    if subtype not in OUTPUT_SUBTYPES[fmt]:
        raise ValueError(
            f"subtype {subtype!r} not supported for {fmt}; choose one of {list(OUTPUT_SUBTYPES[fmt])}"
        )
    return fmt, subtype


def clip_for(audio: np.ndarray, subtype: str) -> np.ndarray:
    """``audio`` clipped to [-1, 1) for integer subtypes, which would wrap around otherwise."""
    return audio if subtype == "FLOAT" else np.clip(audio, -1.0, 1.0 - 2.0**-23)


def is_local(fs) -> bool:
    """Whether an fsspec filesystem is the local disk (renames are atomic there)."""
    protocol = fs.protocol if isinstance(fs.protocol, str) else fs.protocol[0]
    return protocol in ("file", "local")


def temp_path(path: str, directory: str | None = None) -> str:
    """A temporary name for ``path``'s content, ``.<name>.<32 hex>.tmp`` in ``directory``
    (default: beside it); the catalog job removes such names a killed run left."""
    directory = os.path.dirname(path) if directory is None else directory
    return os.path.join(directory or ".", f".{os.path.basename(path)}.{uuid.uuid4().hex}.tmp")


def output_rate(format: str, sr: int) -> int:
    """The sample rate a file of ``format`` stores ``sr`` audio at (Opus: one of its rates)."""
    if format.lower() == "opus" and sr not in _OPUS_RATES:
        return 48000
    return int(sr)


@dataclass(frozen=True)
class AudioInfo:
    """Header facts of an audio file, read without decoding the samples."""

    sample_rate: int
    channels: int
    frames: int
    format: str
    subtype: str

    @property
    def duration_s(self) -> float:
        return self.frames / self.sample_rate if self.sample_rate else 0.0


def read_bytes(uri: str) -> bytes:
    """The whole file at ``uri`` (any fsspec URI).

    Raises
    ------
    AudioError
        ``not_found`` or ``unreadable`` (a folder, no permission, a failing store).
    """
    try:
        fs, path = fsspec.core.url_to_fs(uri)
        if fs.isdir(path):
            raise AudioError(uri, "unreadable", "is a directory, not an audio file")
        with fs.open(path, "rb") as f:
            return f.read()
    except AudioError:
        raise
    except FileNotFoundError as exc:
        raise AudioError(uri, "not_found", f"file not found ({exc})") from exc
    except IsADirectoryError as exc:
        raise AudioError(uri, "unreadable", "is a directory, not an audio file") from exc
    except Exception as exc:
        raise AudioError(uri, "unreadable", f"cannot read ({type(exc).__name__}: {exc})") from exc


def _open_soundfile(uri: str, data: bytes) -> sf.SoundFile | None:
    """The file opened by libsndfile, or ``None`` when libsndfile does not read its format."""
    if len(data) == 0:
        raise AudioError(uri, "empty", "file is empty (0 bytes)")
    try:
        return sf.SoundFile(io.BytesIO(data))
    except Exception:  # noqa: BLE001 - LibsndfileError and friends: try FFmpeg next
        return None


def audio_info(uri: str) -> AudioInfo:
    """Read the header of ``uri`` (libsndfile's, else FFmpeg's).

    ``format`` and ``subtype`` are libsndfile's names (``FLAC``, ``PCM_16``), or, for files
    only FFmpeg reads, the container and codec (``mov``, ``aac``); ``frames`` then comes from
    the container's duration.

    Raises
    ------
    AudioError
        If the file is missing, empty or not a format either can read.
    """
    data = read_bytes(uri)
    f = _open_soundfile(uri, data)
    if f is None:
        from . import ffmpeg

        s = ffmpeg.probe(uri, data)
        return AudioInfo(s.sample_rate, s.channels, s.frames, s.container, s.codec)
    with f:
        return AudioInfo(f.samplerate, f.channels, f.frames, f.format, f.subtype)


def load_audio(
    uri: str,
    *,
    sr: int | None = None,
    mono: bool = False,
    max_duration_s: float | None = None,
) -> tuple[np.ndarray, int]:
    """Decode an audio file into float32 samples.

    Parameters
    ----------
    uri : str
        Path or fsspec URL (``s3://bucket/a.flac``, ``memory://x.wav`` ...).
    sr : int, optional
        Resample to this rate (soxr, high quality). ``None`` keeps the file's rate.
    mono : bool
        Average the channels into one.
    max_duration_s : float, optional
        Refuse files longer than this (``AudioError`` kind ``too_long``), checked from the
        header before decoding.

    Returns
    -------
    audio : np.ndarray, shape (channels, samples), float32
        Integer files are scaled to [-1, 1).
    sample_rate : int

    Raises
    ------
    AudioError
        Naming ``uri`` and the cause: missing, unreadable, empty, unsupported format,
        non-finite samples or too long.
    """
    return decode_audio(read_bytes(uri), uri=uri, sr=sr, mono=mono, max_duration_s=max_duration_s)


def decode_audio(
    data: bytes,
    *,
    uri: str = "<bytes>",
    sr: int | None = None,
    mono: bool = False,
    max_duration_s: float | None = None,
) -> tuple[np.ndarray, int]:
    """:func:`load_audio` on a file's bytes already read (``uri`` names it in errors)."""
    f = _open_soundfile(uri, data)
    if f is None:
        # Not a format libsndfile reads (AAC, ALAC, WMA, WebM, MP4 ...): FFmpeg.
        from . import ffmpeg

        audio, native_sr = ffmpeg.decode(uri, data, max_duration_s=max_duration_s)
    else:
        with f:
            native_sr = f.samplerate
            if f.frames == 0:
                raise AudioError(uri, "empty", "file holds no samples")
            check_duration(uri, f.frames, native_sr, max_duration_s)
            try:
                # libsndfile applies Ogg Opus's pre-skip only after a seek (a fresh file
                # starts 312 samples late): seek to the start first, as soundfile.read does.
                f.seek(0)
                audio = f.read(dtype="float32", always_2d=True).T
            except Exception as exc:
                raise AudioError(uri, "unreadable", f"corrupt audio data ({exc})") from exc
    if audio.shape[1] == 0:
        raise AudioError(uri, "empty", "file holds no decodable samples (truncated?)")
    if not np.isfinite(audio).all():
        bad = int((~np.isfinite(audio)).sum())
        raise AudioError(uri, "non_finite", f"{bad} samples are NaN or infinite")
    audio = np.ascontiguousarray(audio)
    if mono and audio.shape[0] > 1:
        audio = audio.mean(axis=0, keepdims=True)
    if sr is not None and sr != native_sr:
        audio = resample(audio, native_sr, sr)
        native_sr = sr
    return audio, int(native_sr)


def resample(audio: np.ndarray, sr_in: int, sr_out: int, *, quality: str = "HQ") -> np.ndarray:
    """Resample ``(channels, samples)`` audio with soxr."""
    if sr_in == sr_out:
        return audio
    import soxr

    out = soxr.resample(np.ascontiguousarray(audio.T), sr_in, sr_out, quality=quality)
    return np.ascontiguousarray(np.atleast_2d(out.T) if out.ndim == 1 else out.T, dtype=np.float32)


def encode_audio(
    audio: np.ndarray, sr: int, *, format: str = "flac", subtype: str | None = None
) -> bytes:
    """Encode ``(channels, samples)`` audio into the bytes of a whole file.

    ``format`` is ``flac``, ``wav``, or, for previews, ``mp3`` or ``opus`` (Ogg Opus at one
    of Opus's rates: other rates are resampled to 48 kHz, see :func:`output_rate`). Integer
    subtypes clip to [-1, 1) rather than wrapping around.
    """
    fmt, subtype = checked_format(format, subtype)
    audio = np.atleast_2d(np.asarray(audio, dtype=np.float32))
    rate = output_rate(fmt, sr)
    if rate != sr:
        audio = resample(audio, sr, rate)
    audio = clip_for(audio, subtype)
    buf = io.BytesIO()
    sf.write(buf, audio.T, rate, format=CONTAINERS[fmt], subtype=subtype)
    return buf.getvalue()


def write_bytes_atomic(uri: str, data: bytes) -> None:
    """Write ``data`` to ``uri`` so that readers see either nothing or the whole file."""
    fs, path = fsspec.core.url_to_fs(uri)
    if is_local(fs):
        os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
        tmp = temp_path(path)
        try:
            with open(tmp, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        finally:
            if os.path.exists(tmp):
                os.remove(tmp)
    else:
        parent = path.rsplit("/", 1)[0]
        if parent and isinstance(fs, fsspec.implementations.memory.MemoryFileSystem):
            fs.makedirs(parent, exist_ok=True)
        fs.pipe_file(path, data)


def save_audio(
    uri: str,
    audio: np.ndarray,
    sr: int,
    *,
    format: str | None = None,
    subtype: str | None = None,
) -> None:
    """Encode and write ``(channels, samples)`` audio atomically.

    Parameters
    ----------
    format : {"flac", "wav", "mp3", "opus"}, optional
        Defaults to the extension of ``uri`` (else FLAC).
    subtype : str, optional
        ``PCM_16`` (default), ``PCM_24``, or ``FLOAT`` (WAV only); none for MP3 and Opus.
    """
    if format is None:
        ext = uri.rsplit(".", 1)[-1].lower() if "." in uri.rsplit("/", 1)[-1] else "flac"
        format = ext if ext in OUTPUT_FORMATS else "flac"
    write_bytes_atomic(uri, encode_audio(audio, sr, format=format, subtype=subtype))
