"""The ``ensemble`` operator: UVR's ensemble modes over any operators that share stem names."""
from __future__ import annotations

import numpy as np
import pytest

from sepops import OperatorConfigError, get_operator
from sepops.blocks import separate_blocks
from sepops.operators.ensemble import _combine_spectra
from sepops.stream import AudioStream
from tests.sepops.demucs_files import mixture_signal

SR = 22050
HPSS_A = {"operator": "hpss", "params": {"kernel_size": 17, "mask": "soft"}}
HPSS_B = {"operator": "hpss", "params": {"kernel_size": 31, "mask": "soft", "margin": 1.5}, "weight": 3}


@pytest.fixture(scope="module")
def audio():
    return mixture_signal(4.0, sr=SR, seed=3)


def test_average_waveform_is_the_weighted_mean_of_the_members(audio):
    op = get_operator("ensemble", members=[HPSS_A, HPSS_B])
    a = get_operator("hpss", **HPSS_A["params"]).separate(audio, SR)
    b = get_operator("hpss", **HPSS_B["params"]).separate(audio, SR)
    stems = op.separate(audio, SR)
    assert list(stems) == ["harmonic", "percussive"]
    for s in stems:
        np.testing.assert_allclose(stems[s], 0.25 * a[s] + 0.75 * b[s], atol=1e-6)
    assert np.abs(stems["harmonic"] - a["harmonic"]).max() > 1e-3  # the members do differ


@pytest.mark.parametrize("mode", ["average_waveform", "average_spectrogram", "max_spectrogram", "min_spectrogram"])
def test_an_ensemble_of_one_operator_twice_is_that_operator(audio, mode):
    op = get_operator("ensemble", members=[HPSS_A, {**HPSS_A, "weight": 2}], mode=mode)
    alone = get_operator("hpss", **HPSS_A["params"]).separate(audio, SR)
    stems = op.separate(audio, SR)
    for s in alone:
        assert np.abs(stems[s] - alone[s]).max() <= 1e-4 * np.abs(alone[s]).max(), (mode, s)


def test_spectrogram_modes_pick_or_average_per_bin():
    rng = np.random.default_rng(0)
    specs = (rng.standard_normal((3, 2, 5, 7)) + 1j * rng.standard_normal((3, 2, 5, 7))).astype(np.complex64)
    w = np.array([0.2, 0.3, 0.5], np.float32)
    mags = np.abs(specs)
    hi = _combine_spectra(specs, w, "max_spectrogram")
    lo = _combine_spectra(specs, w, "min_spectrogram")
    np.testing.assert_allclose(np.abs(hi), mags.max(axis=0), rtol=1e-6)
    np.testing.assert_allclose(np.abs(lo), mags.min(axis=0), rtol=1e-6)
    # The bin kept is one member's value, phase and all.
    assert np.all(np.isclose(hi[None], specs).any(axis=0))
    avg = _combine_spectra(specs, w, "average_spectrogram")
    np.testing.assert_allclose(np.abs(avg), (w[:, None, None, None] * mags).sum(0), rtol=1e-5)
    mean = (w[:, None, None, None] * specs).sum(0)
    np.testing.assert_allclose(np.angle(avg * np.conj(mean)), 0, atol=1e-4)


def test_max_spectrogram_keeps_more_of_each_stem_than_min(audio):
    hi = get_operator("ensemble", members=[HPSS_A, HPSS_B], mode="max_spectrogram").separate(audio, SR)
    lo = get_operator("ensemble", members=[HPSS_A, HPSS_B], mode="min_spectrogram").separate(audio, SR)
    for s in hi:
        assert np.sum(hi[s] ** 2) > np.sum(lo[s] ** 2)


@pytest.mark.parametrize("mode", ["average_waveform", "max_spectrogram"])
def test_streamed_blocks_equal_the_whole_track(mode):
    audio = mixture_signal(12.0, sr=SR, seed=4)
    op = get_operator("ensemble", members=[HPSS_A, HPSS_B], mode=mode)
    assert op.works_in_blocks
    blocks = (audio[:, i : i + 4096] for i in range(0, audio.shape[1], 4096))
    stream = AudioStream("memory", SR, 2, audio.shape[1], blocks)
    pieces = list(separate_blocks(op, stream, block_s=3.0))
    assert len(pieces) >= 3
    whole = op.separate(audio, SR)
    for s in whole:
        streamed = np.concatenate([p[s] for _, p in pieces], axis=1)
        assert np.abs(streamed - whole[s]).max() <= 1e-4 * np.abs(whole[s]).max(), s


def test_mistakes_name_the_member_and_the_parameter():
    cases = [
        ({"members": [HPSS_A]}, "at least two"),
        ({"members": [HPSS_A, {"operator": "hpss", "parms": {}}]}, "members[1]': unknown key parms"),
        ({"members": [HPSS_A, {"operator": "hpss", "params": {"margin": "wide"}}]}, "members[1]'"),
        ({"members": [HPSS_A, {"operator": "nosuch"}]}, "unknown operator 'nosuch'"),
        ({"members": [HPSS_A, {"operator": "ibm"}]}, "cannot be a member"),
        ({"members": [HPSS_A, {**HPSS_B, "weight": 0}]}, "weight must be a number > 0"),
        ({"members": [HPSS_A, {"operator": "repet"}]}, "share no stem name (hpss: harmonic, percussive; repet:"),
        ({"members": [HPSS_A, HPSS_B], "mode": "median"}, "mode"),
    ]
    for params, expected in cases:
        with pytest.raises(OperatorConfigError) as info:
            get_operator("ensemble", **params)
        assert expected in str(info.value), str(info.value)
