"""sepops.features on signals whose truth is known: clicks, sines, tone bursts, a -23 LUFS reference."""
from __future__ import annotations

import numpy as np
import pytest

from sepops.features import (
    FeatureExtractor,
    FeatureSettings,
    LoudnessMeter,
    extract_features,
    integrated_loudness,
)


def _clicks(bpm: float, seconds: float, sr: int, start_s: float = 0.5) -> tuple[np.ndarray, np.ndarray]:
    """A click track (librosa's clicks) and its click times."""
    import librosa

    times = np.arange(start_s, seconds - 0.1, 60.0 / bpm)
    return librosa.clicks(times=times, sr=sr, length=int(seconds * sr)).astype(np.float32)[None, :], times


def test_beat_times_of_a_click_track_within_20_ms():
    sr = 22050
    audio, truth = _clicks(120.0, 20.0, sr)
    f = extract_features({"drums": audio}, sr, FeatureSettings(rhythm=True))["drums"]
    beats = np.asarray(f["beat_times_s"])
    assert len(beats) >= 0.8 * len(truth)  # the tracker may trim a weak first or last beat
    errors = np.abs(beats[:, None] - truth[None, :]).min(axis=1)
    assert errors.max() < 0.020, errors
    assert f["tempo_bpm"] == pytest.approx(120.0, rel=0.02)


def test_onsets_of_a_click_track_within_20_ms():
    sr = 44100
    audio, truth = _clicks(100.0, 10.0, sr)
    onsets = np.asarray(extract_features({"x": audio}, sr)["x"]["onset_times_s"])
    assert len(onsets) == len(truth)
    assert np.abs(onsets - truth).max() < 0.020


@pytest.mark.parametrize("f0", [110.0, 220.0, 440.0])
def test_median_f0_of_a_sine_within_1_percent(f0):
    sr = 22050
    t = np.arange(3 * sr) / sr
    audio = (0.5 * np.sin(2 * np.pi * f0 * t)).astype(np.float32)[None, :]
    f = extract_features({"lead": audio}, sr, FeatureSettings(pitch=True))["lead"]
    assert f["f0_median_hz"] == pytest.approx(f0, rel=0.01)
    assert f["voiced_fraction"] > 0.9
    assert len(f["f0_hz"]) == int(np.ceil(3.0 / f["f0_hop_s"]))


def test_activity_segments_of_tone_bursts_within_50_ms():
    sr = 44100
    audio = np.zeros((2, 6 * sr), dtype=np.float32)
    truth = [(1.0, 3.0), (3.8, 4.5)]  # a gap of 0.8 s: two segments
    t = np.arange(6 * sr) / sr
    for start, end in truth:
        span = (t >= start) & (t < end)
        audio[:, span] = 0.3 * np.sin(2 * np.pi * 330 * t[span])
    audio += np.random.default_rng(0).normal(0, 1e-4, audio.shape).astype(np.float32)  # -80 dB of noise
    f = extract_features({"lead": audio}, sr)["lead"]
    segments = [(s["start_s"], s["end_s"]) for s in f["activity_segments"]]
    assert len(segments) == 2
    for (start, end), (true_start, true_end) in zip(segments, truth):
        assert abs(start - true_start) < 0.05 and abs(end - true_end) < 0.05
    assert f["active_fraction"] == pytest.approx(2.7 / 6, abs=0.02)


def test_a_silent_stem_has_no_segment_and_no_loudness():
    f = extract_features({"x": np.zeros((1, 22050 * 2), dtype=np.float32)}, 22050)["x"]
    assert f["activity_segments"] == [] and f["active_fraction"] == 0.0
    assert f["loudness_lufs"] is None and f["onset_times_s"] == []
    assert f["feature_errors"] is None


def test_loudness_of_the_ebu_minus_23_lufs_reference_within_0_1_lu():
    # EBU Tech 3341, case 1: a stereo 1 kHz sine at -23 dBFS peak per channel is -23.0 LUFS.
    sr = 48000
    t = np.arange(20 * sr) / sr
    audio = np.tile(10 ** (-23 / 20) * np.sin(2 * np.pi * 1000 * t), (2, 1))
    assert integrated_loudness(audio, sr) == pytest.approx(-23.0, abs=0.1)
    f = extract_features({"x": audio.astype(np.float32)}, sr)["x"]
    assert f["loudness_lufs"] == pytest.approx(-23.0, abs=0.1)


def _music(sr: int, seconds: float) -> np.ndarray:
    """Stereo noise with a loudness that changes (so both gates do something)."""
    rng = np.random.default_rng(1)
    n = int(seconds * sr)
    envelope = np.repeat(rng.uniform(0.001, 0.5, int(seconds) + 1), sr)[:n]
    return (rng.normal(0, 1, (2, n)) * envelope).astype(np.float32)


@pytest.mark.parametrize("sr", [22050, 44100])
def test_streamed_loudness_equals_pyloudnorm_on_the_whole_signal(sr):
    audio = _music(sr, 17.3)
    meter = LoudnessMeter(sr, 2)
    for start in range(0, audio.shape[1], 12345):  # blocks that fit no 100 ms step
        meter.add(audio[:, start : start + 12345])
    assert meter.lufs() == pytest.approx(integrated_loudness(audio, sr), abs=0.01)


def test_blocks_give_the_whole_tracks_activity_and_loudness():
    sr = 22050
    audio = _music(sr, 30.0)
    stems = {"a": audio, "b": 0.5 * audio}
    whole = extract_features(stems, sr)
    extractor = FeatureExtractor(list(stems), sr, 2, FeatureSettings())
    for start in range(0, audio.shape[1], 10 * sr + 7):
        extractor.add({k: v[:, start : start + 10 * sr + 7] for k, v in stems.items()})
    blocked = extractor.finish()
    for name in stems:
        assert blocked[name]["activity_segments"] == whole[name]["activity_segments"]
        assert blocked[name]["loudness_lufs"] == pytest.approx(whole[name]["loudness_lufs"], abs=0.01)
        assert blocked[name]["duration_s"] == whole[name]["duration_s"]


def test_features_follow_the_stem_names_and_the_switches():
    sr = 22050
    audio, _ = _clicks(120.0, 6.0, sr)
    settings = FeatureSettings(rhythm=True, pitch=True, chroma=True, onsets=False)
    f = extract_features({"percussive": audio, "lead": audio, "harmonic": audio}, sr, settings)
    assert f["percussive"]["tempo_bpm"] is not None and f["percussive"]["f0_hz"] is None
    assert f["lead"]["tempo_bpm"] is None and f["lead"]["f0_hz"] is not None
    assert f["harmonic"]["chroma_per_beat"] and all(len(c) == 12 for c in f["harmonic"]["chroma_per_beat"])
    assert len(f["harmonic"]["chroma_times_s"]) == len(f["harmonic"]["chroma_per_beat"])
    assert all(v["onset_times_s"] is None for v in f.values())
    assert FeatureSettings(pitch=True, pitch_stems=("*",)).applies("pitch", "anything")
    assert FeatureSettings().digest() != FeatureSettings(pitch=True).digest()


@pytest.mark.parametrize("bad", [{"activity_threshold_db": 3}, {"pitch_fmin_hz": 900, "pitch_fmax_hz": 100}, {"pitch_hop_s": 0}])
def test_bad_settings_are_refused(bad):
    with pytest.raises(ValueError):
        FeatureSettings(**bad)
