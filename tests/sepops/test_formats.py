"""Every common catalog format decodes: libsndfile's (FLAC, WAV, AIFF, Ogg Vorbis, MP3) and,
through FFmpeg (PyAV), AAC and ALAC in .m4a/.mp4, raw AAC, Opus in Ogg and WebM, WMA. The
files are encoded here from a real recording, so each test knows what it should get back."""
from __future__ import annotations

import io
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
import soundfile as sf

import sepops
from sepops import AudioError, audio_info, load_audio
from sepops.audio import resample

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def recording():
    audio, sr = load_audio(str(ROOT / "examples" / "loop_stereo.flac"))
    return audio[:, : 3 * sr], sr  # 3 s of stereo


def encode_av(audio: np.ndarray, sr: int, container: str, codec: str, *, rate: int | None = None,
              bit_rate: int | None = None) -> bytes:
    """``audio`` (channels, samples) encoded by FFmpeg into the bytes of a whole file."""
    rate = rate or sr
    buf = io.BytesIO()
    layout = "stereo" if audio.shape[0] == 2 else "mono"
    with av.open(buf, "w", format=container) as out:
        stream = out.add_stream(codec, rate=rate, layout=layout)
        if bit_rate:
            stream.codec_context.bit_rate = bit_rate
        frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(audio, dtype=np.float32), format="fltp", layout=layout)
        frame.sample_rate = sr
        resampler = av.AudioResampler(format=stream.codec_context.format.name, layout=layout, rate=rate)
        pts = 0
        for f in [*resampler.resample(frame), *resampler.resample(None)]:
            # Timestamps, as the ffmpeg command line sets them: the encoder then marks its
            # priming (negative first timestamps) and the muxer writes the edit list.
            f.pts, f.time_base, pts = pts, Fraction(1, rate), pts + f.samples
            for packet in stream.encode(f):
                out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)
    return buf.getvalue()


def encode_sf(audio: np.ndarray, sr: int, fmt: str, subtype: str) -> bytes:
    buf = io.BytesIO()
    sf.write(buf, audio.T, sr, format=fmt, subtype=subtype)
    return buf.getvalue()


def _aligned_snr_db(ref: np.ndarray, est: np.ndarray, max_lag: int = 4096) -> float:
    """SNR of ``est`` against ``ref`` after the best integer shift (codec delay/padding)."""
    n = min(ref.shape[1], est.shape[1]) - 2 * max_lag
    a = ref[0, max_lag : max_lag + n]
    corr = np.correlate(est[0, : n + 2 * max_lag], a, mode="valid")  # lag 0 at index max_lag
    lag = int(np.argmax(corr)) - max_lag
    r = ref[:, max_lag : max_lag + n]
    e = est[:, max_lag + lag : max_lag + lag + n]
    return float(10 * np.log10(np.sum(r**2) / np.sum((r - e) ** 2)))


# (file name, encoder, lossless, decoded rate)
CASES = {
    "aac.m4a": (lambda x, sr: encode_av(x, sr, "ipod", "aac", bit_rate=192_000), False, None),
    "alac.m4a": (lambda x, sr: encode_av(x, sr, "ipod", "alac"), True, None),
    "aac.mp4": (lambda x, sr: encode_av(x, sr, "mp4", "aac", bit_rate=192_000), False, None),
    "raw.aac": (lambda x, sr: encode_av(x, sr, "adts", "aac", bit_rate=192_000), False, None),
    "opus.opus": (lambda x, sr: encode_av(x, sr, "ogg", "libopus", rate=48000, bit_rate=160_000), False, 48000),
    "opus.webm": (lambda x, sr: encode_av(x, sr, "webm", "libopus", rate=48000, bit_rate=160_000), False, 48000),
    "wma.wma": (lambda x, sr: encode_av(x, sr, "asf", "wmav2", bit_rate=192_000), False, None),
    "lame.mp3": (lambda x, sr: encode_sf(x, sr, "MP3", "MPEG_LAYER_III"), False, None),
    "vorbis.ogg": (lambda x, sr: encode_sf(x, sr, "OGG", "VORBIS"), False, None),
    "pcm.aiff": (lambda x, sr: encode_sf(x, sr, "AIFF", "PCM_16"), True, None),
    "pcm24.wav": (lambda x, sr: encode_sf(x, sr, "WAV", "PCM_24"), True, None),
    "flac.flac": (lambda x, sr: encode_sf(x, sr, "FLAC", "PCM_16"), True, None),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_every_catalog_format_decodes_to_the_recording(name, recording, tmp_path):
    audio, sr = recording
    encoder, lossless, decoded_rate = CASES[name]
    path = tmp_path / name
    path.write_bytes(encoder(audio, sr))
    got, got_sr = load_audio(str(path))
    assert got.dtype == np.float32 and got.shape[0] == 2
    assert got_sr == (decoded_rate or sr)
    if got_sr != sr:
        got = resample(got, got_sr, sr)
    # Encoders add a little priming and padding, never more than a tenth of a second here.
    assert abs(got.shape[1] - audio.shape[1]) < 0.1 * sr, (got.shape, audio.shape)
    if lossless:
        np.testing.assert_allclose(got[:, : audio.shape[1]], audio, atol=2.0**-15 + 1e-7)
    else:
        assert _aligned_snr_db(audio, got) > 12.0
    info = audio_info(str(path))
    assert (info.sample_rate, info.channels) == (got_sr, 2)
    assert abs(info.frames - got.shape[1] * got_sr / sr) < 0.15 * got_sr


def test_ffmpeg_only_files_report_their_container_and_codec(recording, tmp_path):
    audio, sr = recording
    path = tmp_path / "a.m4a"
    path.write_bytes(encode_av(audio, sr, "ipod", "aac", bit_rate=128_000))
    info = audio_info(str(path))
    assert (info.format, info.subtype) == ("mov", "aac")
    assert info.duration_s == pytest.approx(3.0, abs=0.1)
    # The duration limit is checked from the container's header, before decoding.
    with pytest.raises(AudioError) as err:
        load_audio(str(path), max_duration_s=1.0)
    assert err.value.kind == "too_long"
    mono, mono_sr = load_audio(str(path), sr=22050, mono=True)
    assert mono.shape[0] == 1 and mono_sr == 22050


@pytest.mark.parametrize("keep", [0.5, 0.05])
def test_truncated_and_garbage_ffmpeg_files_are_audio_errors(recording, tmp_path, keep):
    audio, sr = recording
    data = encode_av(audio, sr, "ipod", "aac", bit_rate=128_000)
    path = tmp_path / "cut.m4a"
    path.write_bytes(data[: int(len(data) * keep)])
    with pytest.raises(AudioError) as err:
        load_audio(str(path))
    assert err.value.kind in ("unsupported", "unreadable", "empty")
    assert " at 0x" not in err.value.message  # no memory address of a file object
    path.write_bytes(b"ftypM4A " + bytes(range(256)) * 8)
    with pytest.raises(AudioError) as err:
        load_audio(str(path))
    assert err.value.kind in ("unsupported", "unreadable", "empty")


def test_a_video_file_without_audio_is_unsupported(tmp_path):
    buf = io.BytesIO()
    with av.open(buf, "w", format="mp4") as out:
        stream = out.add_stream("mpeg4", rate=10)
        stream.width, stream.height, stream.pix_fmt = 32, 32, "yuv420p"
        for i in range(5):
            frame = av.VideoFrame.from_ndarray(np.full((32, 32, 3), i * 40, np.uint8), format="rgb24")
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)
    path = tmp_path / "silent_video.mp4"
    path.write_bytes(buf.getvalue())
    with pytest.raises(AudioError, match="no audio stream") as err:
        load_audio(str(path))
    assert err.value.kind == "unsupported"


def test_sepops_errors_keep_their_root(tmp_path):
    path = tmp_path / "x.wma"
    path.write_bytes(b"not a wma file at all" * 10)
    with pytest.raises(sepops.SepopsError):
        load_audio(str(path))


# --- tags -----------------------------------------------------------------------------------
TAGS = {"artist": "Ünïcode Artist", "title": "Track Title", "album": "The Album", "track_number": 3,
        "isrc": "USRC17607839"}


def _tag(path: Path) -> None:
    """Write TAGS into ``path`` the way each format's own tools do."""
    import mutagen
    from mutagen.asf import ASF
    from mutagen.id3 import ID3, TALB, TIT2, TPE1, TRCK, TSRC
    from mutagen.mp4 import MP4, MP4FreeForm

    suffix = path.suffix
    if suffix == ".mp3":
        tags = ID3()
        for frame in (TPE1(encoding=3, text=TAGS["artist"]), TIT2(encoding=3, text=TAGS["title"]),
                      TALB(encoding=3, text=TAGS["album"]), TRCK(encoding=3, text="3/12"),
                      TSRC(encoding=3, text="US-RC1-76-07839")):
            tags.add(frame)
        tags.save(str(path))
    elif suffix == ".m4a":
        f = MP4(str(path))
        f["\xa9ART"], f["\xa9nam"], f["\xa9alb"] = TAGS["artist"], TAGS["title"], TAGS["album"]
        f["trkn"] = [(3, 12)]
        f["----:com.apple.iTunes:ISRC"] = [MP4FreeForm(TAGS["isrc"].encode())]
        f.save()
    elif suffix == ".wma":
        f = ASF(str(path))
        f["Author"], f["Title"], f["WM/AlbumTitle"] = TAGS["artist"], TAGS["title"], TAGS["album"]
        f["WM/TrackNumber"], f["WM/ISRC"] = "3", TAGS["isrc"]
        f.save()
    else:  # Vorbis comments: FLAC, Ogg Vorbis, Opus
        f = mutagen.File(str(path))
        f["ARTIST"], f["TITLE"], f["ALBUM"] = TAGS["artist"], TAGS["title"], TAGS["album"]
        f["TRACKNUMBER"], f["ISRC"] = "03", TAGS["isrc"].lower()
        f.save()


@pytest.mark.parametrize(("name", "codec"), [("aac.m4a", "aac"), ("alac.m4a", "alac"), ("lame.mp3", "mp3"),
                                             ("flac.flac", "flac"), ("vorbis.ogg", "vorbis"),
                                             ("opus.opus", "opus"), ("wma.wma", "wma")])
def test_tags_and_stream_facts_are_read_from_every_tagged_format(name, codec, recording, tmp_path):
    from sepops.tags import read_tags

    audio, sr = recording
    path = tmp_path / name
    path.write_bytes(CASES[name][0](audio, sr))
    _tag(path)
    tags = read_tags(path.read_bytes())
    assert {k: getattr(tags, k) for k in TAGS} == TAGS
    assert tags.codec == codec
    assert tags.duration_s == pytest.approx(3.0, abs=0.1)
    assert tags.bit_rate is None or tags.bit_rate > 10_000
    load_audio(str(path))  # the tagged file still decodes


def test_missing_or_broken_tags_are_nulls(recording, tmp_path):
    from sepops.tags import TrackTags, read_tags

    audio, sr = recording
    untagged = read_tags(CASES["pcm24.wav"][0](audio, sr))
    assert (untagged.artist, untagged.isrc, untagged.track_number) == (None, None, None)
    assert untagged.duration_s == pytest.approx(3.0, abs=0.01) and untagged.codec == "pcm"
    assert read_tags(b"") == TrackTags() and read_tags(b"\x00" * 1000) == TrackTags()
    # A corrupt ID3 header on an MP3: the tags are nulls, never an error.
    data = bytearray(CASES["lame.mp3"][0](audio, sr))
    assert read_tags(b"ID3\x04\x00\x00\xff\xff\xff\xff" + bytes(data)).artist is None
