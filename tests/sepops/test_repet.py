"""The ``repet`` and ``repet_sim`` operators: shapes, sums, edge cases, period, quality."""
from __future__ import annotations

import numpy as np
import pytest

import sepops
from sepops.metrics import bss_eval, mean_sdr, trivial_estimate
from tests.conftest import load_piece, pieces

OPERATORS = ["repet", "repet_sim"]
AS_TASK = {"background": "accompaniment", "foreground": "lead"}


def _loop(rng, channels, sr=22050, period_s=0.5, seconds=2.0):
    """A repeating noise burst pattern plus a non-repeating tone: something to separate."""
    n = int(seconds * sr)
    cell = rng.standard_normal(int(period_s * sr)) * np.exp(-np.linspace(0, 8, int(period_s * sr)))
    loop = np.tile(cell, n // len(cell) + 1)[:n]
    t = np.arange(n) / sr
    tone = 0.3 * np.sin(2 * np.pi * (300 + 200 * t) * t)
    x = 0.1 * (loop + tone)
    return np.tile(x, (channels, 1)).astype(np.float32)


@pytest.mark.parametrize("name", OPERATORS)
@pytest.mark.parametrize("channels", [1, 2, 6])
def test_shapes_dtypes_and_sums(rng, name, channels):
    x = _loop(rng, channels)
    stems = sepops.get_operator(name, min_period_s=0.2, max_period_s=0.9) if name == "repet" \
        else sepops.get_operator(name, min_distance_s=0.2)
    out = stems.separate(x, 22050)
    assert list(out) == ["background", "foreground"]
    for s in out.values():
        assert s.shape == x.shape and s.dtype == np.float32
    np.testing.assert_allclose(out["background"] + out["foreground"], x, atol=1e-5)


@pytest.mark.parametrize("name", OPERATORS)
@pytest.mark.parametrize("mask", ["soft", "binary"])
def test_masks_sum_to_mixture(rng, name, mask):
    x = _loop(rng, 2)
    out = sepops.get_operator(name, mask=mask).separate(x, 22050)
    np.testing.assert_allclose(out["background"] + out["foreground"], x, atol=1e-5)


@pytest.mark.parametrize("name", OPERATORS)
def test_silence_in_silence_out(name):
    out = sepops.get_operator(name).separate(np.zeros((2, 30000), np.float32), 22050)
    for s in out.values():
        assert np.all(np.isfinite(s)) and not np.any(s)


@pytest.mark.parametrize("name", OPERATORS)
def test_shorter_than_one_frame(rng, name):
    x = (0.1 * rng.standard_normal((2, 100))).astype(np.float32)
    out = sepops.get_operator(name).separate(x, 22050)
    assert out["background"].shape == (2, 100)
    np.testing.assert_allclose(out["background"] + out["foreground"], x, atol=1e-5)


def test_shorter_than_the_period_keeps_everything_in_the_background(rng):
    x = _loop(rng, 1, seconds=1.5)  # two 1 s periods do not fit in 1.5 s
    op = sepops.get_operator("repet")
    assert op.period_s(x, 22050) is None
    out = op.separate(x, 22050)
    np.testing.assert_allclose(out["background"], x, atol=1e-5)


@pytest.mark.parametrize("name", OPERATORS)
@pytest.mark.parametrize("sr", [8000, 96000])
def test_sample_rates(rng, name, sr):
    x = _loop(rng, 1, sr=sr, seconds=1.0, period_s=0.25)
    params = {"min_period_s": 0.1, "max_period_s": 0.4} if name == "repet" else {"min_distance_s": 0.1}
    out = sepops.get_operator(name, **params).separate(x, sr)
    assert out["foreground"].shape == x.shape
    assert all(np.all(np.isfinite(s)) for s in out.values())
    np.testing.assert_allclose(out["background"] + out["foreground"], x, atol=1e-5)


def test_period_of_a_synthetic_loop(rng):
    x = _loop(rng, 1, period_s=0.5, seconds=3.0)
    p = sepops.get_operator("repet", min_period_s=0.2, max_period_s=1.4).period_s(x, 22050)
    # The longest multiple that repeats as well: 1 s (0.5 s repeats exactly, so does 1 s).
    assert p is not None and min(abs(p - 0.5), abs(p - 1.0)) < 0.03


def test_beat_spectrum_up_to_a_lag_is_the_prefix_of_the_whole(rng):
    from sepops.dsp import beat_spectrum

    power = rng.random((40, 500)).astype(np.float32)
    whole = beat_spectrum(power)
    assert whole.shape == (500,) and whole[0] == 1.0
    for max_lag in (0, 1, 120, 499, 10_000):
        part = beat_spectrum(power, max_lag=max_lag)
        assert len(part) == min(500, max(1, max_lag + 1))
        np.testing.assert_allclose(part, whole[: len(part)], atol=1e-5)


def test_bad_parameters_name_the_valid_ones():
    with pytest.raises(sepops.OperatorConfigError, match="valid parameters: .*max_period_s"):
        sepops.get_operator("repet", period=4.0)
    with pytest.raises(sepops.OperatorConfigError, match="valid parameters: .*min_distance_s"):
        sepops.get_operator("repet_sim", min_period_s=1.0)
    with pytest.raises(sepops.OperatorConfigError, match="min_period_s"):
        sepops.get_operator("repet", min_period_s=7.0, max_period_s=6.0)
    with pytest.raises(sepops.OperatorConfigError, match="binary"):
        sepops.get_operator("repet_sim", mask="hard")
    with pytest.raises(sepops.OperatorConfigError, match="power"):
        sepops.get_operator("repet", power=0)


def test_detected_period_is_the_full_loop(data_dir, manifest):
    op = sepops.get_operator("repet")
    for piece in pieces(manifest, "loops"):
        mix, sr, _ = load_piece(data_dir, piece)
        true = piece["source"]["loop_period_s"]
        assert abs(op.period_s(mix, sr) - true) <= 0.02 * true, piece["id"]


@pytest.fixture(scope="module")
def loops_and_trivial(data_dir, manifest):
    """The validation loops with the trivial estimate's mean SDR, scored once per module."""
    out = []
    for piece in pieces(manifest, "loops"):
        mix, sr, refs = load_piece(data_dir, piece)
        out.append((mix, sr, refs, mean_sdr(bss_eval(refs, trivial_estimate(mix, refs)))))
    return out


@pytest.mark.parametrize(
    "name, measured",
    [
        # Measured on the 6 validation loops (mono, BSS Eval v3), mean SDR over
        # accompaniment + lead minus the trivial estimate's (0.03 dB):
        # repet 6.28 dB -> +6.25 dB (nussl REPET: 6.2 dB, compact reference REPET 5.0 dB);
        # repet_sim 9.25 dB -> +9.22 dB (nussl REPET-SIM: 7.4 dB). 1.5 dB safety margin.
        ("repet", 6.25),
        ("repet_sim", 9.22),
    ],
)
def test_quality_beats_trivial(loops_and_trivial, name, measured):
    op = sepops.get_operator(name)
    gains = []
    for mix, sr, refs, trivial in loops_and_trivial:
        est = {AS_TASK[k]: v for k, v in op.separate(mix, sr).items()}
        gains.append(mean_sdr(bss_eval(refs, est)) - trivial)
    assert np.mean(gains) >= measured - 1.5, gains


def test_repet_sim_search_is_windowed_and_exact_within_the_window(rng):
    from sepops.operators.repet import similar_frames

    mag = rng.random((40, 700), dtype=np.float32)
    mag[:, 100:140] = mag[:, 400:440]  # a repetition 300 frames away
    full = similar_frames(mag, 0.0, 5, 20)
    for block in (64, 512):
        assert all(np.array_equal(a, b) for a, b in zip(full, similar_frames(mag, 0.0, 5, 20, max_lag=700, block=block)))
    near = similar_frames(mag, 0.0, 5, 20, max_lag=100)
    assert all(np.all(np.abs(n - j) <= 100) and j in n for j, n in enumerate(near))
    assert 400 in full[100] and 400 not in near[100]
    # Linear in length: 40,000 frames (about 8 minutes at 44.1 kHz / hop 512) in blocks.
    long = rng.random((16, 40_000), dtype=np.float32)
    neighbours = similar_frames(long, 0.5, 10, 10, max_lag=300)
    assert len(neighbours) == 40_000 and max(len(n) for n in neighbours) <= 10


def test_repet_sim_max_lag_is_validated():
    with pytest.raises(sepops.OperatorConfigError, match="max_lag_s"):
        sepops.get_operator("repet_sim", max_lag_s=0)
