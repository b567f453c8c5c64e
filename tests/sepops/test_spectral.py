"""sepops.spectral: perfect reconstruction and the shared-STFT cache."""
from __future__ import annotations

import numpy as np
import pytest

from sepops.spectral import Analysis, StftConfig, istft, stft


@pytest.mark.parametrize(
    "n_fft,hop,window",
    [(2048, 512, "hann"), (1024, 256, "hann"), (4096, 1024, "hann"), (1000, 250, "hamming"), (2048, 300, "hann"), (512, 512, "boxcar")],
)
@pytest.mark.parametrize("channels", [1, 2, 6])
def test_perfect_reconstruction(rng, n_fft, hop, window, channels):
    x = rng.standard_normal((channels, 10_001)).astype(np.float32)
    spec = stft(x, n_fft, hop, window)
    assert spec.shape[:2] == (channels, n_fft // 2 + 1)
    if hop <= n_fft // 2:
        assert spec.shape[2] == 1 + x.shape[1] // hop  # librosa's frame count
    y = istft(spec, n_fft, hop, window, length=x.shape[1])
    assert y.shape == x.shape
    assert np.max(np.abs(y - x)) < 1e-5


@pytest.mark.parametrize("n_fft,hop", [(3072, 512), (4096, 768), (2048, 300), (2049, 512)])
def test_blocked_inverse_does_not_depend_on_the_block(rng, n_fft, hop):
    x = rng.standard_normal((2, 30_001)).astype(np.float32)
    spec = stft(x, n_fft, hop) * rng.random((n_fft // 2 + 1, 1 + 30_001 // hop), dtype=np.float32)
    whole = istft(spec, n_fft, hop, length=x.shape[1], block_frames=10**6)
    for block in (1, 7, 48):
        y = istft(spec, n_fft, hop, length=x.shape[1], block_frames=block)
        np.testing.assert_allclose(y, whole, atol=1e-6)


def test_shorter_than_one_frame(rng):
    x = rng.standard_normal((2, 100)).astype(np.float32)
    y = istft(stft(x), length=100)
    np.testing.assert_allclose(y, x, atol=1e-5)


def test_matches_librosa_stft(rng):
    import librosa

    x = rng.standard_normal(8192).astype(np.float32)
    ours = stft(x)[0]
    ref = librosa.stft(x, n_fft=2048, hop_length=512, center=True, pad_mode="constant")
    np.testing.assert_allclose(ours, ref, atol=1e-3)


def test_bad_settings_are_refused():
    with pytest.raises(ValueError, match="hop_length"):
        StftConfig(n_fft=512, hop_length=1024)


def test_analysis_computes_each_stft_once(rng):
    an = Analysis(rng.standard_normal((2, 4096)).astype(np.float32), 22050)
    a = an.stft(StftConfig())
    b = an.stft(StftConfig())
    assert a is b and an.stft_count == 1
    an.stft(StftConfig(n_fft=1024, hop_length=256))
    assert an.stft_count == 2
