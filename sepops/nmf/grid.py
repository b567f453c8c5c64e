"""The working grid of unsupervised NMF: one time-frequency grid whatever the input's rate.

A factorisation learnt from random starting factors lands on different components when its
matrix changes shape, so the same music at 44.1 and 48 kHz (or through a codec that decodes
at 48 kHz) would be separated differently. Unsupervised NMF therefore factorises the
magnitude spectrogram on a fixed grid, bins ``bin_hz`` apart and frames ``frame_s`` apart
(by default those of a 2048/512 STFT at 22.05 kHz: 10.77 Hz, 23.2 ms), and maps templates
and activations back to the input's grid for the masks. Where the two grids coincide (22.05
and 44.1 kHz with the default settings) nothing is interpolated. Elsewhere the operator
analyses the audio resampled to 22.05 kHz, which is the grid exactly; :meth:`WorkingGrid.to_working`
reads the input's own STFT (a window of the same duration at its rate) by linear
interpolation only when the fitted band reaches above 11.025 kHz.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["Interpolation", "WorkingGrid"]


@dataclass(frozen=True)
class Interpolation:
    """Linear interpolation from positions ``src`` to positions ``dst`` along one axis
    (positions outside ``src`` take its nearest end).

    Attributes
    ----------
    index : np.ndarray of int, shape (len(dst),)
        Left neighbour in ``src`` of each destination.
    weight : np.ndarray of float32, shape (len(dst),)
        Weight of the right neighbour (``index + 1``).
    """

    index: np.ndarray
    weight: np.ndarray

    @classmethod
    def between(cls, src: np.ndarray, dst: np.ndarray) -> Interpolation:
        src, dst = np.asarray(src, dtype=np.float64), np.asarray(dst, dtype=np.float64)
        if len(src) < 2:
            return cls(np.zeros(len(dst), dtype=int), np.zeros(len(dst), dtype=np.float32))
        index = np.clip(np.searchsorted(src, dst, side="right") - 1, 0, len(src) - 2)
        weight = np.clip((dst - src[index]) / (src[index + 1] - src[index]), 0.0, 1.0)
        return cls(index, weight.astype(np.float32))

    def __call__(self, x: np.ndarray, axis: int) -> np.ndarray:
        """``x`` interpolated along ``axis``; the other axes are kept."""
        x = np.moveaxis(np.asarray(x), axis, -1)
        if x.shape[-1] < 2:
            out = np.repeat(x[..., :1], len(self.index), axis=-1)
        else:
            out = x[..., self.index] * (1 - self.weight) + x[..., self.index + 1] * self.weight
        return np.moveaxis(out.astype(x.dtype, copy=False), -1, axis)


@dataclass(frozen=True)
class WorkingGrid:
    """The maps between an input's STFT grid and the working grid (see the module docstring).

    The working grid's bins run from 0 to ``max_freq`` (or the input's Nyquist frequency,
    if lower) and its frames over the input's frames, so its shape depends on the music's
    duration and band, not on the input's rate. ``to_working_bins`` / ``to_working_frames``
    read the input's magnitudes (its first ``n_input_bins`` bins) on the working grid;
    ``to_input_bins`` / ``to_input_frames`` bring templates and activations back. All four
    are ``None`` when the grids coincide.
    """

    n_input_bins: int
    n_working_bins: int
    n_working_frames: int
    to_working_bins: Interpolation | None
    to_working_frames: Interpolation | None
    to_input_bins: Interpolation | None
    to_input_frames: Interpolation | None

    @classmethod
    def for_input(
        cls, sr: int, n_fft: int, hop_length: int, n_input_frames: int,
        *, max_freq: float, bin_hz: float, frame_s: float, n_working_frames: int | None = None,
    ) -> WorkingGrid:
        """The working grid of an STFT of ``n_fft`` / ``hop_length`` at ``sr`` with
        ``n_input_frames`` frames, over the bins up to ``max_freq`` Hz; its frames span the
        input's, or number ``n_working_frames`` (an analysis of the same audio made on the
        working grid)."""
        top = min(max_freq, sr / 2)
        f_work = np.arange(int(np.floor(top / bin_hz + 1e-9)) + 1) * bin_hz
        # The input bins up to the last working bin, and one more to interpolate it from.
        n_input_bins = min(n_fft // 2 + 1, int(np.floor(f_work[-1] * n_fft / sr + 1e-9)) + 2)
        f_in = np.arange(n_input_bins) * sr / n_fft
        if n_input_bins > len(f_work) and np.allclose(f_in[: len(f_work)], f_work, rtol=0, atol=1e-6 * bin_hz):
            n_input_bins, f_in = len(f_work), f_in[: len(f_work)]  # the same bins: no extra one
        t_in = np.arange(n_input_frames) * hop_length / sr
        if n_working_frames is None:
            n_working_frames = int(np.floor(t_in[-1] / frame_s + 1e-9)) + 1
        t_work = np.arange(n_working_frames) * frame_s
        same_bins = len(f_work) == len(f_in) and np.allclose(f_work, f_in, rtol=0, atol=1e-6 * bin_hz)
        same_frames = len(t_work) == len(t_in) and np.allclose(t_work, t_in, rtol=0, atol=1e-6 * frame_s)
        return cls(
            n_input_bins, len(f_work), len(t_work),
            None if same_bins else Interpolation.between(f_in, f_work),
            None if same_frames else Interpolation.between(t_in, t_work),
            None if same_bins else Interpolation.between(f_work, f_in),
            None if same_frames else Interpolation.between(t_work, t_in),
        )

    @property
    def is_identity(self) -> bool:
        """Whether the input's grid is the working grid (nothing is interpolated)."""
        return self.to_working_bins is None and self.to_working_frames is None

    @staticmethod
    def _apply(x: np.ndarray, interpolation: Interpolation | None, axis: int) -> np.ndarray:
        return x if interpolation is None else interpolation(x, axis)

    def to_working(self, V: np.ndarray) -> np.ndarray:
        """(input bins, input frames) -> (working bins, working frames): the input's first
        ``n_input_bins`` bins read on the working grid."""
        V = V[: self.n_input_bins]
        return np.ascontiguousarray(
            self._apply(self._apply(V, self.to_working_bins, 0), self.to_working_frames, 1)
        )

    def templates_to_input(self, W: np.ndarray) -> np.ndarray:
        """(working bins, components) -> (``n_input_bins``, components)."""
        return np.ascontiguousarray(self._apply(W, self.to_input_bins, 0))

    def activations_to_input(self, H: np.ndarray) -> np.ndarray:
        """(components, working frames) -> (components, input frames)."""
        return np.ascontiguousarray(self._apply(H, self.to_input_frames, 1))
