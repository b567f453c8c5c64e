"""The f0 contour of a single-voice stem (librosa.pyin) and chroma per beat of a harmonic one."""
from __future__ import annotations

import numpy as np

__all__ = ["CHROMA_HOP", "CHROMA_SR", "PITCH_SR", "beat_chroma", "chroma_frames", "f0_contour"]

#: pyin runs at 16 kHz: f0 of voices and melody instruments lies far below 8 kHz, and the
#: resampling makes it 2.8x cheaper than at 44.1 kHz.
PITCH_SR = 16000


def f0_contour(
    mono: np.ndarray, sr: int, *, fmin: float = 65.0, fmax: float = 1047.0, hop_s: float = 0.02
) -> np.ndarray:
    """The f0 of a mono signal every ``hop_s`` seconds from 0 (librosa.pyin); NaN = unvoiced.

    Parameters
    ----------
    mono : np.ndarray, shape (samples,)
    sr : int
    fmin, fmax : float
        The f0 search range, Hz (default C2 to C6).
    hop_s : float
        The contour's time step, seconds.

    Returns
    -------
    np.ndarray, shape (ceil(duration / hop_s),), float32
    """
    import librosa

    from ..audio import resample

    x = np.asarray(mono, dtype=np.float32)
    if sr != PITCH_SR:
        x = resample(x[None, :], sr, PITCH_SR)[0]
    hop = max(1, round(hop_s * PITCH_SR))
    # Two periods of fmin in a frame, as pyin needs, rounded up to a power of two.
    frame = int(2 ** np.ceil(np.log2(max(2 * PITCH_SR / fmin, 4 * hop))))
    frames = int(np.ceil(len(x) / hop))
    if len(x) < frame // 2 or not np.any(x):
        return np.full(frames, np.nan, dtype=np.float32)
    f0, voiced, _ = librosa.pyin(x, fmin=fmin, fmax=fmax, sr=PITCH_SR, frame_length=frame, hop_length=hop)
    f0 = np.where(voiced, f0, np.nan).astype(np.float32)
    return f0[:frames] if len(f0) >= frames else np.pad(f0, (0, frames - len(f0)), constant_values=np.nan)


#: Chroma frames are computed at 22.05 kHz with this hop (23 ms): finer than any beat.
CHROMA_SR = 22050
CHROMA_HOP = 512


def chroma_frames(mono: np.ndarray, sr: int) -> np.ndarray:
    """Chroma (C, C#, ..., B) of a mono signal every ``CHROMA_HOP`` samples at ``CHROMA_SR``.

    Returns
    -------
    np.ndarray, shape (12, frames)
    """
    import librosa

    x = np.asarray(mono, dtype=np.float32)
    if sr != CHROMA_SR:
        import soxr

        x = soxr.resample(x, sr, CHROMA_SR, quality="MQ")
    if len(x) < 4096:
        x = np.pad(x, (0, 4096 - len(x)))
    return librosa.feature.chroma_stft(y=x, sr=CHROMA_SR, hop_length=CHROMA_HOP, n_fft=4096)


def beat_chroma(chroma: np.ndarray, hop_s: float, beat_times_s: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Chroma frames averaged between beats.

    Parameters
    ----------
    chroma : np.ndarray, shape (12, frames)
        Frame ``i`` at ``i * hop_s`` seconds (:func:`chroma_frames`).
    hop_s : float
    beat_times_s : np.ndarray
        Beat times, seconds (segments: [0, b0), [b0, b1), ..., [b_last, end)).

    Returns
    -------
    starts_s : np.ndarray, shape (segments,)
    chroma : np.ndarray, shape (segments, 12), float32
        Each segment's mean chroma, scaled to a maximum of 1 (all zeros when silent).
    """
    import librosa

    frames = np.round(np.asarray(beat_times_s, dtype=np.float64) / hop_s).astype(int)
    bounds = librosa.util.fix_frames(frames[frames < chroma.shape[1]], x_min=0, x_max=chroma.shape[1])
    synced = librosa.util.sync(chroma, bounds, aggregate=np.mean).T  # (segments, 12)
    peak = synced.max(axis=1, keepdims=True)
    synced = np.divide(synced, peak, out=np.zeros_like(synced), where=peak > 0)
    return bounds[:-1] * hop_s, synced.astype(np.float32)
