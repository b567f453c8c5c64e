"""The catalog job's transforms.

The graph is one linear chain, which every runner (DirectRunner in one or several processes,
DaskRunner, Dataflow) executes the same way::

    MatchCatalog(patterns) -> SeparateCatalog -> WriteMetadata

- :class:`MatchCatalog` lists the inputs on the workers and names the tracks; the graph
  holds only the patterns, whatever the catalog's size.
- Only small ``Track`` records (an id and a URI), result dicts and metadata rows travel
  between stages; audio and spectrograms stay inside ``SeparateTrackFn.process``.
- ``Reshuffle`` spreads tracks over workers on Dataflow (it stops the listing's stage from
  fusing with the separation); the DaskRunner turns it into a no-op, so there the listing
  is split into shards, one partition each (``run.match_shards``).
- Each (track, operator) writes its stems and then its metadata part (the log) straight to
  storage from ``process`` (:mod:`pipelines.unit` does that work; the DoFn adds Beam's
  counters). Stems go to ``<output>/stems/<track_id>/<stem>.<ext>`` when the job's config
  lists one operator, ``<output>/stems/<track_id>/<label>/<stem>.<ext>`` when it lists
  several (``JobConfig.stems_by_label``). :class:`WriteMetadata` writes the published
  table in shards and the run's summary. Nothing is emitted from ``finish_bundle`` (the
  DaskRunner drops such outputs) and the chain has one leaf (the DaskRunner only runs the
  last branch of a graph).
- Operators are built once per worker process and job, in a module-level cache:
  ``apache_beam.utils.shared.Shared`` was not used because it keeps only a weak reference
  (plus one keep-alive for the latest object acquired) under a key made per ``Shared``
  instance, so a new pipeline, or a Dask partition whose DoFn let go of the operators,
  would build them again.
"""
from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import apache_beam as beam
import fsspec
from apache_beam.metrics import Metrics

from sepops import Analysis, Operator, get_operator

from . import sepflow_version
from .config import JobConfig
from .features import feature_part_uri, read_feature_part
from .io import (
    InputPattern,
    Track,
    common_root,
    disambiguate,
    expand_input,
    name_track,
    remove_orphaned_temp_files,
)
from .metadata import (
    STATUS_ERROR,
    STATUS_OK,
    STATUS_SKIPPED,
    StemRecord,
    empty_summary,
    merge_summaries,
    part_uri,
    read_part,
    record_dict,
    shard_of,
    utc_now,
    write_input_report,
    write_progress,
    write_shard,
    write_summary,
)
from .track_ids import read_known_ids, write_new_ids
from .unit import (
    LongTrack,
    PartNotWritten,
    Unit,
    UnitCancelled,
    UnitFailed,
    WriteGuard,
    can_stream,
    complete_rows,
    decode_track,
    fail_unit,
    read_source_tags,
    separate_unit,
    source_size,
    stem_prefix,
    stem_uri,
    stream_unit,
    streams,
)

__all__ = ["MatchCatalog", "SeparateCatalog", "SeparateTrackFn", "WriteMetadata", "operator_builds", "operators_for", "stem_uri"]

_METRICS_NAMESPACE = "sepflow"
_LOG = logging.getLogger(__name__)

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
        self._progress = {"ok": 0, "error": 0, "skipped": 0}
        self._progress_id = uuid.uuid4().hex
        self._progress_at = 0.0

    def _count(self, result: dict[str, Any]) -> dict[str, Any]:
        """Count a unit's result in this worker's progress file (at most one write a second)."""
        self._progress[result["status"]] += 1
        if time.monotonic() - self._progress_at >= 1.0:
            self._write_progress()
        return result

    def _write_progress(self) -> None:
        self._progress_at = time.monotonic()
        try:
            write_progress(self.output, self.run_id, self._progress_id, self._progress)
        except Exception:  # noqa: BLE001 - progress is best effort
            _LOG.debug("could not write progress", exc_info=True)

    def finish_bundle(self):
        # A side effect only (the DaskRunner drops finish_bundle's outputs): the last counts.
        self._write_progress()

    def process(self, track: Track) -> Iterator[dict[str, Any]]:
        self.tracks_counter.inc()
        todo = []
        for spec in self.job.operators:
            unit = Unit.of(track, spec, self.job)
            features: list[dict] = []
            rows = None if self.overwrite else complete_rows(
                unit, self.job, self.output, self._operators[unit.label], features
            )
            if rows is not None:
                self.units_skipped.inc()
                # Rows an earlier run wrote are this run's "skipped" (a runner's retry within
                # this run finds its own rows: they stay as they are).
                rows = [r if r["run_id"] == self.run_id else dict(r, status=STATUS_SKIPPED) for r in rows]
                yield self._count({"track_id": unit.track_id, "label": unit.label, "status": STATUS_SKIPPED,
                                   "rows": rows, "features": features})
            else:
                todo.append(unit)
        if not todo:
            return
        limit = self.job.job.track_timeout_s
        if limit is None:
            outcomes, audio_s = self._separate_track(track, todo, None)
        else:
            outcomes, audio_s = self._within(limit, track, todo)
        if audio_s:
            self.audio_ms.inc(int(1000 * audio_s))
        for unit, records, duration_s, features in outcomes:
            if records is None:  # stems written, part not: the unit is redone by the next run
                records, features = [unit.record(
                    STATUS_ERROR, run_id=self.run_id, version=self._version, created_at=utc_now(),
                    error_type="missing_result", error_message="the unit's metadata part could not be written",
                )], []
            yield self._count(self._result(unit, records, duration_s=duration_s, features=features))

    def _separate_track(self, track: Track, todo: list[Unit], guard: WriteGuard | None):
        """Decode ``track`` once and run its units: ``([(unit, records or None, duration_s,
        feature rows)], audio seconds)``. Beam-free (no counters), so it can run in a thread of its own.
        Large tracks whose operators all work in blocks are streamed instead (one read per
        operator, memory bounded by the block)."""
        size = source_size(track.source_uri)  # one stat (or HEAD) serves both checks
        operators = [self._operators[u.label] for u in todo]
        if streams(self.job, operators, size):
            return self._stream_track(track, todo, guard, size, read_source_tags(track.source_uri))
        stream_above_s = self.job.job.stream_above_s if can_stream(self.job, operators) else None
        try:
            audio, sr, tags = decode_track(track.source_uri, self.job, size, stream_above_s=stream_above_s)
        except LongTrack as long:
            return self._stream_track(track, todo, guard, size, long.tags)
        except UnitFailed as failure:
            return [
                (unit, fail_unit(unit, self.output, failure, run_id=self.run_id, version=self._version, guard=guard), None, [])
                for unit in todo
            ], 0.0
        # One Analysis per track: operators with the same STFT settings share one STFT.
        analysis = Analysis(audio, sr)
        outcomes = []
        for unit in todo:
            features: list[dict] = []
            try:
                records = separate_unit(
                    unit, self.job, self.output, self._operators[unit.label], analysis,
                    run_id=self.run_id, version=self._version, tags=tags, guard=guard, feature_rows_out=features,
                )
            except PartNotWritten:
                records = None
            outcomes.append((unit, records, audio.shape[1] / sr, features))
        return outcomes, audio.shape[1] / sr

    def _stream_track(self, track: Track, todo: list[Unit], guard: WriteGuard | None, size, tags):
        """Each unit of a long track read, separated and written in blocks (one read of the
        file per operator, more for a global model): memory bounded by the block length."""
        outcomes, seconds = [], 0.0
        for unit in todo:
            features: list[dict] = []
            try:
                records, seconds = stream_unit(
                    unit, self.job, self.output, self._operators[unit.label],
                    run_id=self.run_id, version=self._version, tags=tags, size=size, guard=guard,
                    feature_rows_out=features,
                )
            except PartNotWritten:
                records = None
            outcomes.append((unit, records, seconds or None, features))
        return outcomes, seconds

    def _within(self, limit: float, track: Track, todo: list[Unit]):
        """``_separate_track`` in a thread of its own, given ``limit`` seconds.

        A track still running then has its unfinished units recorded as ``timeout`` errors,
        and the stems they wrote removed; the thread can write nothing more (``WriteGuard``)
        and, since Python cannot stop it, finishes its computation in the background (it is
        a daemon: it ends with the worker at the latest).
        """
        guard = WriteGuard()
        box: dict[str, Any] = {}

        def work():
            try:
                box["result"] = self._separate_track(track, todo, guard)
            except UnitCancelled:
                pass
            except BaseException as exc:  # noqa: BLE001 - re-raised in the DoFn's thread
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
        failure = UnitFailed("timeout", f"no result within {limit:g} s (job.track_timeout_s)", traceback_text="")
        outcomes = []
        for unit in todo:
            part = part_uri(self.output, unit.label, unit.track_id)
            if part in written:  # finished before the limit
                features = read_feature_part(feature_part_uri(self.output, unit.label, unit.track_id)) or []
                outcomes.append((unit, _records_of(unit, part), None, features if self.job.features.enabled else []))
                continue
            stems = [u for u in written if u.startswith(stem_prefix(self.output, unit, self.job))]
            _remove(stems)
            outcomes.append((unit, fail_unit(unit, self.output, failure, run_id=self.run_id, version=self._version), None, []))
        return outcomes, 0.0

    def _result(
        self, unit: Unit, records: list[StemRecord], duration_s: float | None = None, features: list[dict] | None = None
    ) -> dict[str, Any]:
        """The unit's result dict with its metadata rows (and feature rows), counted as ok or error."""
        rows = [record_dict(r) for r in records]
        if records[0].status == STATUS_OK:
            self.units_ok.inc()
            return {"track_id": unit.track_id, "label": unit.label, "status": STATUS_OK, "duration_s": duration_s,
                    "rows": rows, "features": features or []}
        self.units_error.inc()
        return {"track_id": unit.track_id, "label": unit.label, "status": STATUS_ERROR,
                "error_type": records[0].error_type, "rows": rows, "features": []}


def _records_of(unit: Unit, part: str) -> list[StemRecord]:
    """The rows a unit's part holds, as records (a unit that finished before its track's limit)."""
    from dataclasses import fields

    names = {f.name for f in fields(StemRecord)}
    return [StemRecord(**{k: v for k, v in row.items() if k in names}) for row in read_part(part).to_pylist()]


def _remove(uris: list[str]) -> None:
    for uri in uris:
        fs, path = fsspec.core.url_to_fs(uri)
        try:
            fs.rm_file(path)
        except (FileNotFoundError, OSError):
            pass


class _ExpandInputFn(beam.DoFn):
    """One input (one shard of its listing) -> the files it matches; what it matched, or why
    nothing, goes to a small report the driver reads after the run."""

    def __init__(self, extensions: tuple[str, ...], output: str, run_id: str):
        self.extensions, self.output, self.run_id = extensions, output, run_id

    def process(self, element):
        pattern, shard, shards = element
        try:
            matched = expand_input(pattern, self.extensions, shard=shard, shards=shards)
            report = {"spec": pattern.spec, "matched": len(matched), "error": None}
        except Exception as exc:  # noqa: BLE001 - an input that cannot be listed is reported, not fatal
            matched, report = [], {"spec": pattern.spec, "matched": 0, "error": str(exc)}
        write_input_report(self.output, self.run_id, pattern.index, shard, report)
        yield from matched


class _CommonRootFn(beam.CombineFn):
    def create_accumulator(self):
        return None

    def add_input(self, acc, root):
        return root if acc is None else common_root([acc, root])

    def merge_accumulators(self, accs):
        out = None
        for a in accs:
            if a is not None:
                out = a if out is None else common_root([out, a])
        return out

    def extract_output(self, acc):
        return acc or ""


def _by_caseless_id(track: Track):
    return track.track_id.casefold(), track


def _disambiguated(keyed, known):
    return disambiguate(list(keyed[1]), known)


class _RecordNewIdsFn(beam.DoFn):
    """Tracks pass through; the ids of new ones are recorded (one file per bundle, written
    before any of them is separated: a killed run's stems keep their ids)."""

    def __init__(self, output: str, run_id: str):
        self.output, self.run_id = output, run_id

    def start_bundle(self):
        self._new: list[Track] = []

    def process(self, track: Track):
        if track.new_id:
            self._new.append(track)
            if len(self._new) >= 10_000:  # a bounded buffer, whatever the bundle's size
                self._record()
        yield track

    def finish_bundle(self):
        self._record()  # a side effect only (the DaskRunner drops finish_bundle's outputs)

    def _record(self):
        write_new_ids(self.output, self.run_id, self._new)
        self._new = []


class MatchCatalog(beam.PTransform):
    """The inputs' patterns -> one ``Track`` per file, matched and named on the workers.

    ``Create((pattern, shard, shards)) -> ParDo(list it) -> Map(name, root) -> GroupByKey(URI)
    -> GroupByKey(id, without case) -> FlatMap(disambiguate, the output's known ids) ->
    ParDo(record new ids)``: a file keeps the id an earlier run gave it
    (:mod:`pipelines.track_ids`). The graph holds only the patterns, whatever the catalog's size. Each pattern's listing is split into ``shards``
    (workers list it and keep their hash share of the paths: on the DaskRunner, where
    ``Reshuffle`` does nothing, the shards are the partitions the separation runs in). Ids
    are those of :func:`pipelines.io.match_inputs`: relative to the deepest folder common to
    every input's root (a glob's fixed part, a folder, a file's folder, a manifest entry's
    folder), combined in the pipeline and given to the naming step as a side input.
    """

    def __init__(self, patterns: list[InputPattern], extensions: tuple[str, ...], output: str, run_id: str,
                 shards: int = 1):
        super().__init__()
        self.patterns, self.extensions = list(patterns), tuple(extensions)
        self.output, self.run_id, self.shards = output, run_id, max(1, shards)

    def expand(self, pbegin):
        elements = [(p, shard, self.shards) for p in self.patterns for shard in range(self.shards)]
        matched = (
            pbegin
            | "Inputs" >> beam.Create(elements)
            | "ListInputs" >> beam.ParDo(_ExpandInputFn(self.extensions, self.output, self.run_id))
        )
        root = matched | "Roots" >> beam.Map(lambda m: m.root) | "IdRoot" >> beam.CombineGlobally(_CommonRootFn())
        # Read once, from the singleton root (not a Create of its own: the graph stays small).
        output = self.output
        known = root | "KnownIds" >> beam.Map(lambda _: read_known_ids(output))
        return (
            matched
            | "Name" >> beam.Map(lambda m, root: (m.uri, (m, name_track(m, root))), root=beam.pvalue.AsSingleton(root))
            | "ByUri" >> beam.GroupByKey()
            | "FirstInput" >> beam.Map(lambda kv: min(kv[1], key=lambda mt: mt[0].index)[1])
            | "ByCaselessId" >> beam.Map(_by_caseless_id)
            | "GroupIds" >> beam.GroupByKey()
            | "Disambiguate" >> beam.FlatMap(_disambiguated, known=beam.pvalue.AsSingleton(known))
            | "RecordNewIds" >> beam.ParDo(_RecordNewIdsFn(self.output, self.run_id))
        )


class SeparateCatalog(beam.PTransform):
    """``Reshuffle -> ParDo(SeparateTrackFn)`` over a PCollection of ``Track`` (or, applied to
    the pipeline root, ``Create(tracks)`` first): the separation of the catalog.

    Its output holds one dict per (track, operator): ``track_id``, ``label``, ``status``,
    ``duration_s`` or ``error_type``, ``rows``, the unit's metadata rows (dicts of
    ``STEM_METADATA_SCHEMA``'s columns), and ``features``, its stems' feature rows
    (``STEM_FEATURES_SCHEMA``), which :class:`WriteMetadata` publishes.
    """

    def __init__(self, tracks: list[Track] | None, job: JobConfig, output: str, run_id: str, overwrite: bool = False):
        super().__init__()
        self.tracks = None if tracks is None else list(tracks)
        self.job = job
        self.output = output
        self.run_id = run_id
        self.overwrite = overwrite

    def expand(self, pcoll):
        if isinstance(pcoll, beam.pvalue.PBegin):
            pcoll = pcoll | "ListTracks" >> beam.Create(self.tracks or [])
        return (
            pcoll
            | "SpreadOverWorkers" >> beam.Reshuffle()
            | "Separate" >> beam.ParDo(SeparateTrackFn(self.job, self.output, self.run_id, self.overwrite))
        )


class _WriteShardFn(beam.DoFn):
    def __init__(self, output: str, run_id: str):
        self.output, self.run_id = output, run_id

    def process(self, keyed):
        shard, results = keyed
        yield write_shard(self.output, self.run_id, shard, list(results))


class _MergeSummaries(beam.CombineFn):
    def create_accumulator(self):
        return empty_summary()

    def add_input(self, acc, summary):
        return merge_summaries(acc, summary)

    def merge_accumulators(self, accs):
        out = empty_summary()
        for a in accs:
            out = merge_summaries(out, a)
        return out

    def extract_output(self, acc):
        return acc


class WriteMetadata(beam.PTransform):
    """Unit results -> the run's metadata, written by the workers.

    ``Map(shard of track_id) -> GroupByKey -> ParDo(write the shard) ->
    CombineGlobally(merge the shards' summaries) -> Map(write the summary)``: every unit of a
    track lands in one of ``shards`` Parquet files (``metadata.write_shard``, each atomic,
    staged under the run until :func:`pipelines.metadata.publish` moves them into
    ``<output>/metadata/``), and the summary (counts, audio seconds, the first errors) is
    one small JSON the driver reads. A linear chain, written from ``process`` only (the
    DaskRunner drops ``finish_bundle`` outputs and runs only a graph's last branch).
    """

    def __init__(self, output: str, run_id: str, shards: int):
        super().__init__()
        self.output, self.run_id, self.shards = output, run_id, shards

    def expand(self, results):
        shards = self.shards
        output, run_id = self.output, self.run_id
        return (
            results
            | "ByShard" >> beam.Map(lambda r: (shard_of(r["track_id"], shards), r))
            | "GroupShards" >> beam.GroupByKey()
            | "WriteShards" >> beam.ParDo(_WriteShardFn(output, run_id))
            | "Summarize" >> beam.CombineGlobally(_MergeSummaries())
            | "WriteSummary" >> beam.Map(lambda summary: write_summary(output, run_id, summary))
            # Every unit is written by now: temporary files left are killed writers'.
            | "RemoveTemporaries" >> beam.Map(lambda _: remove_orphaned_temp_files(output))
        )
