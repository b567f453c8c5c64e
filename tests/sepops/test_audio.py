"""sepops.audio: decoding any format/rate/channel count, clear errors, atomic writes."""
from __future__ import annotations

import os

import fsspec
import numpy as np
import pytest
import soundfile as sf

from sepops import AudioError, audio_info, load_audio, save_audio
from sepops.audio import encode_audio


def _tone(sr=22050, seconds=0.5, channels=2):
    t = np.arange(int(sr * seconds)) / sr
    return np.stack([0.5 * np.sin(2 * np.pi * (220 + 110 * c) * t) for c in range(channels)]).astype(np.float32)


@pytest.mark.parametrize(
    "subtype,fmt,tol",
    [("PCM_16", "WAV", 2**-15), ("PCM_24", "WAV", 2**-23), ("FLOAT", "WAV", 1e-7), ("PCM_16", "FLAC", 2**-15), ("PCM_24", "FLAC", 2**-23)],
)
def test_load_int_and_float_files(tmp_path, subtype, fmt, tol):
    x = _tone()
    path = tmp_path / f"x.{fmt.lower()}"
    sf.write(path, x.T, 22050, subtype=subtype, format=fmt)
    y, sr = load_audio(str(path))
    assert sr == 22050 and y.dtype == np.float32 and y.shape == x.shape
    assert np.max(np.abs(y - x)) <= tol


@pytest.mark.parametrize("channels", [1, 2, 6])
def test_channel_layouts_and_mono_downmix(tmp_path, channels):
    x = _tone(channels=channels)
    path = tmp_path / "x.wav"
    sf.write(path, x.T, 22050, subtype="FLOAT")
    y, _ = load_audio(str(path))
    assert y.shape == (channels, x.shape[1])
    m, _ = load_audio(str(path), mono=True)
    assert m.shape == (1, x.shape[1])
    np.testing.assert_allclose(m[0], x.mean(axis=0), atol=1e-6)


@pytest.mark.parametrize("sr", [8000, 16000, 44100, 48000, 96000])
def test_sample_rates_and_resampling(tmp_path, sr):
    x = _tone(sr=sr, seconds=1.0, channels=1)
    path = tmp_path / "x.flac"
    save_audio(str(path), x, sr)
    y, got = load_audio(str(path))
    assert got == sr and y.shape == x.shape
    z, got = load_audio(str(path), sr=22050)
    assert got == 22050
    assert abs(z.shape[1] - 22050) <= 1
    # a 220 Hz tone survives resampling: its spectral peak stays at 220 Hz
    spec = np.abs(np.fft.rfft(z[0]))
    assert abs(np.argmax(spec) * 22050 / z.shape[1] - 220) < 2


def test_info_reads_header(tmp_path):
    path = tmp_path / "x.flac"
    save_audio(str(path), _tone(channels=2), 22050, subtype="PCM_24")
    info = audio_info(str(path))
    assert (info.sample_rate, info.channels, info.subtype) == (22050, 2, "PCM_24")
    assert info.duration_s == pytest.approx(0.5)


@pytest.mark.parametrize(
    "make,kind",
    [
        (lambda p: p.write_bytes(b""), "empty"),
        (lambda p: p.write_text("this is not audio, just text " * 20), "unsupported"),
        (lambda p: p.mkdir(), "unreadable"),
    ],
    ids=["zero-bytes", "text-named-wav", "directory"],
)
def test_bad_files_raise_named_errors(tmp_path, make, kind):
    path = tmp_path / "bad.wav"
    make(path)
    with pytest.raises(AudioError) as err:
        load_audio(str(path))
    assert err.value.kind == kind
    assert str(path) in str(err.value)


def test_missing_file(tmp_path):
    with pytest.raises(AudioError) as err:
        load_audio(str(tmp_path / "nope.flac"))
    assert err.value.kind == "not_found"


def test_truncated_flac_is_an_error_or_shorter(tmp_path):
    path = tmp_path / "x.flac"
    save_audio(str(path), _tone(seconds=2.0), 22050)
    data = path.read_bytes()
    cut = tmp_path / "cut.flac"
    cut.write_bytes(data[: len(data) // 3])
    # libsndfile may decode the frames that survived; it must never return garbage silently.
    try:
        y, _ = load_audio(str(cut))
    except AudioError as exc:
        assert exc.kind in ("unreadable", "unsupported", "empty")
    else:
        assert np.isfinite(y).all() and y.shape[1] <= 2 * 22050
    header_only = tmp_path / "hdr.flac"
    header_only.write_bytes(data[:40])
    with pytest.raises(AudioError):
        load_audio(str(header_only))


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_samples_are_refused(tmp_path, bad):
    x = _tone(channels=1)
    x[0, 100] = bad
    path = tmp_path / "nan.wav"
    sf.write(path, x.T, 22050, subtype="FLOAT")
    with pytest.raises(AudioError) as err:
        load_audio(str(path))
    assert err.value.kind == "non_finite" and "NaN or infinite" in str(err.value)


def test_too_long_is_checked_from_the_header(tmp_path):
    path = tmp_path / "long.flac"
    save_audio(str(path), _tone(seconds=2.0), 22050)
    with pytest.raises(AudioError) as err:
        load_audio(str(path), max_duration_s=1.0)
    assert err.value.kind == "too_long"


def test_memory_filesystem_round_trip():
    x = _tone()
    save_audio("memory://sepflow-test/a/b.wav", x, 22050, subtype="FLOAT")
    y, sr = load_audio("memory://sepflow-test/a/b.wav")
    np.testing.assert_array_equal(x, y)
    fsspec.filesystem("memory").rm("/sepflow-test", recursive=True)


def test_save_is_atomic_and_leaves_no_temp_files(tmp_path):
    path = tmp_path / "out" / "x.flac"
    save_audio(str(path), _tone(), 22050)
    save_audio(str(path), _tone(seconds=0.25), 22050)  # overwrite in place
    assert os.listdir(path.parent) == ["x.flac"]
    assert audio_info(str(path)).frames == int(0.25 * 22050)


def test_failed_encode_leaves_nothing(tmp_path):
    path = tmp_path / "x.flac"
    with pytest.raises(ValueError):
        save_audio(str(path), _tone(), 22050, subtype="FLOAT")  # FLAC holds integers only
    assert not path.exists() and os.listdir(tmp_path) == []


def test_integer_encoding_clips_instead_of_wrapping():
    loud = np.array([[2.0, -2.0, 0.5]], dtype=np.float32)
    import io

    y, _ = sf.read(io.BytesIO(encode_audio(loud, 8000, format="wav")), dtype="float32")
    assert y[0] > 0.99 and y[1] <= -0.99 and abs(y[2] - 0.5) < 1e-4
