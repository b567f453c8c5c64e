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
from .pitch import CHROMA_HOP, CHROMA_SR, beat_chroma, chroma_frames, f0_contour
from .rhythm import HOP, ONSET_SR, onset_envelope, onset_times, tempo_and_beats

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
        "lead", "vocals", "voice", "melody", "foreground", "soprano", "alto", "tenor", "bass",
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
    """What one stem's features keep between blocks: small series, never audio."""

    def __init__(self, sr: int, channels: int):
        self.frame = max(1, round(FRAME_S * sr))
        self.carry = np.zeros((channels, 0), dtype=np.float32)  # the partial envelope frame
        self.powers: list[np.ndarray] = []
        self.envelope = _Series(HOP / ONSET_SR)  # onset strength: 100 values a second
        self.chroma = _Series(CHROMA_HOP / CHROMA_SR)  # 43 x 12 values a second
        self.f0: _Series | None = None
        self.tail = np.zeros(0, dtype=np.float32)  # the mono audio before the next block
        self.meter: LoudnessMeter | None = None
        self.errors: dict[str, str] = {}
        self.seconds = 0.0


class _Series:
    """A frame series on one global time grid (frame ``k`` at ``k * hop_s``) built from
    blocks: each block's frames (its own frame ``i`` at ``offset + i * hop_s``) are
    interpolated onto the grid points inside the block, so no block edge shifts the grid.

    A block's frames within ``_EDGE_S`` of its end are held back: the next block, analysed
    with ``_CONTEXT_S`` of the audio before it, gives them with both sides of the edge in
    view (the last block's are used as they are).
    """

    def __init__(self, hop_s: float):
        self.hop_s = hop_s
        self.parts: list[np.ndarray] = []
        self.next = 0  # the next grid frame to fill
        self._pending = None  # the last block, whose end is held back

    def add(self, values: np.ndarray, offset_s: float, duration_s: float, *, nearest: bool = False) -> None:
        """Add a block's frames; ``offset_s``/``duration_s`` span the analysed audio (context included)."""
        self._pending = (np.atleast_2d(values), offset_s, nearest)
        self._fill(offset_s + duration_s - _EDGE_S)
        self._end_s = offset_s + duration_s

    def _fill(self, until_s: float) -> None:
        values, offset_s, nearest = self._pending
        end = int(np.ceil(until_s / self.hop_s - 1e-9))
        if end <= self.next:
            return
        local = np.clip(np.arange(self.next, end) - offset_s / self.hop_s, 0, values.shape[1] - 1)
        if nearest:
            out = values[:, np.round(local).astype(int)]
        else:
            out = np.stack([np.interp(local, np.arange(values.shape[1]), row) for row in values])
        self.parts.append(out)
        self.next = end

    def values(self) -> np.ndarray:
        if self._pending is not None:
            self._fill(self._end_s)
            self._pending = None
        return np.concatenate(self.parts, axis=1) if self.parts else np.zeros((1, 0))


#: Frame series hold back this much of each block's end, and analyse each block with this
#: much audio before it (more than the hold-back plus half the longest window, chroma's 186 ms).
_EDGE_S = 0.1
_CONTEXT_S = 0.3
#: Envelope frames measured at a time (100: a second).
_CHUNK_FRAMES = 100


def _aligned(audio: np.ndarray, audio_start_s: float, offset_s: float, hop_s: float, sr: int):
    """The audio a frame series analyses for the block at ``offset_s``: from ``_CONTEXT_S``
    before it, rounded down to the series' grid (``audio`` starts at ``audio_start_s``).

    Returns
    -------
    mono, start_s, span_s
    """
    start_s = max(0.0, np.floor((offset_s - _CONTEXT_S) / hop_s) * hop_s)
    i = max(0, round((start_s - audio_start_s) * sr))
    return audio[i:], audio_start_s + i / sr, (len(audio) - i) / sr


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
    ``add`` reduces each block to small series (the 10 ms energy envelope, the onset
    strength, chroma frames, the f0 contour, the loudness meter's 100 ms steps) on one time
    grid across blocks, each block analysed with 0.3 s of the audio before it and from a
    start on the series' grid; ``finish`` finds segments, onsets, beats and chroma per beat
    on the whole series. In blocks (a long track) activity, loudness, tempo, beats and the
    f0 contour come out as for the whole track (tested), chroma within 0.01; onsets differ
    only where librosa's dB floor, 80 dB under the loudest frame of what it analyses, is a
    block's rather than the track's.
    """

    def __init__(self, stem_names: list[str], sr: int, channels: int, settings: FeatureSettings):
        self.settings, self.sr, self.channels = settings, sr, channels
        self._stems = {name: _StemState(sr, channels) for name in stem_names}
        self._offset = 0  # samples before the current block
        #: The audio kept before the next block: the context and one frame of each series.
        self._tail_s = _CONTEXT_S + max(settings.pitch_hop_s, CHROMA_HOP / CHROMA_SR) + 0.05
        rhythm = [n for n in stem_names if "*" in settings.rhythm_stems or n in settings.rhythm_stems]
        #: The stem whose beats time the chroma of the others (the first rhythm stem).
        self._beat_source = rhythm[0] if rhythm else None

    def _needs_envelope(self, name: str) -> bool:
        s = self.settings
        beats_for_chroma = s.chroma and any(s.applies("chroma", n) for n in self._stems) and (
            name == self._beat_source or (self._beat_source is None and s.applies("chroma", name))
        )
        return s.onsets or s.applies("rhythm", name) or beats_for_chroma

    def add(self, stems: dict[str, np.ndarray]) -> None:
        """Analyse the next block of every stem, each ``(channels, samples)``, from the same time."""
        offset_s = self._offset / self.sr
        for name, block in stems.items():
            state = self._stems[name]
            started = time.perf_counter()
            block = np.atleast_2d(block)
            self._guard(state, "activity", self._activity, state, block)
            if self.settings.loudness:
                self._guard(state, "loudness", self._loudness, state, block)
            envelope = self._needs_envelope(name)
            if not (envelope or self.settings.applies("chroma", name) or self.settings.applies("pitch", name)):
                state.seconds += time.perf_counter() - started
                continue  # no frame series: activity and loudness need no mono copy
            # The frame series see the block with the audio just before it (block edges),
            # from a start on their own time grid (no interpolation between frames).
            audio = np.concatenate([state.tail, block.mean(axis=0)])
            audio_start_s = offset_s - len(state.tail) / self.sr
            state.tail = audio[-int(self._tail_s * self.sr):].copy()  # not a view: the block must go

            if envelope:
                feature = "onsets" if self.settings.onsets else "rhythm"
                self._guard(state, feature, self._series, state.envelope, onset_envelope,
                            *_aligned(audio, audio_start_s, offset_s, state.envelope.hop_s, self.sr))
            if self.settings.applies("chroma", name):
                self._guard(state, "chroma", self._series, state.chroma, chroma_frames,
                            *_aligned(audio, audio_start_s, offset_s, state.chroma.hop_s, self.sr))
            if self.settings.applies("pitch", name):
                self._guard(state, "pitch", self._pitch, state,
                            *_aligned(audio, audio_start_s, offset_s, self.settings.pitch_hop_s, self.sr))
            state.seconds += time.perf_counter() - started
        self._offset += next(iter(stems.values())).shape[-1]

    def _series(self, series: _Series, frames_of, mono: np.ndarray, start_s: float, span_s: float) -> None:
        series.add(frames_of(mono, self.sr), start_s, span_s)

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
        frame = state.frame
        if state.carry.shape[1]:  # complete the frame the last block left open
            head = np.concatenate([state.carry, block[:, : frame - state.carry.shape[1]]], axis=1)
            block = block[:, frame - state.carry.shape[1] :]
            if head.shape[1] < frame:
                state.carry = head
                return
            state.powers.append(frame_power(head, frame))
        n = (block.shape[1] // frame) * frame
        # In pieces of about a second: no float64 copy of a whole block (a long track's
        # blocks would fragment the heap).
        step = frame * _CHUNK_FRAMES
        state.powers += [frame_power(block[:, i : min(n, i + step)], frame) for i in range(0, n, step)]
        state.carry = block[:, n:].copy()

    def _loudness(self, state: _StemState, block: np.ndarray) -> None:
        if state.meter is None:
            state.meter = LoudnessMeter(self.sr, self.channels)
        state.meter.add(block)

    def _pitch(self, state: _StemState, mono: np.ndarray, offset_s: float, duration_s: float) -> None:
        s = self.settings
        if state.f0 is None:
            state.f0 = _Series(s.pitch_hop_s)
        f0 = f0_contour(mono, self.sr, fmin=s.pitch_fmin_hz, fmax=s.pitch_fmax_hz, hop_s=s.pitch_hop_s)
        state.f0.add(f0, offset_s, duration_s, nearest=True)  # NaN (unvoiced) must not blend

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
        beats: dict[str, np.ndarray | None] = {}
        order = sorted(self._stems, key=lambda n: n != self._beat_source)  # the beat source first
        out = {}
        for name in order:
            out[name] = self._finish_stem(name, self._stems[name], duration_s, beats)
        return {name: out[name] for name in self._stems}

    def _beats(self, name: str, state: _StemState, beats: dict) -> tuple[float | None, np.ndarray] | None:
        """The stem's (tempo, beats) from its whole onset strength, once."""
        if name not in beats:
            envelope = state.envelope.values()[0]
            beats[name] = self._guard(state, "rhythm", tempo_and_beats, envelope) if envelope.size else None
        return beats[name]

    def _finish_stem(self, name: str, state: _StemState, duration_s: float, beats: dict) -> dict[str, Any]:
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
            times = self._guard(state, "onsets", onset_times, state.envelope.values()[0])
            out["onset_times_s"] = None if times is None else _rounded(times)
        if s.applies("rhythm", name) and "rhythm" not in state.errors:
            found = self._beats(name, state, beats)
            if found is not None:
                out["tempo_bpm"], out["beat_times_s"] = found[0], _rounded(found[1])
        if s.applies("pitch", name) and "pitch" not in state.errors and state.f0 is not None:
            f0 = state.f0.values()[0]
            voiced = np.isfinite(f0)
            out["f0_hop_s"] = s.pitch_hop_s
            out["f0_hz"] = [round(float(x), 2) if v else None for x, v in zip(f0, voiced)]
            out["voiced_fraction"] = float(voiced.mean()) if len(f0) else 0.0
            out["f0_median_hz"] = float(np.median(f0[voiced])) if voiced.any() else None
        if s.applies("chroma", name) and "chroma" not in state.errors and state.chroma.parts:
            source = self._beat_source if self._beat_source in self._stems else name
            found = self._beats(source, self._stems[source], beats)
            if found is not None:
                starts, chroma = beat_chroma(state.chroma.values(), state.chroma.hop_s, found[1])
                out["chroma_times_s"] = _rounded(starts)
                out["chroma_per_beat"] = np.round(chroma, 4).tolist()
        if s.loudness and "loudness" not in state.errors and state.meter is not None:
            out["loudness_lufs"] = self._guard(state, "loudness", state.meter.lufs)
        out["features_s"] = state.seconds + time.perf_counter() - started
        out["feature_errors"] = "; ".join(f"{k}: {v}" for k, v in sorted(state.errors.items())) or None
        return out


def _rounded(times: np.ndarray) -> list[float]:
    """Times rounded to 0.1 ms (the table stores what a reader can use)."""
    return [round(float(t), 4) for t in times]


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
