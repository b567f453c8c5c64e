"""Non-negative matrix factorisation (NMF) of magnitude spectrograms: ``S ≈ D·A``.

The mixture's magnitude spectrogram ``S`` (bins x frames, the mean over channels) is
factorised into a dictionary ``D`` of spectral templates (bins x components) times their
activations ``A`` (components x frames) with the multiplicative updates of Lee & Seung,
generalised to the beta divergence (Févotte & Idier 2011): ``beta=2`` Euclidean, ``beta=1``
Kullback-Leibler (the default: it suits magnitude spectra), ``beta=0`` Itakura-Saito.
Components are then gathered into stems, each stem's partial reconstruction ``D_s A_s``
becomes a soft mask (:func:`sepops.masks.stems_from_estimates`), so the stems sum to the
mixture exactly. Multichannel audio shares one factorisation and one mask per stem.

The algorithm lives in :mod:`sepops.nmf` (``core``: the factorisation; ``grouping``: the
unsupervised rules; ``dictionary``: supervised dictionaries and their files); this module
is the operator. Two modes::

    get_operator("nmf")                                          # unsupervised: repeating, non_repeating
    get_operator("nmf", grouping="percussive")                   # percussive / harmonic
    get_operator("nmf", dictionary="loops_accompaniment_lead")   # supervised, shipped dictionary
    get_operator("nmf", dictionary="/path/to/my_dictionary.npz") # or any path / fsspec URI

**Unsupervised** (no ``dictionary``): ``n_components`` components are learnt from the
mixture alone and grouped without ground truth by one of these rules:

``"repetition"`` (default; stems ``repeating``, ``non_repeating``)
    The components whose activations repeat, and the rest. The loop period ``P`` is the
    lag that maximises the mixture's beat spectrum (Foote & Uchihashi 2001; as in REPET,
    Rafii & Pardo 2013) averaged over its multiples, with a mild preference for short lags
    so that twice the period does not win. A component whose activation correlates with
    itself ``P`` frames later (cosine similarity >= ``repetition_threshold``) is
    ``repeating``; the rest is ``non_repeating``. The stems are named for what the rule
    does, not for a role: on a loop with a melody on top (the validation loops) the
    repeating stem is the loop (drums, bass) and the non-repeating one the melody, 18.9 dB
    mean SDR on the 6 validation loops scored as accompaniment / lead, with 30 components,
    where k-means on the templates of a 20-component sklearn NMF gets 2.6 dB. On real
    recordings whose parts do not repeat at one period (a chorale; a song whose drums and
    bass vary), most components are non-repeating, whatever their role. A stem is never
    left empty while two components sound: if the threshold puts every sounding component
    on one side, the one nearest the threshold moves to the other (so no stem of a
    non-silent mixture is silent). Audio too short to hold two periods has no detectable
    repetition: everything is non-repeating but the component whose activation changes
    least from frame to frame.
``"percussive"`` (stems ``percussive``, ``harmonic``)
    For any music with drums. Drum templates are broadband and flat, pitched notes are
    harmonic combs: components are split by the spectral flatness of their template
    (geometric over arithmetic mean), at the largest gap of the sorted log flatness
    (two-means in one dimension).
``"pitch"`` (N stems, highest first; default ``high``, ``low``)
    For ensembles of voices in separate registers (a choir, a quartet). Components are
    ordered by the spectral centroid of their template and split into N groups by
    k-means on the log centroid.

**Supervised** (``dictionary`` given): per-stem dictionaries learnt from example stems
(:func:`sepops.nmf.learn_dictionary`, script ``scripts/train_nmf_dictionaries.py``) are kept fixed and
only the activations are fitted on the mixture. Dictionaries are small ``.npz`` files
(:func:`sepops.nmf.save_dictionary`, :func:`sepops.nmf.load_dictionary`) with their STFT settings, beta and sample
rate. Audio at another rate is analysed with a window of the same duration, the templates
are interpolated onto its bins, and bins above the dictionary's Nyquist frequency (a
44.1 kHz track with a 22.05 kHz dictionary) reuse the estimates of the top bin in band.
Shipped dictionaries (``sepops/models/nmf/``, :func:`sepops.nmf.shipped_dictionaries`):

- ``loops_accompaniment_lead``: ``accompaniment``, ``lead`` of drum+bass loops with a melody;
- ``chorales_satb``: ``soprano``, ``alto``, ``tenor``, ``bass`` of wind-quartet chorales.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

from ..base import MaskingOperator, StftParams
from ..blocks import WINDOWED_CONTEXT_S, WINDOWED_CROSSFADE_S, BlockContext
from ..errors import OperatorConfigError
from ..nmf.core import nmf
from ..nmf.dictionary import NmfDictionary, load_dictionary
from ..nmf.grouping import group_components
from ..registry import register
from ..spectral import StftConfig

__all__ = ["NmfConfig", "NmfOperator"]

_DEFAULT_STEMS = {
    "repetition": ("repeating", "non_repeating"),
    "percussive": ("percussive", "harmonic"),
    "pitch": ("high", "low"),
}
#: Cross-fade between the blocks of a long track, supervised mode (seconds).
_SUPERVISED_CROSSFADE_S = 0.5
#: Analysis window of the unsupervised mode: 2048 samples at 22.05 kHz (93 ms), scaled.
_REFERENCE_SR, _REFERENCE_N_FFT = 22050, 2048


@dataclass(frozen=True)
class NmfConfig(StftParams):
    """Parameters of the ``nmf`` operator.

    dictionary : shipped dictionary name (``loops_accompaniment_lead``, ``chorales_satb``) or
        path / URI of a ``.npz`` from :func:`sepops.nmf.save_dictionary`; ``None``: unsupervised.
    stems : stem names; unsupervised default per grouping rule, supervised: the dictionary's
        (if given, they must be the dictionary's stems, in any order).
    n_components : components of the unsupervised factorisation.
    grouping : unsupervised grouping rule, "repetition", "percussive" or "pitch".
    repetition_threshold : repetition score (0..1) from which a component is repeating.
    beta : divergence, 2 Euclidean, 1 Kullback-Leibler, 0 Itakura-Saito (0 <= beta <= 2).
        ``None`` in supervised mode: the dictionary's.
    n_iter : at most this many multiplicative-update iterations; ``None``: 100 unsupervised
        (fewer lose up to 2 dB on the validation loops), 40 supervised (projection start: as
        good as 100 from a random one).
    tol : the updates stop early once the divergence drops by less than this fraction of its
        initial value between two checks (0: always run ``n_iter``).
    fit_max_freq : the factorisation is fitted on the bins up to this frequency (Hz; 0: all
        bins), where music holds nearly all its energy and structure; it halves the work at
        44.1 kHz. Above it, unsupervised: the templates are extended with ``high_band_iter``
        dictionary-only updates, the activations fixed; supervised: the dictionary's own
        templates (up to its Nyquist frequency) times the fitted activations.
    high_band_iter : unsupervised, updates of the templates above ``fit_max_freq``.
    init : supervised, initial activations, "projection" (``W.T @ V``, converges in fewer
        iterations) or "random".
    mask : how the stems' magnitudes become masks: "soft" (ratio masks with exponent
        ``power``) or "binary" (each bin goes to the loudest stem).
    power : exponent of the soft masks (2, Wiener-like gains, scored 0.5-0.8 dB above 1 in
        every mode on the validation set); "binary" masks ignore it.
    wiener_iterations : EM iterations of the multichannel Wiener post-filter (0: off).
    n_fft : STFT window and FFT length, samples (0: automatic per sample rate, a 93 ms
        window unsupervised, the dictionary's window duration supervised).
    hop_length : STFT hop, samples (0 with ``n_fft`` 0: automatic, a quarter of the window
        unsupervised, the dictionary's hop duration supervised; 0 with a given ``n_fft``: a
        quarter of it).
    seed : seed of the random initialisation (results are deterministic).
    """

    automatic_stft = True

    n_fft: int = 0
    hop_length: int = 0
    dictionary: str | None = None
    stems: tuple[str, ...] | None = None
    n_components: int = 30
    grouping: Literal["repetition", "percussive", "pitch"] = "repetition"
    repetition_threshold: float = 0.65
    beta: float | None = None
    n_iter: int | None = None
    tol: float = 1e-4
    fit_max_freq: float = 11025.0
    high_band_iter: int = 10
    init: Literal["projection", "random"] = "projection"
    mask: Literal["soft", "binary"] = "soft"
    power: float = 2.0
    wiener_iterations: int = 0
    seed: int = 0

    def __post_init__(self):
        super().__post_init__()
        if self.n_components < 1:
            raise ValueError(f"n_components must be >= 1, got {self.n_components}")
        if self.beta is not None and not 0.0 <= self.beta <= 2.0:
            raise ValueError(f"beta must be in [0, 2], got {self.beta}")
        if self.n_iter is not None and self.n_iter < 1:
            raise ValueError(f"n_iter must be >= 1, got {self.n_iter}")
        if self.tol < 0:
            raise ValueError(f"tol must be >= 0, got {self.tol}")
        if self.fit_max_freq < 0:
            raise ValueError(f"fit_max_freq must be >= 0 (0: all bins), got {self.fit_max_freq}")
        if self.high_band_iter < 0:
            raise ValueError(f"high_band_iter must be >= 0, got {self.high_band_iter}")
        if not 0.0 <= self.repetition_threshold <= 1.0:
            raise ValueError(f"repetition_threshold must be in [0, 1], got {self.repetition_threshold}")
        if self.power <= 0:
            raise ValueError(f"power must be > 0, got {self.power}")
        if self.wiener_iterations < 0:
            raise ValueError(f"wiener_iterations must be >= 0, got {self.wiener_iterations}")
        if self.stems is not None:
            if len(set(self.stems)) != len(self.stems) or not self.stems:
                raise ValueError(f"stems must be distinct names, got {self.stems}")
            if self.dictionary is None:
                if self.grouping in ("repetition", "percussive") and len(self.stems) != 2:
                    raise ValueError(f"grouping {self.grouping!r} makes 2 stems, got {list(self.stems)}")
                if len(self.stems) > self.n_components:
                    raise ValueError("more stems than n_components")


@register
class NmfOperator(MaskingOperator):
    """NMF separation: unsupervised (components grouped by repetition, flatness or pitch) or
    supervised with fixed per-stem dictionaries; stems by soft masks. See :mod:`sepops.operators.nmf`.
    """

    name = "nmf"
    Config = NmfConfig
    resource_params = (("dictionary", "nmf_dictionary"),)  # checked by Operator.check_resources
    #: For ``sepflow operators``: the stems depend on the mode.
    stems_description = (
        "unsupervised: repeating, non_repeating (grouping repetition), percussive, harmonic "
        "(grouping percussive) or high, low (grouping pitch); supervised: the dictionary's (loops_accompaniment_lead: "
        "accompaniment, lead; chorales_satb: soprano, alto, tenor, bass)"
    )

    def __init__(self, config=None, /, **params):
        super().__init__(config, **params)
        self.dictionary: NmfDictionary | None = None
        if self.config.dictionary is not None:
            try:
                self.dictionary = load_dictionary(self.config.dictionary)
            except OperatorConfigError as exc:
                raise type(exc)(f"operator 'nmf' parameter 'dictionary': {exc}") from exc
            if self.config.stems is not None and set(self.config.stems) != set(self.dictionary.stems):
                raise OperatorConfigError(
                    f"operator 'nmf': stems {list(self.config.stems)} differ from the dictionary's "
                    f"{self.dictionary.stems}"
                )
        self._templates_cache: dict = {}

    @property
    def stem_names(self) -> list[str]:
        if self.config.stems is not None:
            return list(self.config.stems)
        if self.dictionary is not None:
            return self.dictionary.stems
        return list(_DEFAULT_STEMS[self.config.grouping])

    @property
    def beta(self) -> float:
        if self.config.beta is not None:
            return self.config.beta
        return self.dictionary.beta if self.dictionary is not None else 1.0

    def stft_config_for(self, sr: int) -> StftConfig:
        """STFT settings used at sample rate ``sr`` (see ``n_fft`` in :class:`NmfConfig`)."""
        c = self.config
        if c.n_fft:
            return c.stft_at(sr)
        if self.dictionary is not None:
            d = self.dictionary
            # Same window duration, hence the same bin spacing: templates map bin to bin.
            n_fft = max(16, 2 * round(d.n_fft * sr / d.sr / 2))
            hop = max(1, min(n_fft, round(d.hop_length * sr / d.sr)))
            return StftConfig(n_fft, hop, d.window)
        # A power of two near the same window in seconds: 4096 at 44.1 and 48 kHz. (The
        # exact scaling of StftParams.stft_at does not help here: which stem a component
        # joins is a threshold decision that small changes of the STFT flip either way.)
        n_fft = max(16, 2 ** round(np.log2(_REFERENCE_N_FFT * sr / _REFERENCE_SR)))
        return StftConfig(n_fft, n_fft // 4, c.window)

    def block_context(self, sr: int) -> BlockContext:
        cfg = self.stft_config_for(sr)
        if self.dictionary is not None:
            # Supervised: with the dictionary fixed, each frame's activations are fitted on
            # their own; only the start's scale and the stopping test see the whole block.
            # A window of context, and a short cross-fade over what that leaves.
            fade = round(_SUPERVISED_CROSSFADE_S * sr)
            context = max(fade // 2, cfg.n_fft) + cfg.n_fft
            return BlockContext(-(-context // cfg.hop_length) * cfg.hop_length, cfg.hop_length, fade)
        # Unsupervised: windowed; each block learns its own templates and groups them (the
        # loop period needs repetitions on both sides of the block's edges).
        return BlockContext(round(WINDOWED_CONTEXT_S * sr), cfg.hop_length, round(WINDOWED_CROSSFADE_S * sr))

    def estimate(self, spec: np.ndarray, sr: int) -> dict[str, np.ndarray]:
        cfg = self.stft_config_for(sr)
        V = np.abs(spec).mean(axis=0)
        if self.dictionary is not None:
            estimates = self._supervised_estimates(V, sr, cfg)
        else:
            estimates = self._unsupervised_estimates(V, sr, cfg)
        return {s: estimates[s] for s in self.stem_names}

    def _fit_bins(self, V, sr, cfg) -> int:
        """Number of bins fitted: those up to ``fit_max_freq`` (at least 2, all if 0)."""
        F = V.shape[0]
        if not self.config.fit_max_freq:
            return F
        freqs = np.arange(F) * sr / cfg.n_fft
        return int(min(F, max(2, np.searchsorted(freqs, self.config.fit_max_freq, side="right"))))

    def _unsupervised_estimates(self, V, sr, cfg) -> dict[str, np.ndarray]:
        c = self.config
        names = self.stem_names
        n_fit = self._fit_bins(V, sr, cfg)
        res = nmf(
            V[:n_fit], c.n_components, beta=self.beta, n_iter=c.n_iter or 100, tol=c.tol, seed=c.seed,
            check_every=50,  # 100 iterations rarely meet tol: fewer (costly, KL) checks
        )
        W = res.W
        if n_fit < V.shape[0]:
            # Templates above the fitted band: dictionary-only updates, the activations fixed.
            V_high = np.ascontiguousarray(V[n_fit:])
            W_high = np.full((V_high.shape[0], W.shape[1]), 1.0 / V.shape[0], dtype=W.dtype)
            if c.high_band_iter:
                W_high = nmf(
                    V_high.T, W=res.H.T, H=W_high.T, beta=self.beta, n_iter=c.high_band_iter,
                    tol=0.0, update_W=False, check_every=0,
                ).H.T
            W = np.concatenate([W, W_high])
        labels = group_components(
            W, res.H, c.grouping, len(names), V=V, sr=sr, n_fft=cfg.n_fft,
            hop_length=cfg.hop_length, repetition_threshold=c.repetition_threshold,
        )
        return {s: W[:, labels == i] @ res.H[labels == i] for i, s in enumerate(names)}

    def _supervised_estimates(self, V, sr, cfg) -> dict[str, np.ndarray]:
        c = self.config
        d = self.dictionary
        freqs = np.arange(V.shape[0]) * sr / cfg.n_fft
        # Fit only below the dictionary's Nyquist frequency, where its templates are known.
        n_band = int(np.searchsorted(freqs, d.sr / 2, side="right"))
        # ... and only up to fit_max_freq; above it the templates take the fitted activations.
        n_fit = min(n_band, self._fit_bins(V, sr, cfg))
        key = (sr, cfg.n_fft)
        if key not in self._templates_cache:
            self._templates_cache[key] = d.on_frequencies(freqs[:n_band])
        templates = self._templates_cache[key]
        W = np.concatenate([templates[s][:n_fit] for s in d.stems], axis=1)
        res = nmf(
            V[:n_fit], W=W, beta=self.beta, n_iter=c.n_iter or 40, tol=c.tol, update_W=False, seed=c.seed,
            init=c.init,
        )
        out, start = {}, 0
        for s in d.stems:
            k = templates[s].shape[1]
            est = templates[s] @ res.H[start : start + k]
            start += k
            if n_band < V.shape[0]:
                # Above the band: the estimates (so the masks) of the top bin in band.
                est = np.concatenate([est, np.repeat(est[-1:], V.shape[0] - n_band, axis=0)])
            out[s] = est
        return out
