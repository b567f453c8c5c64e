"""The onset detector (``sepops.features``: the features table's ``onset_times_s``) on signals
whose onsets are known: plucked notes at chosen times, and one long tone with vibrato.

The detector's accuracy on rendered music is measured by ``benchmarks/onsets.py``.
"""
from __future__ import annotations

import numpy as np
import pytest

from sepops.features import HOP, ONSET_SR, extract_features, onset_envelope, onset_times

mir_eval = pytest.importorskip("mir_eval")


def _plucks(sr: int, seconds: float = 12.0, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Plucked notes (5 harmonics, exponential decay) at irregular times 0.15-0.6 s apart, at
    random pitches and levels, each ringing into the next; and their onset times."""
    rng = np.random.default_rng(seed)
    times = []
    t = 0.3
    while t < seconds - 0.5:
        times.append(t)
        t += rng.uniform(0.15, 0.6)
    y = np.zeros(int(seconds * sr))
    for t0 in times:
        f0 = 110.0 * 2 ** rng.uniform(0, 3)  # A2 to A5
        n = int(1.5 * sr)
        k = np.arange(n) / sr
        note = sum(np.sin(2 * np.pi * h * f0 * k) / h for h in range(1, 6)) * np.exp(-k / rng.uniform(0.1, 0.5))
        note[: int(0.002 * sr)] *= np.linspace(0, 1, int(0.002 * sr))  # a 2 ms attack, no click
        i = round(t0 * sr)
        m = min(n, len(y) - i)
        y[i : i + m] += rng.uniform(0.3, 1.0) * note[:m]
    return (0.5 * y / np.abs(y).max()).astype(np.float32), np.asarray(times)


def _held_tone(sr: int, seconds: float = 8.0, start_s: float = 0.5) -> np.ndarray:
    """One note held from ``start_s`` (a 50 ms attack) to the end: 6 harmonics of A4 with a
    5.5 Hz vibrato of +-20 cents and a 4 Hz tremolo of +-1 dB, over white noise 60 dB down."""
    t = np.arange(int(seconds * sr)) / sr
    f = 440.0 * 2 ** (20 / 1200 * np.sin(2 * np.pi * 5.5 * t))
    phase = 2 * np.pi * np.cumsum(f) / sr
    tone = sum(np.sin(h * phase) / h for h in range(1, 7)) * 10 ** (1 / 20 * np.sin(2 * np.pi * 4.0 * t))
    tone *= np.clip((t - start_s) / 0.05, 0, 1) * 0.3 / np.abs(tone).max()
    noise = 0.3e-3 * np.random.default_rng(0).standard_normal(len(t))
    return (tone + noise).astype(np.float32)


@pytest.mark.parametrize("sr", [22050, 44100])
def test_plucked_notes_are_found_within_50_ms(sr):
    y, truth = _plucks(sr)
    found = onset_times(onset_envelope(y, sr))
    f, precision, recall = mir_eval.onset.f_measure(truth, found, window=0.05)
    assert f >= 0.95, (f, precision, recall, len(found), len(truth))


def test_the_features_table_gives_the_same_onsets():
    sr = 44100
    y, truth = _plucks(sr, seed=1)
    row = extract_features({"lead": y[None, :]}, sr)["lead"]
    f, _, _ = mir_eval.onset.f_measure(truth, np.asarray(row["onset_times_s"]), window=0.05)
    assert f >= 0.95
    # one value per 220 samples at 22.05 kHz, whatever the stem's rate
    assert HOP == 220 and ONSET_SR == 22050
    assert len(onset_envelope(y, sr)) == 1 + len(y) * ONSET_SR // sr // HOP


@pytest.mark.parametrize("sr", [22050, 44100])
def test_a_held_tone_with_vibrato_is_one_onset(sr):
    found = onset_times(onset_envelope(_held_tone(sr), sr))
    note = found[found > 0.3]  # (the noise's own start, at 0 s, may count as an onset)
    # One onset for the note, and none while it is held (7.4 s: 40 vibrato and 30 tremolo
    # cycles). The plain flux this detector replaced found a second one 60 ms after the
    # attack; librosa's default, at 22.05 kHz, one per tremolo cycle.
    assert len(note) == 1 and abs(note[0] - 0.5) < 0.05, found


def test_silence_has_no_onset():
    assert onset_times(onset_envelope(np.zeros(22050, dtype=np.float32), 22050)).size == 0
