"""The U-Net's stems cover the whole band at any input rate, and sum back to the mixture.

The shipped models run at 22.05 kHz: what lies above 11.025 kHz in a 44.1 or 48 kHz input is
split among the stems by their top-band gains (as the bins above the network's are), so the
stems sum to the mixture and keep its 11-22 kHz energy, whole and block by block.
"""
from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf

from sepops import get_operator
from sepops.blocks import separate_blocks
from sepops.spectral import StftConfig, istft, stft
from sepops.stream import open_stream
from sepops.unet.separator import _gain_curves, shipped_models

pytestmark = pytest.mark.usefixtures("torch_one_thread")


@pytest.fixture(scope="module", params=shipped_models())
def op(request):
    return get_operator("unet", model=request.param, device="cpu")


def band_energy(x: np.ndarray, sr: int, lo: float = 11000.0, hi: float = 22000.0) -> float:
    spec = np.fft.rfft(np.asarray(x, np.float64), axis=-1)
    f = np.fft.rfftfreq(x.shape[-1], 1.0 / sr)
    return float((np.abs(spec[..., (f >= lo) & (f < hi)]) ** 2).sum())


def noise(sr: int, channels: int, seconds: float = 3.0, seed: int = 0) -> np.ndarray:
    return (0.1 * np.random.default_rng(seed).standard_normal((channels, int(seconds * sr)))).astype(np.float32)


@pytest.mark.parametrize("sr", [44100, 48000])
@pytest.mark.parametrize("channels", [1, 2])
def test_white_noise_stems_sum_to_the_mixture_over_the_whole_band(op, sr, channels):
    x = noise(sr, channels)
    stems = op.separate(x, sr)
    assert list(stems) == op.stem_names and all(s.shape == x.shape for s in stems.values())
    total = sum(stems.values())
    assert np.abs(total - x).max() < 1e-4
    assert abs(band_energy(total, sr) / band_energy(x, sr) - 1) < 0.01
    # The band is split among the stems, not handed to one of them whole.
    shares = [band_energy(s, sr) / band_energy(x, sr) for s in stems.values()]
    assert all(np.isfinite(shares)) and max(shares) < 1.0


def test_the_band_above_the_model_is_split_like_its_top_band():
    # Two stems: "a" holds everything in the first half and nothing in the second. The per-
    # frame gain curve (what a frequency-flat mask does to the STFT) then follows that.
    cfg = StftConfig(1024, 256)
    frames = 200
    g = np.zeros((2, 1, frames), np.float32)
    g[0, :, : frames // 2] = 1
    g[1] = 1 - g[0]
    length = (frames - 1) * cfg.hop_length
    curves = _gain_curves(g, cfg, length)
    np.testing.assert_allclose(curves.sum(axis=0), 1, atol=1e-6)
    assert curves[0, 0, : 90 * 256].min() > 0.999 and curves[0, 0, 110 * 256 :].max() < 1e-3
    # ... and equals masking every bin of the STFT by the frame's gain.
    x = np.random.default_rng(1).standard_normal((1, length)).astype(np.float32)
    spec = stft(x, cfg.n_fft, cfg.hop_length)
    masked = istft(spec * g[0][:, None, : spec.shape[-1]], cfg.n_fft, cfg.hop_length, length=length)
    np.testing.assert_allclose(masked, curves[0] * x, atol=1e-4)


@pytest.mark.parametrize("sr", [22050, 44100, 48000])
def test_stereo_noise_sums_to_the_mixture_at_any_rate(op, sr):
    x = noise(sr, 2, seconds=2.0, seed=2)
    assert np.abs(sum(op.separate(x, sr).values()) - x).max() < 1e-4


def test_in_band_output_at_the_model_rate_is_unchanged_by_the_full_band_step(op):
    # At the model's own rate nothing is resampled: the stems are the masked STFT alone.
    sep = op.separator
    x = noise(sep.sr, 1, seconds=2.0, seed=3)
    start, stems, curves = sep._chunk(x, 1 + x.shape[1] // sep.stft_config.hop_length, 0,
                                      1 + x.shape[1] // sep.stft_config.hop_length)
    assert curves is None
    whole = op.separate(x, sep.sr)
    for name, y in zip(op.stem_names, stems):
        np.testing.assert_array_equal(whole[name], y[:, -start : -start + x.shape[1]])


@pytest.mark.parametrize("sr", [44100, 48000])
def test_blocks_equal_the_whole_signal_over_the_full_band(sr, tmp_path):
    op = get_operator("unet", model="loops_accompaniment_lead", device="cpu")
    x = noise(sr, 2, seconds=9.0, seed=4)
    whole = op.separate(x, sr)
    path = tmp_path / "x.wav"
    sf.write(str(path), x.T, sr, subtype="FLOAT")
    with open_stream(str(path)) as stream:
        parts = list(separate_blocks(op, stream, block_s=3.0))
    # At 44.1 kHz blocks start every 65,536 samples; at 48 kHz the model's window grid maps to
    # whole input samples only every 218 s, so a 9 s signal is one block there.
    assert len(parts) > 2 if sr == 44100 else len(parts) >= 1
    got = {name: np.concatenate([p[1][name] for p in parts], axis=1) for name in whole}
    for name, stem in whole.items():
        np.testing.assert_allclose(got[name], stem, atol=2e-6)
    total = sum(got.values())
    assert np.abs(total - x).max() < 1e-4
    assert abs(band_energy(total, sr) / band_energy(x, sr) - 1) < 0.01
