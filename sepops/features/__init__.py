"""Per-stem features for the jobs that read stems next (transcription, lyrics alignment).

>>> from sepops.features import FeatureSettings, extract_features
>>> features = extract_features(stems, sr, FeatureSettings(pitch=True))
>>> features["lead"]["f0_median_hz"], features["lead"]["activity_segments"][:2]

One module per concept: :mod:`.activity` (where a stem is audible), :mod:`.rhythm` (onsets,
tempo, beats), :mod:`.pitch` (f0 contour, chroma per beat), :mod:`.loudness` (BS.1770 LUFS).
:class:`FeatureExtractor` runs the ones a :class:`FeatureSettings` asks for on a unit's
stems, whole (one call of ``add``) or block by block (a long track), so a stem's features are
computed from the array in memory before it is written: no second decode.

Which stems get which feature follows their names: tempo and beats on rhythm stems
(percussive, drums, accompaniment...), f0 on single-voice stems (lead, vocals, soprano...),
chroma per beat on harmonic ones; ``"*"`` in a list means every stem. Activity, onsets and
loudness apply to every stem.
"""
from __future__ import annotations

import hashlib
import json
import time
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from .activity import FRAME_S, activity_segments, frame_power, power_db
from .loudness import LoudnessMeter, integrated_loudness
from .pitch import beat_chroma, f0_contour
from .rhythm import onset_envelope, onset_times, tempo_and_beats

__all__ = [
    "FeatureExtractor",
    "FeatureSettings",
    "LoudnessMeter",
    "activity_segments",
    "beat_chroma",
    "extract_features",
    "f0_contour",
    "integrated_loudness",
    "onset_times",
    "tempo_and_beats",
]

#: Onsets closer than this across a block boundary are one onset found twice.
_ONSET_MERGE_S = 0.05


@dataclass(frozen=True)
class FeatureSettings:
    """Which features to compute, and how (the catalog job's ``features:`` section).

    Defaults are the cheap ones (activity, onsets, loudness: a few percent of a separation);
    ``rhythm``, ``chroma`` and ``pitch`` (pyin, the costliest) are opt-in.
    """

    #: Activity segments and the active fraction, from the 10 ms energy envelope.
    activity: bool = True
    #: A frame is active above this many dB below the stem's loudest frame ...
    activity_threshold_db: float = -35.0
    #: ... and above this absolute level, dBFS.
    activity_floor_db: float = -60.0
    activity_min_length_s: float = 0.1
    #: Shorter gaps inside a segment are closed.
    activity_min_gap_s: float = 0.25
    #: Onset times on every stem.
    onsets: bool = True
    #: Integrated loudness (LUFS, ITU-R BS.1770-4) on every stem.
    loudness: bool = True
    #: Tempo and beat times, on the ``rhythm_stems``.
    rhythm: bool = False
    rhythm_stems: tuple[str, ...] = ("percussive", "drums", "accompaniment", "background", "repeating")
    #: f0 contour, median f0 and voiced fraction (librosa.pyin), on the ``pitch_stems``.
    pitch: bool = False
    pitch_stems: tuple[str, ...] = (
        "lead", "vocals", "voice", "melody", "foreground", "non_repeating", "soprano", "alto", "tenor", "bass",
    )
    pitch_fmin_hz: float = 65.0
    pitch_fmax_hz: float = 1047.0
    #: The f0 contour's time step, seconds.
    pitch_hop_s: float = 0.02
    #: Chroma per beat on the ``chroma_stems`` (beats of the unit's rhythm stem when it has one).
    chroma: bool = False
    chroma_stems: tuple[str, ...] = ("harmonic", "accompaniment", "background", "other", "piano", "guitar")

    def __post_init__(self):
        if self.activity_threshold_db >= 0:
            raise ValueError(f"activity_threshold_db must be < 0 (dB below the loudest frame), got {self.activity_threshold_db}")
        if self.activity_min_length_s < 0 or self.activity_min_gap_s < 0:
            raise ValueError("activity_min_length_s and activity_min_gap_s must be >= 0")
        if not 0 < self.pitch_fmin_hz < self.pitch_fmax_hz <= 4000:
            raise ValueError(f"need 0 < pitch_fmin_hz < pitch_fmax_hz <= 4000, got {self.pitch_fmin_hz}, {self.pitch_fmax_hz}")
        if not 0.005 <= self.pitch_hop_s <= 1.0:
            raise ValueError(f"pitch_hop_s must be in [0.005, 1], got {self.pitch_hop_s}")

    @property
    def enabled(self) -> bool:
        """Whether any feature is asked for."""
        return any((self.activity, self.onsets, self.loudness, self.rhythm, self.pitch, self.chroma))

    def applies(self, feature: str, stem: str) -> bool:
        """Whether ``feature`` (a switch's name) is computed on the stem named ``stem``."""
        if not getattr(self, feature):
            return False
        stems = getattr(self, f"{feature}_stems", ("*",))
        return "*" in stems or stem in stems

    def digest(self) -> str:
        """Fingerprint of these settings (a re-run recomputes features when it changes)."""
        return hashlib.sha256(json.dumps(asdict(self), sort_keys=True, default=list).encode()).hexdigest()[:16]


class _StemState:
    """What one stem's features need to keep between blocks (small: no audio)."""

    def __init__(self, sr: int, channels: int):
        self.frame = max(1, int(round(FRAME_S * sr)))
        self.carry = np.zeros((channels, 0), dtype=np.float32)  # the partial envelope frame
        self.powers: list[np.ndarray] = []
        self.onsets: list[np.ndarray] = []
        self.tempi: list[tuple[float, float]] = []  # (tempo, block seconds)
        self.beats: list[np.ndarray] = []
        self.f0: list[np.ndarray] = []
        self.chroma_starts: list[np.ndarray] = []
        self.chroma: list[np.ndarray] = []
        self.first_block: np.ndarray | None = None
        self.meter: LoudnessMeter | None = None
        self.errors: dict[str, str] = {}
        self.seconds = 0.0


class FeatureExtractor:
    """The features of one unit's stems, given whole or block by block.

    Parameters
    ----------
    stem_names : list of str
    sr : int
    channels : int
    settings : FeatureSettings

    Notes
    -----
    In blocks (a long track), activity and loudness are exact (the envelope's frames and
    the loudness meter's steps carry over block edges); onsets, beats, f0 and chroma are
    computed per block and joined (an onset found on both sides of an edge counts once,
    the tempo is the median of the blocks'), which differs from a whole-track analysis only
    within about a second of each edge.
    """

    def __init__(self, stem_names: list[str], sr: int, channels: int, settings: FeatureSettings):
        self.settings, self.sr, self.channels = settings, sr, channels
        self._stems = {name: _StemState(sr, channels) for name in stem_names}
        self._offset = 0  # samples before the current block
        self._blocks = 0
        rhythm = [n for n in stem_names if settings.rhythm_stems and ("*" in settings.rhythm_stems or n in settings.rhythm_stems)]
        #: The stem whose beats time the chroma of the others (the first rhythm stem).
        self._beat_source = rhythm[0] if rhythm else None

    def add(self, stems: dict[str, np.ndarray]) -> None:
        """Analyse the next block of every stem, each ``(channels, samples)``, from the same time."""
        offset_s = self._offset / self.sr
        self._blocks += 1
        envelopes: dict[str, np.ndarray] = {}
        beats: dict[str, np.ndarray] = {}
        order = sorted(stems, key=lambda n: n != self._beat_source)  # the beat source first
        for name in order:
            block, state = stems[name], self._stems[name]
            started = time.perf_counter()
            mono = np.mean(block, axis=0) if block.ndim == 2 else block
            self._guard(state, "activity", self._activity, state, block)
            self._guard(state, "loudness", self._loudness, state, block)
            if self.settings.onsets or self.settings.applies("rhythm", name) or self.settings.applies("chroma", name):
                envelopes[name] = self._guard(state, "onsets", onset_envelope, mono, self.sr)
            if self.settings.onsets and envelopes.get(name) is not None:
                self._guard(state, "onsets", self._onsets, state, envelopes[name], offset_s)
            if self.settings.applies("rhythm", name) and envelopes.get(name) is not None:
                beats[name] = self._guard(state, "rhythm", self._rhythm, state, envelopes[name], offset_s, mono.shape[-1])
            if self.settings.applies("pitch", name):
                self._guard(state, "pitch", self._pitch, state, mono)
            if self.settings.applies("chroma", name):
                block_beats = beats.get(self._beat_source)
                if block_beats is None and envelopes.get(name) is not None:
                    block_beats = self._guard(state, "chroma", lambda e: tempo_and_beats(e, self.sr)[1], envelopes[name])
                if block_beats is not None:
                    self._guard(state, "chroma", self._chroma, state, mono, block_beats, offset_s)
            state.seconds += time.perf_counter() - started
        self._offset += next(iter(stems.values())).shape[-1]

    @staticmethod
    def _guard(state: _StemState, feature: str, fn, *args):
        """Run one feature; a failure is recorded for the row, never raised (the stem is fine)."""
        if feature in state.errors:
            return None
        try:
            return fn(*args)
        except Exception as exc:  # noqa: BLE001
            state.errors[feature] = f"{type(exc).__name__}: {exc}"
            return None

    def _activity(self, state: _StemState, block: np.ndarray) -> None:
        if not self.settings.activity:
            return
        x = np.concatenate([state.carry, np.atleast_2d(block)], axis=1)
        n = (x.shape[1] // state.frame) * state.frame
        state.powers.append(frame_power(x[:, :n], state.frame))
        state.carry = x[:, n:]

    def _loudness(self, state: _StemState, block: np.ndarray) -> None:
        if not self.settings.loudness:
            return
        if self._blocks == 1:
            state.first_block = block  # whole tracks are measured by pyloudnorm itself
            return
        if state.meter is None:
            state.meter = LoudnessMeter(self.sr, self.channels)
            state.meter.add(state.first_block)
            state.first_block = None
        state.meter.add(block)

    def _onsets(self, state: _StemState, envelope: np.ndarray, offset_s: float) -> None:
        times = onset_times(envelope, self.sr) + offset_s
        if state.onsets and len(state.onsets[-1]) and len(times):
            times = times[times > state.onsets[-1][-1] + _ONSET_MERGE_S]
        state.onsets.append(times)

    def _rhythm(self, state: _StemState, envelope: np.ndarray, offset_s: float, samples: int) -> np.ndarray:
        tempo, beats = tempo_and_beats(envelope, self.sr)
        if tempo is not None:
            state.tempi.append((tempo, samples / self.sr))
        if state.beats and len(state.beats[-1]) and len(beats):
            beats = beats[beats + offset_s > state.beats[-1][-1] + _ONSET_MERGE_S]
        state.beats.append(beats + offset_s)
        return beats

    def _pitch(self, state: _StemState, mono: np.ndarray) -> None:
        s = self.settings
        state.f0.append(f0_contour(mono, self.sr, fmin=s.pitch_fmin_hz, fmax=s.pitch_fmax_hz, hop_s=s.pitch_hop_s))

    def _chroma(self, state: _StemState, mono: np.ndarray, beats: np.ndarray, offset_s: float) -> None:
        starts, chroma = beat_chroma(mono, self.sr, beats)
        state.chroma_starts.append(starts + offset_s)
        state.chroma.append(chroma)

    def finish(self) -> dict[str, dict[str, Any]]:
        """Every stem's features as the features table's columns (``None`` where not computed).

        Returns
        -------
        dict
            stem -> {``duration_s``, ``active_fraction``, ``activity_segments`` (list of
            {start_s, end_s}), ``onset_times_s``, ``tempo_bpm``, ``beat_times_s``,
            ``f0_median_hz``, ``voiced_fraction``, ``f0_hop_s``, ``f0_hz`` (None = unvoiced),
            ``chroma_times_s``, ``chroma_per_beat``, ``loudness_lufs``, ``features_s``,
            ``feature_errors``}
        """
        duration_s = self._offset / self.sr
        return {name: self._finish_stem(name, state, duration_s) for name, state in self._stems.items()}

    def _finish_stem(self, name: str, state: _StemState, duration_s: float) -> dict[str, Any]:
        started = time.perf_counter()
        s = self.settings
        out: dict[str, Any] = dict.fromkeys((
            "active_fraction", "activity_segments", "onset_times_s", "tempo_bpm", "beat_times_s", "f0_median_hz",
            "voiced_fraction", "f0_hop_s", "f0_hz", "chroma_times_s", "chroma_per_beat", "loudness_lufs",
        ))
        out["duration_s"] = duration_s
        if s.activity and "activity" not in state.errors:
            powers = np.concatenate(state.powers) if state.powers else np.zeros(0)
            if state.carry.shape[1]:  # the last, partial frame
                powers = np.append(powers, np.mean(np.square(state.carry, dtype=np.float64)))
            segments, fraction = activity_segments(
                power_db(powers), state.frame / self.sr, threshold_db=s.activity_threshold_db,
                floor_db=s.activity_floor_db, min_length_s=s.activity_min_length_s,
                min_gap_s=s.activity_min_gap_s, duration_s=duration_s,
            )
            out["activity_segments"] = [{"start_s": a, "end_s": b} for a, b in segments]
            out["active_fraction"] = fraction
        if s.onsets and "onsets" not in state.errors:
            out["onset_times_s"] = _rounded(state.onsets)
        if s.applies("rhythm", name) and "rhythm" not in state.errors:
            out["beat_times_s"] = _rounded(state.beats)
            out["tempo_bpm"] = float(np.median([t for t, _ in state.tempi])) if state.tempi else None
        if s.applies("pitch", name) and "pitch" not in state.errors and state.f0:
            f0 = np.concatenate(state.f0)
            voiced = np.isfinite(f0)
            out["f0_hop_s"] = s.pitch_hop_s
            out["f0_hz"] = [None if not v else round(float(x), 2) for x, v in zip(f0, voiced)]
            out["voiced_fraction"] = float(voiced.mean()) if len(f0) else 0.0
            out["f0_median_hz"] = float(np.median(f0[voiced])) if voiced.any() else None
        if s.applies("chroma", name) and "chroma" not in state.errors and state.chroma:
            out["chroma_times_s"] = _rounded(state.chroma_starts)
            out["chroma_per_beat"] = np.round(np.concatenate(state.chroma), 4).tolist()
        if s.loudness and "loudness" not in state.errors:
            try:
                if state.meter is not None:
                    out["loudness_lufs"] = state.meter.lufs()
                elif state.first_block is not None:
                    out["loudness_lufs"] = integrated_loudness(state.first_block, self.sr)
            except Exception as exc:  # noqa: BLE001
                state.errors["loudness"] = f"{type(exc).__name__}: {exc}"
        state.first_block = None
        out["features_s"] = state.seconds + time.perf_counter() - started
        out["feature_errors"] = "; ".join(f"{k}: {v}" for k, v in sorted(state.errors.items())) or None
        return out


def _rounded(parts: list[np.ndarray]) -> list[float]:
    """Joined times, rounded to 0.1 ms (the table stores what a reader can use)."""
    return [round(float(t), 4) for t in (np.concatenate(parts) if parts else np.zeros(0))]


def extract_features(stems: dict[str, np.ndarray], sr: int, settings: FeatureSettings | None = None) -> dict[str, dict]:
    """The features of whole stems (one unit's: the chroma of a harmonic stem is timed by the
    beats of a rhythm stem among them).

    Parameters
    ----------
    stems : dict of str to np.ndarray, each shape (channels, samples)
    sr : int
    settings : FeatureSettings, optional
        Default: the cheap ones (activity, onsets, loudness).

    Returns
    -------
    dict
        stem -> columns, as :meth:`FeatureExtractor.finish`.
    """
    stems = {k: np.atleast_2d(v) for k, v in stems.items()}
    first = next(iter(stems.values()))
    extractor = FeatureExtractor(list(stems), sr, first.shape[0], settings or FeatureSettings())
    extractor.add(stems)
    return extractor.finish()
