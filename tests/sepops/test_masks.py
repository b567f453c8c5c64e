"""sepops.masks against the reference definitions M1 = (F1 > F2) and M1 = F1 / (F1 + F2)."""
from __future__ import annotations

import numpy as np
import pytest

from sepops.masks import binary_masks, masks, soft_masks, wiener
from sepops.spectral import istft, stft


def test_two_source_reference_definitions(rng):
    f1, f2 = rng.random((2, 5, 7)).astype(np.float32)
    f2[0, 0] = f1[0, 0]  # a tie goes to source 2, as (F1 > F2) says
    m1, m2 = binary_masks([f1, f2])
    np.testing.assert_array_equal(m1, (f1 > f2).astype(np.float32))
    np.testing.assert_array_equal(m1 + m2, 1.0)
    s1, s2 = soft_masks([f1, f2])
    np.testing.assert_allclose(s1, f1 / (f1 + f2), rtol=1e-6)
    np.testing.assert_allclose(s1 + s2, 1.0, rtol=1e-6)


def test_soft_power_and_zero_bins(rng):
    f = [rng.random((3, 4)), rng.random((3, 4)), np.zeros((3, 4))]
    f[0][0, 0] = f[1][0, 0] = 0.0
    ms = soft_masks(f, power=2.0)
    np.testing.assert_allclose(sum(ms), 1.0, rtol=1e-6)
    expected = f[0][1:] ** 2 / (f[0][1:] ** 2 + f[1][1:] ** 2)
    np.testing.assert_allclose(ms[0][1:], expected, rtol=1e-5)
    assert ms[0][0, 0] == pytest.approx(1 / 3)  # silent bin shared equally


def test_unknown_kind():
    with pytest.raises(ValueError, match="binary"):
        masks([np.ones(3)], kind="fuzzy")


def test_wiener_zero_iterations_is_power2_soft_mask(rng):
    x = stft(rng.standard_normal((2, 4096)).astype(np.float32))
    v = [np.abs(x) * rng.random(x.shape), np.abs(x) * rng.random(x.shape)]
    y = wiener(x, v, iterations=0)
    np.testing.assert_allclose(y[0] + y[1], x, atol=1e-5)


def test_wiener_improves_a_stereo_separation(rng):
    """Two noise sources panned apart; rough magnitude estimates; EM should sharpen them."""
    n = 22050
    s = rng.standard_normal((2, n)).astype(np.float32)
    s[0] = np.convolve(s[0], np.ones(8) / 8, mode="same")  # low-pass source
    s[1] = s[1] - np.convolve(s[1], np.ones(8) / 8, mode="same")  # high-pass source
    a = np.array([[0.9, 0.3], [0.3, 0.9]], dtype=np.float32)
    imgs = [a[:, [i]] * s[i] for i in range(2)]
    mix = imgs[0] + imgs[1]
    X = stft(mix)
    true = [np.abs(stft(im)) for im in imgs]
    noisy = [t + 0.5 * np.abs(X) for t in true]  # blurred estimates

    def err(specs):
        outs = [istft(sp, length=n) for sp in specs]
        return sum(np.sum((o - im) ** 2) for o, im in zip(outs, imgs))

    e0 = err(wiener(X, noisy, iterations=0))
    e2 = err(wiener(X, noisy, iterations=2))
    assert e2 < e0
