"""Where a unit's stems go: one write path for whole and streamed tracks.

A :class:`StemSink` takes the unit's stems block by block -- a track separated whole is one
block -- and for each block checks the operator's output, feeds the feature extractor, writes
the stem files and sums the levels; :meth:`StemSink.commit` then turns the sums into the
unit's ok rows and commits them (:func:`pipelines.units.commit`)::

    with StemSink(unit, job, output, stem_names, sr, channels, tags=tags) as sink:
        for stems in blocks:
            sink.write(stems)      # checked, then added (a checked whole track: sink.add)
    records = sink.commit(run_id=..., version=..., elapsed=...)

Streamed stems are written through :func:`sepops.stream.open_writer` (each file appears whole
when the sink closes); a whole track's stems through :func:`sepops.save_audio`, which also
writes Opus. Nothing here imports Beam.
"""
from __future__ import annotations

import contextlib
import logging
import math
from typing import Any, Self

import numpy as np

from sepops import save_audio
from sepops.audio import output_rate
from sepops.tags import TrackTags

from .config import JobConfig
from .records import StemRecord, Unit, feature_rows, utc_now
from .tables import STATUS_OK
from .units import UnitCancelled, UnitFailed, WriteGuard, commit, guarded, unit_stem_uri

__all__ = ["StemSink", "checked_stems", "peak_of", "sum_of_squares"]

_LOG = logging.getLogger(__name__)
_DB_FLOOR = -120.0
#: A stem quieter than this (RMS, dBFS) beside one louder than ``_AUDIBLE_DB`` is flagged:
#: the operator put nothing in it (e.g. a grouping that gave it no component).
_SILENT_DB = -90.0
_AUDIBLE_DB = -60.0


class StemSink:
    """A unit's stem files, feature extractor and level sums, fed block by block.

    Parameters
    ----------
    stem_names : list of str
        The stems every block must hold (for a whole track, the ones its operator returned).
    whole : bool
        The track comes as one block: its stems are written with ``save_audio`` (any
        format, Opus too) instead of block writers.
    """

    def __init__(self, unit: Unit, job: JobConfig, output: str, stem_names: list[str], sr: int, channels: int, *,
                 tags: TrackTags | None = None, guard: WriteGuard | None = None, whole: bool = False):
        self.unit, self.job, self.sr, self.channels = unit, job, sr, channels
        self.tags, self.guard, self.whole = tags, guard, whole
        self.uris = {name: unit_stem_uri(unit, job, output, name) for name in stem_names}
        self.output = output
        self.energy = dict.fromkeys(self.uris, 0.0)
        self.peak = dict.fromkeys(self.uris, 0.0)
        self.frames = 0
        self.extractor = _feature_extractor(job, list(self.uris), sr, channels)
        self._writers = contextlib.ExitStack()
        self._open: dict[str, Any] = {}

    def __enter__(self) -> Self:
        if not self.whole:
            from sepops.stream import open_writer

            settings = self.job.audio
            self._open = {
                name: self._writers.enter_context(open_writer(
                    uri, self.sr, self.channels, format=settings.format, subtype=settings.encoder_subtype,
                    commit_context=lambda uri=uri: guarded(self.guard, uri),
                ))
                for name, uri in self.uris.items()
            }
        return self

    def __exit__(self, *exc) -> bool | None:
        return self._writers.__exit__(*exc)  # block writers commit their files, or leave nothing

    def write(self, stems: Any) -> None:
        """One block of the operator's output, as it gave it: checked (every stem, shaped
        (channels, samples) like the first), then :meth:`add`-ed."""
        if self.guard is not None:
            self.guard.check()
        n = next(iter(stems.values())).shape[1]
        stems = checked_stems(stems, (self.channels, n), self.tags)
        if set(stems) != set(self.uris):
            raise UnitFailed("invalid_output", f"stems {sorted(stems)}, expected {sorted(self.uris)}", tags=self.tags)
        self.add(stems)

    def add(self, stems: dict[str, np.ndarray]) -> None:
        """One block of every stem, already :func:`checked_stems`: fed to the feature
        extractor, written and summed."""
        n = next(iter(stems.values())).shape[1]
        if self.extractor is not None:
            self.extractor.add(stems)
        for name, block in stems.items():
            self._write_block(name, block)
            self.energy[name] += sum_of_squares(block)
            self.peak[name] = max(self.peak[name], peak_of(block))
        self.frames += n

    def _write_block(self, name: str, block: np.ndarray) -> None:
        if not self.whole:
            self._open[name].write(block)
            return
        uri, settings = self.uris[name], self.job.audio
        try:
            with guarded(self.guard, uri):
                save_audio(uri, block, self.sr, format=settings.format, subtype=settings.encoder_subtype)
        except UnitCancelled:
            raise
        except Exception as exc:
            raise UnitFailed("write_error", f"{uri}: {type(exc).__name__}: {exc}", tags=self.tags) from exc

    def commit(self, *, run_id: str, version: str, elapsed: float, feature_rows_out: list | None = None) -> list[StemRecord]:
        """The unit's ok rows from the sums, committed with its feature rows (appended to
        ``feature_rows_out``); ``PartNotWritten`` when storage refused the part."""
        records = self._ok_records(run_id=run_id, version=version, elapsed=elapsed)
        commit(self.unit, self.output, records, self.guard, self._feature_rows(run_id), feature_rows_out)
        return records

    def _ok_records(self, *, run_id: str, version: str, elapsed: float) -> list[StemRecord]:
        """One ok row per stem from its level sums (sum of squares, peak)."""
        energy, frames, channels, sr = self.energy, self.frames, self.channels, self.sr
        total, now = sum(energy.values()), utc_now()
        levels = {name: _level_db(math.sqrt(energy[name] / max(frames * channels, 1))) for name in self.uris}
        return [
            self.unit.record(
                STATUS_OK, run_id=run_id, version=version, created_at=now, tags=self.tags,
                stem=name,
                stem_uri=uri,
                sample_rate=output_rate(self.job.audio.format, sr),
                channels=int(channels),
                duration_s=frames / sr,
                stem_rms_db=levels[name],
                stem_peak_db=_level_db(self.peak[name]),
                energy_share=energy[name] / total if total > 0 else None,
                warning=_silence_warning(name, levels),
                processing_s=elapsed,
            )
            for name, uri in self.uris.items()
        ]

    def _feature_rows(self, run_id: str) -> list[dict] | None:
        if self.extractor is None:
            return None
        unit = self.unit
        try:
            features = self.extractor.finish()
        except Exception as exc:  # noqa: BLE001 - the stems are written and fine: say so in the rows
            _LOG.exception("features of %s / %s", unit.track_id, unit.label)
            features = {name: {"feature_errors": f"features: {type(exc).__name__}: {exc}"} for name in self.uris}
        return feature_rows(
            features, track_id=unit.track_id, label=unit.label, operator=unit.operator,
            source_uri=unit.source_uri, stem_uris=self.uris, sample_rate=self.sr, digest=self.job.features.digest(),
            run_id=run_id, created_at=utc_now(),
        )


def _feature_extractor(job: JobConfig, stem_names: list[str], sr: int, channels: int):
    """The unit's :class:`sepops.features.FeatureExtractor`, or ``None`` when the job asks for no feature."""
    if not job.features.enabled:
        return None
    from sepops.features import FeatureExtractor

    return FeatureExtractor(stem_names, sr, channels, job.features)


def checked_stems(stems: Any, shape: tuple[int, ...], tags: TrackTags | None) -> dict[str, np.ndarray]:
    """The operator's stems as float32 arrays shaped like the mixture, all samples finite."""
    if not isinstance(stems, dict) or not stems:
        raise UnitFailed("invalid_output", f"operator returned {type(stems).__name__}, not a dict of stems", tags=tags)
    out = {}
    for name, stem in stems.items():
        stem = np.atleast_2d(np.asarray(stem, dtype=np.float32))
        if stem.shape != tuple(shape):
            raise UnitFailed(
                "invalid_output", f"stem {name!r} has shape {stem.shape}, mixture {tuple(shape)}", tags=tags
            )
        if not np.isfinite(stem).all():
            raise UnitFailed("invalid_output", f"stem {name!r} holds NaN or infinite samples", tags=tags)
        out[name] = stem
    return out


def sum_of_squares(a: np.ndarray, chunk: int = 1 << 20) -> float:
    """Sum of squares in float64, a chunk at a time: no float64 copy of a whole stem (twice
    its size, 127 MB for 3 minutes of stereo)."""
    # np.sum's pairwise summation, not a BLAS dot: the same sums in every process (a dot's
    # last bits depend on the buffer's alignment), so every runner writes the same rows.
    flat = a.reshape(-1)
    return float(sum(np.sum(np.square(flat[i:i + chunk], dtype=np.float64)) for i in range(0, flat.size, chunk)))


def peak_of(a: np.ndarray) -> float:
    """Largest absolute sample, without an ``abs`` copy of the stem."""
    return float(max(a.max(), -a.min())) if a.size else 0.0


def _level_db(value: float) -> float:
    return max(_DB_FLOOR, 20.0 * math.log10(value)) if value > 0 else _DB_FLOOR


def _silence_warning(name: str, levels: dict[str, float]) -> str | None:
    """The row's warning when this stem is silent and another stem of the unit is not, or,
    on every row of the unit, when all are (a silent input: its stems are written, silent)."""
    if max(levels.values()) <= _SILENT_DB:
        if name == min(levels):  # logged once per unit
            _LOG.warning("silent input: every stem is at or below %.0f dBFS RMS", _SILENT_DB)
        return f"silent input: every stem is at or below {_SILENT_DB:.0f} dBFS RMS (the track holds no audible signal)"
    others = [level for other, level in levels.items() if other != name]
    if levels[name] <= _SILENT_DB and others and max(others) > _AUDIBLE_DB:
        _LOG.warning("stem %r is silent (%.0f dBFS) while the others are not", name, levels[name])
        return f"silent stem: {levels[name]:.0f} dBFS RMS while the loudest other stem is at {max(others):.0f} dBFS"
    return None
