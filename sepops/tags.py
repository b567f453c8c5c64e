"""Catalog tags of a source file (artist, title, album, track number, ISRC) and its stream
facts (duration, codec, bit rate), read with mutagen from the file's bytes.

Tags are best effort by design: a missing, empty or broken tag is ``None``, and a file
mutagen cannot parse gives a :class:`TrackTags` of ``None`` s, never an error, so that the
catalog job can always join stems with the catalog where the tags allow it.
"""
from __future__ import annotations

import io
import logging
import re
from dataclasses import dataclass, fields

__all__ = ["TrackTags", "read_tags"]

_LOG = logging.getLogger(__name__)

#: mutagen's file classes -> codec names, for formats whose info does not name its codec.
_CODECS = {
    "FLAC": "flac", "MP3": "mp3", "OggVorbis": "vorbis", "OggOpus": "opus", "OggFLAC": "flac",
    "OggSpeex": "speex", "WAVE": "pcm", "AIFF": "pcm", "ASF": "wma", "AAC": "aac", "WavPack": "wavpack",
    "MonkeysAudio": "ape", "TrueAudio": "tta", "OptimFROG": "ofr", "DSF": "dsd", "DSDIFF": "dsd",
}
_ISRC = re.compile(r"^[A-Z]{2}[A-Z0-9]{3}\d{7}$")


@dataclass(frozen=True)
class TrackTags:
    """What a file says about itself; every field may be ``None``.

    Attributes
    ----------
    artist, title, album : str
    track_number : int
        The track's number on its release (``"3/12"`` gives 3).
    isrc : str
        International Standard Recording Code, normalised to 12 characters (``USRC17607839``);
        a malformed code is ``None``.
    duration_s : float
        Length from the stream header, seconds.
    codec : str
        ``aac``, ``alac``, ``mp3``, ``flac``, ``opus``, ``vorbis``, ``pcm``, ``wma`` ...
    bit_rate : int
        Bits per second from the stream header.
    """

    artist: str | None = None
    title: str | None = None
    album: str | None = None
    track_number: int | None = None
    isrc: str | None = None
    duration_s: float | None = None
    codec: str | None = None
    bit_rate: int | None = None

    def as_dict(self, prefix: str = "") -> dict:
        return {prefix + f.name: getattr(self, f.name) for f in fields(self)}


def _first(value) -> str | None:
    """The first non-empty text of a tag value (lists, frames, MP4 freeform bytes)."""
    if value is None:
        return None
    if isinstance(value, (list, tuple)):
        for v in value:
            text = _first(v)
            if text:
                return text
        return None
    if isinstance(value, (bytes, bytearray)):
        value = bytes(value).decode("utf-8", "replace")
    text = getattr(value, "text", None)  # ID3 frames
    if text is not None:
        return _first(text)
    text = str(value).replace("\x00", "").strip()
    return text or None


def _track_number(value) -> int | None:
    if isinstance(value, (list, tuple)) and value and isinstance(value[0], tuple):  # MP4 trkn: [(3, 12)]
        value = value[0][0]
    text = _first(value) if not isinstance(value, int) else str(value)
    if not text:
        return None
    m = re.match(r"\s*(\d+)", text)
    number = int(m.group(1)) if m else None
    return number if number is not None and 0 < number < 100_000 else None


def _isrc(value) -> str | None:
    text = _first(value)
    if not text:
        return None
    code = re.sub(r"[^A-Za-z0-9]", "", text).upper()
    return code if _ISRC.match(code) else None


def _lookup(tags, *keys):
    """The first present key of a mutagen tag mapping (case-insensitive for Vorbis comments)."""
    if tags is None:
        return None
    for key in keys:
        try:
            if key in tags:
                return tags[key]
        except (KeyError, ValueError, TypeError):
            continue
    return None


def read_tags(data) -> TrackTags:
    """The tags and stream facts of a file's bytes (or a seekable binary file object);
    ``TrackTags()`` when nothing is readable.

    Reads ID3 (MP3, AIFF, WAV), MP4 atoms (M4A/ALAC/MP4), Vorbis comments (FLAC, Ogg, Opus),
    APE and ASF (WMA) tags through mutagen's format detection.
    """
    import mutagen

    try:
        f = mutagen.File(io.BytesIO(data) if isinstance(data, (bytes, bytearray)) else data)
    except Exception as exc:  # noqa: BLE001 - broken tags are no tags
        _LOG.debug("mutagen could not read the tags: %s", exc)
        return TrackTags()
    if f is None:
        return TrackTags()
    tags = f.tags
    info = getattr(f, "info", None)
    artist = _first(_lookup(tags, "TPE1", "\xa9ART", "artist", "ARTIST", "Author", "WM/AlbumArtist"))
    title = _first(_lookup(tags, "TIT2", "\xa9nam", "title", "TITLE", "Title"))
    album = _first(_lookup(tags, "TALB", "\xa9alb", "album", "ALBUM", "WM/AlbumTitle"))
    track = _track_number(_lookup(tags, "TRCK", "trkn", "tracknumber", "TRACKNUMBER", "WM/TrackNumber"))
    isrc = _isrc(_lookup(tags, "TSRC", "----:com.apple.iTunes:ISRC", "isrc", "ISRC", "WM/ISRC"))
    length = getattr(info, "length", None)
    bit_rate = getattr(info, "bitrate", None)
    codec = getattr(info, "codec", None)  # MP4: "mp4a.40.2", "alac"
    if isinstance(codec, str) and codec.startswith("mp4a"):
        codec = "aac"
    codec = codec if isinstance(codec, str) and codec else _CODECS.get(type(f).__name__)
    return TrackTags(
        artist=artist,
        title=title,
        album=album,
        track_number=track,
        isrc=isrc,
        duration_s=float(length) if isinstance(length, (int, float)) and length > 0 else None,
        codec=codec,
        bit_rate=int(bit_rate) if isinstance(bit_rate, (int, float)) and bit_rate > 0 else None,
    )
