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
  from ``process`` (:mod:`pipelines.unit` does that work; the DoFn adds Beam's counters).
  Stems go to ``<output>/stems/<track_id>/<stem>.<ext>`` when the job's config lists one
  operator, ``<output>/stems/<track_id>/<label>/<stem>.<ext>`` when it lists several
  (``JobConfig.stems_by_label``). Nothing is emitted from ``finish_bundle`` (the DaskRunner
  drops such outputs) and no sink runs in the pipeline (the DaskRunner only runs the last
  branch of a graph); the driver consolidates the parts after the pipeline.
- Operators are built once per worker process and job, in a module-level cache:
  ``apache_beam.utils.shared.Shared`` was not used because it keeps only a weak reference
  (plus one keep-alive for the latest object acquired) under a key made per ``Shared``
  instance, so a new pipeline, or a Dask partition whose DoFn let go of the operators,
  would build them again.
"""
from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import apache_beam as beam
from apache_beam.metrics import Metrics

from sepops import Analysis, Operator, get_operator

from . import sepflow_version
from .config import JobConfig
from .io import Track
from .metadata import STATUS_ERROR, STATUS_OK, STATUS_SKIPPED, StemRecord
from .unit import (
    PartNotWritten,
    Unit,
    UnitFailed,
    decode_track,
    fail_unit,
    is_complete,
    separate_unit,
    stem_uri,
)

__all__ = ["SeparateCatalog", "SeparateTrackFn", "operator_builds", "operators_for", "stem_uri"]

_METRICS_NAMESPACE = "sepflow"

# A module-level cache (rather than DoFn.setup state) is what builds operators once per
# process on Dask, where setup runs once per partition.
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


class SeparateTrackFn(beam.DoFn):
    """Decode one track once, run every operator of the job on it, write stems and metadata.

    Input: a ``Track``. Output: one small dict per (track, operator):
    ``{"track_id", "label", "status"}``, plus ``duration_s`` when ok and ``error_type`` when
    the unit failed.
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

    def process(self, track: Track) -> Iterator[dict[str, Any]]:
        self.tracks_counter.inc()
        todo = []
        for spec in self.job.operators:
            unit = Unit.of(track, spec, self.job)
            if not self.overwrite and is_complete(unit, self.job, self.output, self._operators[unit.label]):
                self.units_skipped.inc()
                yield {"track_id": unit.track_id, "label": unit.label, "status": STATUS_SKIPPED}
            else:
                todo.append(unit)
        if not todo:
            return
        try:
            audio, sr, tags = decode_track(track.source_uri, self.job)
        except UnitFailed as failure:
            for unit in todo:
                yield self._result(unit, fail_unit(unit, self.output, failure, run_id=self.run_id, version=self._version))
            return
        self.audio_ms.inc(int(1000 * audio.shape[1] / sr))
        # One Analysis per track: operators with the same STFT settings share one STFT.
        analysis = Analysis(audio, sr)
        for unit in todo:
            try:
                records = separate_unit(
                    unit, self.job, self.output, self._operators[unit.label], analysis,
                    run_id=self.run_id, version=self._version, tags=tags,
                )
            except PartNotWritten:  # consolidation reports the unit as missing_result
                self.units_error.inc()
                yield {"track_id": unit.track_id, "label": unit.label, "status": STATUS_ERROR}
                continue
            yield self._result(unit, records, duration_s=audio.shape[1] / sr)

    def _result(self, unit: Unit, records: list[StemRecord], duration_s: float | None = None) -> dict[str, Any]:
        """The unit's result dict, counted as ok or error."""
        if records[0].status == STATUS_OK:
            self.units_ok.inc()
            return {"track_id": unit.track_id, "label": unit.label, "status": STATUS_OK, "duration_s": duration_s}
        self.units_error.inc()
        return {
            "track_id": unit.track_id, "label": unit.label, "status": STATUS_ERROR, "error_type": records[0].error_type
        }


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
