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
mixture alone and grouped without ground truth by one of these rules. The factorisation
runs on one time-frequency grid whatever the input's rate (:mod:`sepops.nmf.grid`: 10.77 Hz
bins and 23.2 ms frames by default, a 2048 / 512 STFT at ``stft_rate``; input at other rates
than ``stft_rate`` and twice it is resampled to ``stft_rate`` for the factorisation), so that
the same music at 44.1 and 48 kHz is factorised alike; templates and activations come back
onto the input's own STFT (a 93 ms window at any rate) for the masks.

``"repetition"`` (default; stems ``repeating``, ``non_repeating``)
    What repeats at the loop period, and the rest. The loop period ``P`` is the lag that
    maximises the mixture's beat spectrum (Foote & Uchihashi 2001; as in REPET, Rafii &
    Pardo 2013) averaged over its multiples, with a mild preference for short lags so that
    twice the period does not win (fractional: :func:`sepops.nmf.grouping.fractional_loop_period`).
    With ``repetition_split="periodic"`` (default) the activations are refitted, the
    templates fixed, as one pattern of ``P`` frames tiled over the track plus a free part,
    with L1 penalties set per component by how well its activation correlates with itself
    ``P`` frames later (cosine similarity, a ramp of ``repetition_width`` around
    ``repetition_threshold``): :mod:`sepops.nmf.repetition`. The split is convex given the
    templates, so it moves little when the factorisation does. With
    ``repetition_split="components"`` each whole component is repeating when its similarity
    is at least the threshold (the former rule; a stem is then never left empty while two
    components sound). The stems are named for what the rule does, not for a role: on a
    loop with a melody on top the repeating stem is the loop (drums, bass) and the
    non-repeating one the melody. On 40 training loops (44.1 kHz, 12 s, never the
    validation set; ``benchmarks/nmf_repetition.py``) the periodic split scores 16.3 dB
    mean SDR as accompaniment / lead against 15.3 dB for whole components; on 10 of them x
    2 seeds its shares stay within 0.02 between the FLAC, WAV 48 kHz, Opus, AAC, MP3 and
    Vorbis copies (largest 0.018; whole components 0.094: codec noise, like the seed, lands
    the factorisation on other components). On the 6 validation loops: 18.0 against 19.0
    dB. It costs a second pass of ``split_iter`` updates: 26x real time against 50x for
    whole components (30 s, 44.1 kHz stereo, one thread). On real recordings whose parts
    do not repeat at one period (a chorale; a song whose drums and bass vary), little is
    repeating; where the periodic part is all but empty, the whole-components rule gives the
    repeating stem the component nearest to repeating, so no stem of a sounding mixture is
    silent. Audio too short to hold two periods has frames whose phase occurs once: they
    are split in the proportion each component shows where its phase recurs; audio too
    short for any period is non-repeating but for the component whose activation changes
    least.
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
from scipy.fft import next_fast_len

from ..audio import resample
from ..base import MaskingOperator, StftParams
from ..blocks import WINDOWED_CONTEXT_S, WINDOWED_CROSSFADE_S, BlockContext
from ..errors import OperatorConfigError
from ..nmf.core import nmf
from ..nmf.dictionary import NmfDictionary, load_dictionary
from ..nmf.grid import WorkingGrid
from ..nmf.grouping import (
    fractional_loop_period,
    group_components,
    repetition_scores,
)
from ..nmf.repetition import repetition_penalties, split_periodic
from ..registry import register
from ..spectral import StftConfig, stft

__all__ = ["NmfConfig", "NmfOperator"]

_DEFAULT_STEMS = {
    "repetition": ("repeating", "non_repeating"),
    "percussive": ("percussive", "harmonic"),
    "pitch": ("high", "low"),
}
#: Cross-fade between the blocks of a long track, supervised mode (seconds).
_SUPERVISED_CROSSFADE_S = 0.5
#: Periodic split: a part holding less than this share of the activations counts as empty.
_EMPTY_PART = 1e-3
#: Analysis window of the unsupervised mode at ``stft_rate``: 2048 samples (93 ms at 22.05 kHz).
_REFERENCE_N_FFT = 2048


@dataclass(frozen=True)
class NmfConfig(StftParams):
    """Parameters of the ``nmf`` operator.

    dictionary : shipped dictionary name (``loops_accompaniment_lead``, ``chorales_satb``) or
        path / URI of a ``.npz`` from :func:`sepops.nmf.save_dictionary`; ``None``: unsupervised.
    stems : stem names; unsupervised default per grouping rule, supervised: the dictionary's
        (if given, they must be the dictionary's stems, in any order).
    n_components : components of the unsupervised factorisation.
    grouping : unsupervised grouping rule, "repetition", "percussive" or "pitch".
    repetition_threshold : repetition score (0..1, a component's activation against itself one
        period later) from which a component counts as repeating: the centre of the periodic
        split's prior, the cut-off of the component split.
    repetition_split : how the repetition rule splits, "periodic" (activations refitted as a
        tiled periodic pattern plus a free part) or "components" (whole components by score).
    repetition_width : periodic split, width of the score ramp around ``repetition_threshold``
        over which a component's prior goes from non-repeating to repeating.
    split_iter : periodic split, multiplicative updates of the refit.
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
    n_fft : STFT window and FFT length (0: automatic), samples at ``stft_rate``: automatic
        is 2048 unsupervised (93 ms at 22.05 kHz; the working grid's bins are 10.77 Hz
        apart), the dictionary's window duration supervised.
    hop_length : STFT hop, samples at ``stft_rate`` (0 with ``n_fft`` 0: automatic, a quarter
        of the window unsupervised, the dictionary's hop duration supervised; 0 with a given
        ``n_fft``: a quarter of it).
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
    repetition_split: Literal["periodic", "components"] = "periodic"
    repetition_width: float = 0.5
    split_iter: int = 200
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
        if self.repetition_width <= 0:
            raise ValueError(f"repetition_width must be > 0, got {self.repetition_width}")
        if self.split_iter < 1:
            raise ValueError(f"split_iter must be >= 1, got {self.split_iter}")
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
        if self.dictionary is not None:
            if c.n_fft:
                return c.stft_at(sr)
            d = self.dictionary
            # Same window duration, hence the same bin spacing: templates map bin to bin.
            n_fft = max(16, 2 * round(d.n_fft * sr / d.sr / 2))
            hop = max(1, min(n_fft, round(d.hop_length * sr / d.sr)))
            return StftConfig(n_fft, hop, d.window)
        # Unsupervised: the working grid's window in seconds at the input's rate (an FFT size
        # that is fast, < 1 % longer) and its hop in seconds, so the working grid reads it
        # with the least interpolation (none at 22.05 and 44.1 kHz).
        n_ref, hop_ref = self._working_stft()
        rate = c.stft_rate or sr
        if sr == rate:
            return StftConfig(n_ref, hop_ref, c.window)
        n_fft = max(16, next_fast_len(2 * round(n_ref * sr / rate / 2), real=True))
        n_fft += n_fft % 2
        return StftConfig(n_fft, max(1, round(hop_ref * sr / rate)), c.window)

    def _working_stft(self) -> tuple[int, int]:
        """Unsupervised: (n_fft, hop) of the working grid, samples at ``stft_rate``."""
        c = self.config
        n_fft = c.n_fft or _REFERENCE_N_FFT
        return n_fft, c.hop_length or n_fft // 4

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

    def estimate(self, spec: np.ndarray, sr: int, working_audio: np.ndarray | None = None) -> dict[str, np.ndarray]:
        cfg = self.stft_config_for(sr)
        V = np.abs(spec).mean(axis=0)
        if self.dictionary is not None:
            estimates = self._supervised_estimates(V, sr, cfg)
        else:
            estimates = self._unsupervised_estimates(V, sr, cfg, working_audio)
        return {s: estimates[s] for s in self.stem_names}

    def _fit_bins(self, V, sr, cfg) -> int:
        """Number of bins fitted: those up to ``fit_max_freq`` (at least 2, all if 0)."""
        F = V.shape[0]
        if not self.config.fit_max_freq:
            return F
        freqs = np.arange(F) * sr / cfg.n_fft
        return int(min(F, max(2, np.searchsorted(freqs, self.config.fit_max_freq, side="right"))))

    def separate(self, audio, sr, *, analysis=None, **inputs):
        if self._analyses_at_stft_rate(sr):
            inputs["working_audio"] = resample(np.atleast_2d(np.asarray(audio, np.float32)), sr, self.config.stft_rate)
        return super().separate(audio, sr, analysis=analysis, **inputs)

    def _analyses_at_stft_rate(self, sr: int) -> bool:
        """Unsupervised, at a rate whose STFT is not the working grid (48 kHz, 16 kHz ...)
        while the fitted band lies below ``stft_rate``'s Nyquist frequency (the defaults):
        the factorisation reads the audio resampled to ``stft_rate``, which is the working
        grid exactly, rather than interpolating the input's own STFT (whose window is up to
        1 % longer: enough to move 48 kHz copies' shares by up to 0.04 on training loops)."""
        c = self.config
        if self.dictionary is not None or not c.stft_rate or sr == c.stft_rate:
            return False
        if not c.fit_max_freq or c.fit_max_freq > c.stft_rate / 2:
            return False
        n_ref, hop_ref = self._working_stft()
        cfg = self.stft_config_for(sr)
        return cfg.n_fft * c.stft_rate != n_ref * sr or cfg.hop_length * c.stft_rate != hop_ref * sr

    def _on_working_grid(self, V, sr, cfg, working_audio=None) -> tuple[WorkingGrid, np.ndarray]:
        """The working grid of this input and the magnitudes on it: read from
        ``working_audio`` (the audio at ``stft_rate``) when given, else interpolated from ``V``."""
        c = self.config
        n_ref, hop_ref = self._working_stft()
        rate = c.stft_rate or sr
        V_rate = None
        if working_audio is not None:
            V_rate = np.abs(stft(working_audio, n_ref, hop_ref, c.window)).mean(axis=0)
        grid = WorkingGrid.for_input(
            sr, cfg.n_fft, cfg.hop_length, V.shape[1], max_freq=c.fit_max_freq or sr / 2,
            bin_hz=rate / n_ref, frame_s=hop_ref / rate,
            n_working_frames=None if V_rate is None else V_rate.shape[1],
        )
        V_work = grid.to_working(V) if V_rate is None else np.ascontiguousarray(V_rate[: grid.n_working_bins])
        return grid, V_work

    def _unsupervised_estimates(self, V, sr, cfg, working_audio=None) -> dict[str, np.ndarray]:
        c = self.config
        names = self.stem_names
        grid, V_work = self._on_working_grid(V, sr, cfg, working_audio)
        res = nmf(
            V_work, c.n_components, beta=self.beta, n_iter=c.n_iter or 100, tol=c.tol, seed=c.seed,
            check_every=50,  # 100 iterations rarely meet tol: fewer (costly, KL) checks
        )
        periodic = c.grouping == "repetition" and c.repetition_split == "periodic"
        parts = self._periodic_parts(V_work, res.W, res.H, c.stft_rate or sr) if periodic else None
        if parts is not None:
            H_parts = [grid.activations_to_input(h) for h in parts]
            W = self._full_band_templates(grid.templates_to_input(res.W), V[grid.n_input_bins :], sum(H_parts))
            return {s: W @ h for s, h in zip(names, H_parts)}
        H = grid.activations_to_input(res.H)
        W = self._full_band_templates(grid.templates_to_input(res.W), V[grid.n_input_bins :], H)
        if c.grouping == "repetition":  # whole components, judged on the working grid
            n_work, hop_work = self._working_stft()
            labels = group_components(
                res.W, res.H, "repetition", 2, V=V_work, sr=c.stft_rate or sr, n_fft=n_work,
                hop_length=hop_work, repetition_threshold=c.repetition_threshold,
            )
        else:  # flatness and centroid of the full-band templates
            labels = group_components(W, H, c.grouping, len(names), sr=sr, n_fft=cfg.n_fft)
        return {s: W[:, labels == i] @ H[labels == i] for i, s in enumerate(names)}

    def _periodic_parts(self, V_work, W, H, rate) -> list[np.ndarray] | None:
        """[H_periodic, H_free] on the working grid (samples counted at ``rate``), or None
        when no period is found."""
        c = self.config
        hop_work = self._working_stft()[1]
        period = fractional_loop_period(V_work, rate, hop_work)
        if period is None:
            return None
        free_penalty, periodic_penalty = repetition_penalties(
            repetition_scores(H, int(np.floor(period + 0.5))), c.repetition_threshold, c.repetition_width
        )
        parts = split_periodic(
            V_work, W, H, period, free_penalty=free_penalty, periodic_penalty=periodic_penalty,
            n_iter=c.split_iter,
        )
        # Music that does not repeat (a chorale) leaves the periodic part all but empty (its
        # squared soft mask then puts the stem 60 dB or more down): the whole components' rule
        # then gives the repeating stem the component nearest to repeating, so that no stem of
        # a sounding mixture is silent.
        totals = np.array([float(p.sum(dtype=np.float64)) for p in parts])
        if totals.sum() > 0 and totals.min() < _EMPTY_PART * totals.sum():
            return None
        return list(parts)

    def _full_band_templates(self, W_fit, V_high, H) -> np.ndarray:
        """Templates over every bin: the fitted band's, plus templates above it learnt with
        ``high_band_iter`` dictionary-only updates, the activations ``H`` fixed."""
        c = self.config
        if not V_high.shape[0]:
            return W_fit
        V_high = np.ascontiguousarray(V_high)
        W_high = np.full((V_high.shape[0], W_fit.shape[1]), 1.0 / (W_fit.shape[0] + V_high.shape[0]), dtype=W_fit.dtype)
        if c.high_band_iter:
            W_high = nmf(
                V_high.T, W=H.T, H=W_high.T, beta=self.beta, n_iter=c.high_band_iter,
                tol=0.0, update_W=False, check_every=0,
            ).H.T
        return np.concatenate([W_fit, W_high.astype(W_fit.dtype)])

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
