"""One track of the catalog job, without Beam: skip what is complete, decode once, separate
with every operator, write, record -- within the track's time limit.

    work = TrackWork(job, output, run_id)
    results, audio_s = work.run(track)     # one result per (track, operator)

A result is a small dict: ``track_id``, ``label``, ``status`` (ok, error or skipped),
``duration_s`` (ok) or ``error_type`` (error), ``rows`` (the unit's metadata rows, dicts of
``STEM_METADATA_SCHEMA``) and ``features`` (its feature rows). ``SeparateTrackFn``
(:mod:`pipelines.transforms`) only counts and yields them.

A track is decoded once and every operator separates it (sharing one STFT through
:class:`sepops.Analysis`), unless it is large or long and every operator works in blocks:
it is then streamed, one read per operator, in memory bounded by the block
(:mod:`pipelines.decode`). Every unit's stems go through one :class:`pipelines.sink.StemSink`.
"""
from __future__ import annotations

import functools
import logging
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from sepops import Analysis, AudioError, Operator, get_operator
from sepops.tags import TrackTags

from .config import JobConfig
from .decode import (
    LongTrack,
    can_stream,
    check_size,
    decode_track,
    open_track_stream,
    read_source_tags,
    source_size,
    streams,
)
from .records import (
    StemRecord,
    Unit,
    feature_part_uri,
    part_uri,
    read_feature_part,
    read_part,
    record_dict,
    utc_now,
)
from .sink import StemSink, checked_stems
from .tables import STATUS_ERROR, STATUS_OK, STATUS_SKIPPED
from .units import (
    PartNotWritten,
    UnitCancelled,
    UnitFailed,
    WriteGuard,
    complete_rows,
    fail_unit,
    remove_uris,
    stem_prefix,
)

__all__ = ["TrackWork", "UnitOutcome", "operator_builds", "operators_for", "separate_unit", "stream_unit"]

_LOG = logging.getLogger(__name__)

# A module-level cache (rather than DoFn.setup state) is what builds operators once per
# process on Dask, where setup runs once per partition. (``apache_beam.utils.shared.Shared``
# keeps only a weak reference under a key made per ``Shared`` instance: a new pipeline, or a
# Dask partition whose DoFn let go of the operators, would build them again.)
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


def separate_unit(
    unit: Unit, job: JobConfig, output: str, operator: Operator, analysis: Analysis, *, run_id: str, version: str,
    tags: TrackTags | None = None, guard: WriteGuard | None = None, feature_rows_out: list | None = None,
) -> list[StemRecord]:
    """Separate the track of ``analysis`` whole, write its stems, its features part
    (``job.features``, from the arrays in memory) and then its metadata part (every row
    carrying the source's ``tags``). The unit's feature rows are appended to ``feature_rows_out``.

    Returns one ok row per stem, or the one error row of :func:`pipelines.units.fail_unit`
    (``operator_error``, ``invalid_output``, ``write_error``); raises ``PartNotWritten`` when
    the stems were written but the metadata part could not be.
    """
    started = time.perf_counter()
    audio, sr = analysis.audio, analysis.sr
    try:
        try:
            stems = operator.separate(audio, sr, analysis=analysis)
        except Exception as exc:
            raise UnitFailed("operator_error", f"{type(exc).__name__}: {exc}", tags=tags) from exc
        stems = checked_stems(stems, audio.shape, tags)
        sink = StemSink(unit, job, output, list(stems), sr, audio.shape[0], tags=tags, guard=guard, whole=True)
        with sink:
            sink.add(stems)  # checked against the mixture's shape above
    except UnitFailed as failure:
        return fail_unit(unit, output, failure, run_id=run_id, version=version, guard=guard)
    return sink.commit(run_id=run_id, version=version, elapsed=time.perf_counter() - started,
                       feature_rows_out=feature_rows_out)


def stream_unit(
    unit: Unit, job: JobConfig, output: str, operator: Operator, *, run_id: str, version: str,
    tags: TrackTags | None = None, size: int | None = None, guard: WriteGuard | None = None,
    feature_rows_out: list | None = None,
) -> tuple[list[StemRecord], float]:
    """:func:`separate_unit` for a track read, separated and written block by block
    (``tags`` from :func:`pipelines.decode.read_source_tags`, ``size`` from
    :func:`pipelines.decode.source_size`). Returns the unit's rows and the track's length, s."""
    from sepops.blocks import separate_blocks

    started = time.perf_counter()
    passes = functools.partial(open_track_stream, unit.source_uri, job)  # one pass of the track per call
    try:
        try:
            check_size(unit.source_uri, size, job.job.max_file_mb)
            operator = operator.fit_stream(passes)  # a global model (ICA) from whole-track passes
            if guard is not None:
                guard.check()
            with passes() as stream:
                sink = StemSink(unit, job, output, list(operator.stem_names), stream.sr, stream.channels,
                                tags=tags, guard=guard)
                with sink:
                    for _, stems in separate_blocks(operator, stream, block_s=job.job.block_s):
                        sink.write(stems)
        except AudioError as exc:
            raise UnitFailed(exc.kind, exc.message, traceback_text="", tags=tags) from None
        except (UnitFailed, UnitCancelled):
            raise
        except Exception as exc:
            raise UnitFailed("operator_error", f"{type(exc).__name__}: {exc}", tags=tags) from exc
        if sink.frames == 0:
            raise UnitFailed("empty", "file holds no decodable samples", traceback_text="", tags=tags)
    except UnitFailed as failure:
        return fail_unit(unit, output, failure, run_id=run_id, version=version, guard=guard), 0.0
    records = sink.commit(run_id=run_id, version=version, elapsed=time.perf_counter() - started,
                          feature_rows_out=feature_rows_out)
    return records, sink.frames / sink.sr


@dataclass
class UnitOutcome:
    """What one unit of a track came to: its rows (``None`` when its stems were written but
    its part was not), the track's length when it was separated, and its feature rows."""

    unit: Unit
    rows: list[dict] | None
    duration_s: float | None = None
    features: list[dict] = field(default_factory=list)


class TrackWork:
    """Every unit of one track at a time, for one job, run and output (one per worker)."""

    def __init__(self, job: JobConfig, output: str, run_id: str, version: str, *, overwrite: bool = False):
        self.job, self.output, self.run_id, self.version = job, output.rstrip("/"), run_id, version
        self.overwrite = overwrite
        self.operators = operators_for(job)

    def run(self, track) -> tuple[list[dict[str, Any]], float]:
        """The track's results (skipped units first) and the seconds of audio separated."""
        results, todo = self._skip_complete(track)
        if not todo:
            return results, 0.0
        limit = self.job.job.track_timeout_s
        if limit is None:
            outcomes, audio_s = self.separate(track, todo, None)
        else:
            outcomes, audio_s = self._within(limit, track, todo)
        return results + [self._result(o) for o in outcomes], audio_s

    def _skip_complete(self, track) -> tuple[list[dict[str, Any]], list[Unit]]:
        """Results of the units an earlier run completed (they are skipped), and the others."""
        results, todo = [], []
        for spec in self.job.operators:
            unit = Unit.of(track, spec, self.job)
            features: list[dict] = []
            rows = None if self.overwrite else complete_rows(
                unit, self.job, self.output, self.operators[unit.label], features)
            if rows is None:
                todo.append(unit)
                continue
            # Rows an earlier run wrote are this run's "skipped" (a runner's retry within
            # this run finds its own rows: they stay as they are).
            rows = [r if r["run_id"] == self.run_id else dict(r, status=STATUS_SKIPPED) for r in rows]
            results.append({"track_id": unit.track_id, "label": unit.label, "status": STATUS_SKIPPED,
                            "rows": rows, "features": features})
        return results, todo

    def separate(self, track, todo: list[Unit], guard: WriteGuard | None) -> tuple[list[UnitOutcome], float]:
        """Decode ``track`` once and run its units, or stream it when it is large or long and
        every operator works in blocks; returns the outcomes and the seconds of audio."""
        size = source_size(track.source_uri)  # one stat (or HEAD) serves both checks
        operators = [self.operators[u.label] for u in todo]
        if streams(self.job, operators, size):
            return self._stream(todo, guard, size, read_source_tags(track.source_uri))
        stream_above_s = self.job.job.stream_above_s if can_stream(self.job, operators) else None
        try:
            audio, sr, tags = decode_track(track.source_uri, self.job, size, stream_above_s=stream_above_s)
        except LongTrack as long:
            return self._stream(todo, guard, size, long.tags)
        except UnitFailed as failure:
            return [UnitOutcome(unit, self._failed(unit, failure, guard)) for unit in todo], 0.0
        analysis = Analysis(audio, sr)  # operators with the same STFT settings share one STFT
        outcomes = []
        for unit in todo:
            features: list[dict] = []
            try:
                records = separate_unit(
                    unit, self.job, self.output, self.operators[unit.label], analysis, run_id=self.run_id,
                    version=self.version, tags=tags, guard=guard, feature_rows_out=features,
                )
                rows = [record_dict(r) for r in records]
            except PartNotWritten:
                rows = None
            outcomes.append(UnitOutcome(unit, rows, audio.shape[1] / sr, features))
        return outcomes, audio.shape[1] / sr

    def _stream(self, todo: list[Unit], guard: WriteGuard | None, size, tags) -> tuple[list[UnitOutcome], float]:
        """Each unit of a long track read, separated and written in blocks (one read of the
        file per operator, more for a global model): memory bounded by the block length."""
        outcomes, seconds = [], 0.0
        for unit in todo:
            features: list[dict] = []
            try:
                records, seconds = stream_unit(
                    unit, self.job, self.output, self.operators[unit.label], run_id=self.run_id,
                    version=self.version, tags=tags, size=size, guard=guard, feature_rows_out=features,
                )
                rows = [record_dict(r) for r in records]
            except PartNotWritten:
                rows = None
            outcomes.append(UnitOutcome(unit, rows, seconds or None, features))
        return outcomes, seconds

    def _failed(self, unit: Unit, failure: UnitFailed, guard: WriteGuard | None = None) -> list[dict]:
        records = fail_unit(unit, self.output, failure, run_id=self.run_id, version=self.version, guard=guard)
        return [record_dict(r) for r in records]

    def _within(self, limit: float, track, todo: list[Unit]) -> tuple[list[UnitOutcome], float]:
        """:meth:`separate` in a thread of its own, given ``limit`` seconds.

        A track still running then has its unfinished units recorded as ``timeout`` errors,
        and the stems they wrote removed; the thread can write nothing more (``WriteGuard``)
        and, since Python cannot stop it, finishes its computation in the background (it is
        a daemon: it ends with the worker at the latest).
        """
        guard = WriteGuard()
        box: dict[str, Any] = {}

        def work():
            try:
                box["result"] = self.separate(track, todo, guard)
            except UnitCancelled:
                pass
            except BaseException as exc:  # noqa: BLE001 - re-raised in the caller's thread
                box["error"] = exc

        thread = threading.Thread(target=work, name=f"sepflow-track-{track.track_id}", daemon=True)
        thread.start()
        thread.join(limit)
        if not thread.is_alive():
            if "error" in box:
                raise box["error"]
            return box["result"]
        written = set(guard.cancel())
        _LOG.warning("%s: no result within %g s (job.track_timeout_s)", track.source_uri, limit)
        return [self._after_limit(unit, written, limit) for unit in todo], 0.0

    def _after_limit(self, unit: Unit, written: set[str], limit: float) -> UnitOutcome:
        """A unit of a track past its limit: its rows when it committed in time, else a
        ``timeout`` error row (and its stems removed)."""
        part = part_uri(self.output, unit.label, unit.track_id)
        if part in written:  # finished before the limit
            features = read_feature_part(feature_part_uri(self.output, unit.label, unit.track_id)) or []
            return UnitOutcome(unit, read_part(part).to_pylist(), None, features if self.job.features.enabled else [])
        remove_uris([u for u in written if u.startswith(stem_prefix(self.output, unit, self.job))])
        failure = UnitFailed("timeout", f"no result within {limit:g} s (job.track_timeout_s)", traceback_text="")
        return UnitOutcome(unit, self._failed(unit, failure))

    def _result(self, outcome: UnitOutcome) -> dict[str, Any]:
        """The unit's result dict, ok or error."""
        unit, rows = outcome.unit, outcome.rows
        if rows is None:  # stems written, part not: the unit is redone by the next run
            rows = [record_dict(unit.record(
                STATUS_ERROR, run_id=self.run_id, version=self.version, created_at=utc_now(),
                error_type="missing_result", error_message="the unit's metadata part could not be written",
            ))]
            outcome.features = []
        if rows[0]["status"] == STATUS_OK:
            return {"track_id": unit.track_id, "label": unit.label, "status": STATUS_OK,
                    "duration_s": outcome.duration_s, "rows": rows, "features": outcome.features or []}
        return {"track_id": unit.track_id, "label": unit.label, "status": STATUS_ERROR,
                "error_type": rows[0]["error_type"], "rows": rows, "features": []}
