"""The catalog job's transforms.

The graph is one linear chain, which every runner (DirectRunner in one or several processes,
DaskRunner, Dataflow) executes the same way::

    Create(tracks) -> Reshuffle -> ParDo(SeparateTrackFn)

- Only small ``Track`` records (an id and a URI) and small result dicts travel between
  stages; audio and spectrograms stay inside ``SeparateTrackFn.process``.
- ``Reshuffle`` spreads tracks over workers on Dataflow (it stops Create's single-worker
  stage from fusing with the separation); the DaskRunner turns it into a no-op and relies on
  ``--dask_npartitions`` instead (``run.py`` sets it).
- Each (track, operator) writes its stems and then its metadata part straight to storage
  from ``process``. Stems go to ``<output>/stems/<track_id>/<stem>.<ext>`` when the job's
  config lists one operator, ``<output>/stems/<track_id>/<label>/<stem>.<ext>`` when it
  lists several (``JobConfig.stems_by_label``). Nothing is emitted from ``finish_bundle`` (the DaskRunner drops such
  outputs) and no sink runs in the pipeline (the DaskRunner only runs the last branch of a
  graph); the driver consolidates the parts after the pipeline.
"""
from __future__ import annotations

import logging
import math
import threading
import time
import traceback
from collections.abc import Iterator
from typing import Any

import apache_beam as beam
import fsspec
import numpy as np
from apache_beam.metrics import Metrics

from sepops import Analysis, AudioError, Operator, get_operator, load_audio, save_audio

from . import sepflow_version
from .config import JobConfig, OperatorSpec
from .io import Track, join_uri, safe_path_component
from .metadata import (
    STATUS_ERROR,
    STATUS_OK,
    STATUS_SKIPPED,
    StemRecord,
    dead_letter_json,
    dead_letter_uri,
    part_uri,
    read_part,
    utc_now,
    write_part,
)

__all__ = ["SeparateCatalog", "SeparateTrackFn", "operator_builds", "operators_for", "stem_uri"]

_LOG = logging.getLogger(__name__)
_METRICS_NAMESPACE = "sepflow"
_DB_FLOOR = -120.0

# Operators are built once per worker process and job. A module-level cache (rather than
# DoFn.setup state) is what makes that true on Dask, where setup runs once per partition.
_OPERATORS: dict[str, dict[str, Operator]] = {}
_OPERATORS_LOCK = threading.Lock()
_BUILDS: dict[str, int] = {}


def operators_for(job: JobConfig) -> dict[str, Operator]:
    """This process's operators of ``job``, by label (built on first use)."""
    key = job.operators_key()
    with _OPERATORS_LOCK:
        if key not in _OPERATORS:
            _OPERATORS[key] = {s.label: get_operator(s.operator, **s.params) for s in job.operators}
            _BUILDS[key] = _BUILDS.get(key, 0) + 1
        return _OPERATORS[key]


def operator_builds() -> dict[str, int]:
    """How many times each job's operators were built in this process (for tests)."""
    return dict(_BUILDS)


def stem_uri(output: str, track_id: str, label: str, stem: str, extension: str, *, by_label: bool) -> str:
    """Where a stem goes: ``<output>/stems/<track_id>/<stem>.<ext>`` for a single-operator
    job, ``<output>/stems/<track_id>/<label>/<stem>.<ext>`` for a multi-operator one
    (``by_label``; ``JobConfig.stems_by_label`` decides)."""
    folder = [track_id, label] if by_label else [track_id]
    return join_uri(output, "stems", *folder, f"{safe_path_component(stem)}.{extension}")


def _level_db(value: float) -> float:
    return max(_DB_FLOOR, 20.0 * math.log10(value)) if value > 0 else _DB_FLOOR


class _UnitFailed(Exception):
    def __init__(self, error_type: str, message: str):
        super().__init__(message)
        self.error_type = error_type
        self.message = message


class SeparateTrackFn(beam.DoFn):
    """Decode one track once, run every operator of the job on it, write stems and metadata.

    Input: a ``Track``. Output: one small dict per (track, operator):
    ``{"track_id", "label", "status", "duration_s"}``.
    """

    def __init__(self, job: JobConfig, output: str, run_id: str, overwrite: bool = False):
        self.job = job
        self.output = output.rstrip("/")
        self.run_id = run_id
        self.overwrite = overwrite
        self.tracks_counter = Metrics.counter(_METRICS_NAMESPACE, "tracks")
        self.units_ok = Metrics.counter(_METRICS_NAMESPACE, "units_ok")
        self.units_error = Metrics.counter(_METRICS_NAMESPACE, "units_error")
        self.units_skipped = Metrics.counter(_METRICS_NAMESPACE, "units_skipped")
        self.audio_ms = Metrics.counter(_METRICS_NAMESPACE, "audio_ms")

    def setup(self):
        self._operators = operators_for(self.job)
        self._version = sepflow_version()

    # --- the element -----------------------------------------------------------------------
    def process(self, track: Track) -> Iterator[dict[str, Any]]:
        self.tracks_counter.inc()
        todo = []
        for spec in self.job.operators:
            if not self.overwrite and self._is_complete(track, spec):
                self.units_skipped.inc()
                yield {"track_id": track.track_id, "label": spec.label, "status": STATUS_SKIPPED}
            else:
                todo.append(spec)
        if not todo:
            return
        try:
            audio, sr = self._decode(track)
        except AudioError as exc:
            for spec in todo:
                yield self._fail(track, spec, exc.kind, exc.message, "")
            return
        except Exception as exc:  # noqa: BLE001 - e.g. MemoryError on a huge file
            for spec in todo:
                yield self._fail(track, spec, "decode_error", f"{type(exc).__name__}: {exc}", traceback.format_exc())
            return
        self.audio_ms.inc(int(1000 * audio.shape[1] / sr))
        # One Analysis per track: operators with the same STFT settings share one STFT.
        analysis = Analysis(audio, sr)
        for spec in todo:
            yield self._separate(track, spec, audio, sr, analysis)

    def _decode(self, track: Track) -> tuple[np.ndarray, int]:
        settings = self.job.audio
        audio, sr = load_audio(
            track.source_uri,
            sr=settings.sample_rate,
            mono=settings.mono,
            max_duration_s=self.job.job.max_duration_s,
        )
        duration = audio.shape[1] / sr
        if duration < self.job.job.min_duration_s:
            raise AudioError(
                track.source_uri, "too_short",
                f"{duration:.3f} s is shorter than the minimum of {self.job.job.min_duration_s:g} s",
            )
        return audio, sr

    # --- one (track, operator) ---------------------------------------------------------------
    def _separate(
        self, track: Track, spec: OperatorSpec, audio: np.ndarray, sr: int, analysis: Analysis
    ) -> dict[str, Any]:
        started = time.perf_counter()
        operator = self._operators[spec.label]
        try:
            try:
                stems = operator.separate(audio, sr, analysis=analysis)
            except Exception as exc:
                raise _UnitFailed("operator_error", f"{type(exc).__name__}: {exc}") from exc
            stems = self._checked(stems, operator, audio.shape)
            settings = self.job.audio
            uris = {name: self._stem_uri(track, spec, name) for name in stems}
            for name, stem in stems.items():
                try:
                    save_audio(uris[name], stem, sr, format=settings.format, subtype=settings.subtype)
                except Exception as exc:
                    raise _UnitFailed("write_error", f"{uris[name]}: {type(exc).__name__}: {exc}") from exc
        except _UnitFailed as failure:
            return self._fail(track, spec, failure.error_type, failure.message, traceback.format_exc())

        energies = {name: float(np.sum(np.square(s, dtype=np.float64))) for name, s in stems.items()}
        total_energy = sum(energies.values())
        elapsed = time.perf_counter() - started
        now = utc_now()
        records = []
        for name, stem in stems.items():
            records.append(
                self._record(
                    track, spec, STATUS_OK, now,
                    stem=name,
                    stem_uri=uris[name],
                    sample_rate=int(sr),
                    channels=int(stem.shape[0]),
                    duration_s=stem.shape[1] / sr,
                    stem_rms_db=_level_db(math.sqrt(energies[name] / max(stem.size, 1))),
                    stem_peak_db=_level_db(float(np.max(np.abs(stem))) if stem.size else 0.0),
                    energy_share=energies[name] / total_energy if total_energy > 0 else None,
                    processing_s=elapsed,
                )
            )
        try:
            write_part(part_uri(self.output, spec.label, track.track_id), records)
        except Exception:  # noqa: BLE001 - consolidation reports the unit as missing_result
            _LOG.exception("could not write the metadata part of %s / %s", track.track_id, spec.label)
            self.units_error.inc()
            return {"track_id": track.track_id, "label": spec.label, "status": STATUS_ERROR}
        self._clear_dead_letter(track, spec)
        self.units_ok.inc()
        return {"track_id": track.track_id, "label": spec.label, "status": STATUS_OK, "duration_s": audio.shape[1] / sr}

    def _stem_uri(self, track: Track, spec: OperatorSpec, stem: str) -> str:
        return stem_uri(
            self.output, track.track_id, spec.label, stem, self.job.audio.extension, by_label=self.job.stems_by_label
        )

    @staticmethod
    def _checked(stems: Any, operator: Operator, shape: tuple[int, ...]) -> dict[str, np.ndarray]:
        if not isinstance(stems, dict) or not stems:
            raise _UnitFailed("invalid_output", f"operator returned {type(stems).__name__}, not a dict of stems")
        out = {}
        for name, stem in stems.items():
            stem = np.atleast_2d(np.asarray(stem, dtype=np.float32))
            if stem.shape != tuple(shape):
                raise _UnitFailed("invalid_output", f"stem {name!r} has shape {stem.shape}, mixture {tuple(shape)}")
            if not np.isfinite(stem).all():
                raise _UnitFailed("invalid_output", f"stem {name!r} holds NaN or infinite samples")
            out[name] = stem
        return out

    # --- records -------------------------------------------------------------------------------
    def _record(self, track: Track, spec: OperatorSpec, status: str, now, **values) -> StemRecord:
        return StemRecord(
            track_id=track.track_id,
            source_uri=track.source_uri,
            operator=spec.operator,
            label=spec.label,
            operator_params=spec.params_json(),
            status=status,
            config_digest=self.job.unit_digest(spec),
            run_id=self.run_id,
            sepflow_version=self._version,
            created_at=now,
            **values,
        )

    def _fail(self, track: Track, spec: OperatorSpec, error_type: str, message: str, tb: str) -> dict[str, Any]:
        """Record the unit as failed: one error row plus a dead-letter file; the job goes on."""
        record = self._record(track, spec, STATUS_ERROR, utc_now(), error_type=error_type, error_message=message)
        self.units_error.inc()
        try:
            write_part(part_uri(self.output, spec.label, track.track_id), [record])
            from sepops.audio import write_bytes_atomic

            write_bytes_atomic(dead_letter_uri(self.output, spec.label, track.track_id), dead_letter_json(record, tb))
        except Exception:  # noqa: BLE001
            _LOG.exception("could not record the failure of %s / %s", track.track_id, spec.label)
        return {"track_id": track.track_id, "label": spec.label, "status": STATUS_ERROR, "error_type": error_type}

    def _clear_dead_letter(self, track: Track, spec: OperatorSpec) -> None:
        fs, path = fsspec.core.url_to_fs(dead_letter_uri(self.output, spec.label, track.track_id))
        try:
            fs.rm_file(path)
        except (FileNotFoundError, OSError):
            pass

    def _is_complete(self, track: Track, spec: OperatorSpec) -> bool:
        """True when an earlier run left this unit's stems and an ok part with the same digest."""
        part = read_part(part_uri(self.output, spec.label, track.track_id))
        if part is None or part.num_rows == 0:
            return False
        rows = part.to_pylist()
        digest = self.job.unit_digest(spec)
        if any(r["status"] not in (STATUS_OK, STATUS_SKIPPED) or r["config_digest"] != digest for r in rows):
            return False
        expected_stems = set(self._operators[spec.label].stem_names)
        if expected_stems and {r["stem"] for r in rows} != expected_stems:
            return False
        # Stems recorded elsewhere (the other layout: the config went from one operator to
        # several or back) are redone where this job puts them.
        if any(r["stem_uri"] != self._stem_uri(track, spec, r["stem"]) for r in rows):
            return False
        fs, _ = fsspec.core.url_to_fs(rows[0]["stem_uri"])
        return all(fs.exists(fsspec.core.url_to_fs(r["stem_uri"])[1]) for r in rows)


class SeparateCatalog(beam.PTransform):
    """``Create(tracks) -> Reshuffle -> ParDo(SeparateTrackFn)``: the whole catalog job.

    Apply it to the pipeline root (``pipeline | SeparateCatalog(...)``). Its output holds one
    small dict per (track, operator); the metadata itself is written by the workers.
    """

    def __init__(self, tracks: list[Track], job: JobConfig, output: str, run_id: str, overwrite: bool = False):
        super().__init__()
        self.tracks = list(tracks)
        self.job = job
        self.output = output
        self.run_id = run_id
        self.overwrite = overwrite

    def expand(self, pbegin):
        return (
            pbegin
            | "ListTracks" >> beam.Create(self.tracks)
            | "SpreadOverWorkers" >> beam.Reshuffle()
            | "Separate" >> beam.ParDo(SeparateTrackFn(self.job, self.output, self.run_id, self.overwrite))
        )
