"""Supervised NMF dictionaries: per-stem templates learnt from example stems, their file format.

A dictionary is a small ``.npz`` (:func:`save_dictionary`): one float16 array of templates per
stem plus JSON metadata (format ``sepops-nmf-dictionary/1``, stems, STFT settings, beta,
sample rate, training facts). Shipped ones live in ``sepops/models/nmf/`` and are named by
their file stem (:func:`shipped_dictionaries`); :func:`load_dictionary` takes a shipped name,
a path or any fsspec URI. ``scripts/train_nmf_dictionaries.py`` trains the shipped ones.
"""
from __future__ import annotations

import io
import json
from dataclasses import dataclass, field

import numpy as np

from .. import resources
from ..errors import OperatorConfigError, ResourceNotFoundError
from ..spectral import stft
from .core import nmf

__all__ = ["NmfDictionary", "learn_dictionary", "load_dictionary", "save_dictionary", "shipped_dictionaries"]


@dataclass
class NmfDictionary:
    """Per-stem spectral templates learnt from example stems, with their analysis settings.

    Attributes
    ----------
    templates : dict of stem -> np.ndarray, shape (bins, components), float32
        Columns sum to 1. ``bins = 1 + n_fft // 2`` at ``sr``.
    sr : int
        Sample rate of the examples, Hz.
    n_fft, hop_length : int
        STFT settings, in samples at ``sr``.
    window : str
    beta : float
        Divergence the templates were learnt with (and the activations are fitted with).
    metadata : dict
        Anything JSON-able describing the training (data, iterations, command).
    """

    templates: dict
    sr: int
    n_fft: int = 2048
    hop_length: int = 512
    window: str = "hann"
    beta: float = 1.0
    metadata: dict = field(default_factory=dict)

    @property
    def stems(self) -> list[str]:
        return list(self.templates)

    def on_frequencies(self, freqs: np.ndarray) -> dict[str, np.ndarray]:
        """Templates linearly interpolated onto other bin frequencies (Hz), columns re-summed to 1.

        Frequencies above the dictionary's Nyquist take the value of its top bin.
        """
        own = np.arange(1 + self.n_fft // 2) * self.sr / self.n_fft
        out = {}
        for stem, W in self.templates.items():
            if len(freqs) == len(own) and np.allclose(freqs, own):
                Wi = W.astype(np.float32, copy=True)
            else:
                Wi = np.stack([np.interp(freqs, own, W[:, k]) for k in range(W.shape[1])], axis=1)
            Wi = np.maximum(Wi, 0).astype(np.float32)
            out[stem] = Wi / np.maximum(Wi.sum(axis=0), 1e-30)
        return out


def _magnitude(audio: np.ndarray, n_fft: int, hop_length: int, window: str) -> np.ndarray:
    """Channel-mean magnitude spectrogram, shape (bins, frames), float32."""
    return np.abs(stft(np.atleast_2d(audio), n_fft, hop_length, window)).mean(axis=0)


def learn_dictionary(
    stems_audio,
    sr: int,
    *,
    n_components=32,
    beta: float = 1.0,
    n_fft: int = 2048,
    hop_length: int = 512,
    window: str = "hann",
    n_iter: int = 200,
    max_frames: int = 20000,
    silence_db: float = -50.0,
    seed: int = 0,
    metadata: dict | None = None,
) -> NmfDictionary:
    """Learn one NMF dictionary per stem from example recordings of that stem alone.

    Parameters
    ----------
    stems_audio : mapping of stem -> iterable of np.ndarray, each (channels, samples) or (samples,)
        Isolated example stems at ``sr`` (e.g. the stems of training pieces).
    sr : int
    n_components : int or mapping of stem -> int
        Templates per stem.
    beta : float
        Divergence (2 Euclidean, 1 KL, 0 Itakura-Saito).
    n_fft, hop_length, window
        STFT settings, stored with the dictionary.
    n_iter : int
        Multiplicative-update iterations per stem.
    max_frames : int
        At most this many frames per stem, drawn at random (seeded) from all examples.
    silence_db : float
        Frames quieter than this (dB relative to the stem's loudest frame) are dropped:
        they teach nothing and would pull templates towards noise.
    seed : int
    metadata : dict, optional
        Stored with the dictionary (JSON-able).

    Returns
    -------
    NmfDictionary
    """
    rng = np.random.default_rng(seed)
    templates = {}
    for i, (stem, examples) in enumerate(stems_audio.items()):
        specs = [_magnitude(x, n_fft, hop_length, window) for x in examples]
        if not specs:
            raise ValueError(f"no examples for stem {stem!r}")
        V = np.concatenate(specs, axis=1)
        energy = (V**2).sum(axis=0)
        keep = energy > energy.max() * 10 ** (silence_db / 10) if energy.max() > 0 else np.ones(len(energy), bool)
        V = V[:, keep]
        if V.shape[1] > max_frames:
            V = V[:, np.sort(rng.choice(V.shape[1], max_frames, replace=False))]
        k = n_components[stem] if isinstance(n_components, dict) else n_components
        res = nmf(V, k, beta=beta, n_iter=n_iter, tol=0.0, seed=seed + i)
        templates[stem] = res.W.astype(np.float32)
    meta = dict(metadata or {})
    return NmfDictionary(templates, int(sr), n_fft, hop_length, window, float(beta), meta)


def save_dictionary(dictionary: NmfDictionary, uri: str) -> None:
    """Write a dictionary as a compressed ``.npz``: one float16 array per stem plus JSON metadata.

    Templates are stored scaled to a peak of 1 per column (float16 then keeps ~3 significant
    digits down to -140 dB below the peak) and re-normalised on loading. The file is written
    atomically to any fsspec URI.
    """
    from ..audio import write_bytes_atomic

    meta = {
        "format": "sepops-nmf-dictionary/1",
        "stems": dictionary.stems,
        "sr": dictionary.sr,
        "n_fft": dictionary.n_fft,
        "hop_length": dictionary.hop_length,
        "window": dictionary.window,
        "beta": dictionary.beta,
        "n_components": {s: int(W.shape[1]) for s, W in dictionary.templates.items()},
        "metadata": dictionary.metadata,
    }
    arrays = {
        f"templates_{i}": (W / np.maximum(W.max(axis=0), 1e-30)).astype(np.float16)
        for i, W in enumerate(dictionary.templates.values())
    }
    buf = io.BytesIO()
    np.savez_compressed(buf, metadata=np.array(json.dumps(meta)), **arrays)
    write_bytes_atomic(uri, buf.getvalue())


def shipped_dictionaries() -> list[str]:
    """Names of the dictionaries shipped in ``sepops/models/nmf``."""
    return resources.shipped("nmf_dictionary")


def load_dictionary(name_or_uri: str) -> NmfDictionary:
    """Load a dictionary by shipped name (see :func:`shipped_dictionaries`) or path / fsspec URI.

    Raises
    ------
    ResourceNotFoundError
        Nothing of that name (an ``OperatorConfigError``, listing the shipped dictionaries).
    OperatorConfigError
        The file is not a dictionary written by :func:`save_dictionary`.
    """
    import fsspec

    uri = resources.resolve("nmf_dictionary", name_or_uri)
    try:
        with fsspec.open(uri, "rb") as f:
            data = f.read()
    except (FileNotFoundError, IsADirectoryError) as exc:  # removed since it was resolved
        raise ResourceNotFoundError(f"NMF dictionary {name_or_uri!r} not found ({exc})") from exc
    try:
        with np.load(io.BytesIO(data), allow_pickle=False) as z:
            meta = json.loads(str(z["metadata"]))
            arrays = [z[f"templates_{i}"].astype(np.float32) for i in range(len(meta["stems"]))]
    except (KeyError, ValueError, OSError) as exc:
        raise OperatorConfigError(f"{name_or_uri!r} is not an NMF dictionary file ({exc})") from exc
    templates = {s: W / np.maximum(W.sum(axis=0), 1e-30) for s, W in zip(meta["stems"], arrays)}
    return NmfDictionary(
        templates, int(meta["sr"]), int(meta["n_fft"]), int(meta["hop_length"]),
        meta["window"], float(meta["beta"]), meta.get("metadata", {}),
    )
