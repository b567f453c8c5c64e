"""The jobs' transforms: thin composites over DoFns of a few lines each.

The catalog job is one linear chain, which every runner (DirectRunner in one or several
processes, DaskRunner, Dataflow) executes the same way::

    MatchCatalog(patterns) -> SeparateCatalog -> WriteMetadata

- :class:`MatchCatalog` lists the inputs on the workers and names the tracks; the graph
  holds only the patterns, whatever the catalog's size.
- :class:`SeparateCatalog` spreads the tracks over the workers; its DoFn hands each track to
  :class:`pipelines.track.TrackWork` (decode, separate, write stems and parts, all without
  Beam) and only counts and yields the per-unit results. Audio never travels between stages.
- :class:`WriteMetadata` writes the published tables in shards with :class:`WriteShards`, the
  one sharded-table writer (``sepflow evaluate`` writes its table with it too), and the run's
  summary.

Nothing is emitted from ``finish_bundle`` (the DaskRunner drops such outputs) and each chain
has one leaf (the DaskRunner only runs the last branch of a graph). ``Reshuffle`` spreads
tracks over workers on Dataflow; the DaskRunner turns it into a no-op, so there the listing
is split into shards, one partition each (``driver.match_shards``).
"""
from __future__ import annotations

import functools
import logging
import time
import uuid
from collections.abc import Callable, Iterable

import apache_beam as beam
from apache_beam.metrics import Metrics

from . import sepflow_version
from .config import JobConfig
from .driver import write_progress
from .io import (
    InputPattern,
    Track,
    common_root,
    disambiguate,
    expand_input,
    name_track,
)
from .run_files import (
    empty_summary,
    merge_summaries,
    remove_orphaned_temp_files,
    write_input_report,
    write_shard,
    write_summary,
)
from .tables import STATUS_ERROR, STATUS_OK, STATUS_SKIPPED, shard_of
from .track import TrackWork
from .track_ids import read_known_ids, write_new_ids

__all__ = ["MatchCatalog", "SeparateCatalog", "SeparateTrackFn", "WriteMetadata", "WriteShards"]

_METRICS_NAMESPACE = "sepflow"
_LOG = logging.getLogger(__name__)


class WorkerProgress:
    """One DoFn instance's running counts of units done, written to the job's progress
    folder at most once a second (:class:`pipelines.driver.ProgressLine` sums them)."""

    def __init__(self, output: str, job_id: str, interval_s: float = 1.0):
        self.output, self.job_id, self.interval_s = output, job_id, interval_s
        self.counts = {STATUS_OK: 0, STATUS_ERROR: 0, STATUS_SKIPPED: 0}
        self.writer = uuid.uuid4().hex
        self._written_at = 0.0

    def count(self, status: str) -> None:
        self.counts[status] += 1
        if time.monotonic() - self._written_at >= self.interval_s:
            self.flush()

    def count_all(self, statuses) -> None:
        """Count several units and write the counts now (a job whose elements each finish
        several units at once: the line then moves by all of them together)."""
        for status in statuses:
            self.counts[status] += 1
        self.flush()

    def flush(self) -> None:
        self._written_at = time.monotonic()
        try:
            write_progress(self.output, self.job_id, self.writer, self.counts)
        except Exception:  # noqa: BLE001 - progress is best effort
            _LOG.debug("could not write progress", exc_info=True)


class SeparateTrackFn(beam.DoFn):
    """A ``Track`` -> one result dict per (track, operator) (:mod:`pipelines.track`), counted."""

    def __init__(self, job: JobConfig, output: str, run_id: str, overwrite: bool = False):
        self.job, self.output, self.run_id, self.overwrite = job, output.rstrip("/"), run_id, overwrite
        self.tracks = Metrics.counter(_METRICS_NAMESPACE, "tracks")
        self.units = {s: Metrics.counter(_METRICS_NAMESPACE, f"units_{s}") for s in (STATUS_OK, STATUS_ERROR, STATUS_SKIPPED)}
        self.audio_ms = Metrics.counter(_METRICS_NAMESPACE, "audio_ms")

    def setup(self):
        self._work = TrackWork(self.job, self.output, self.run_id, sepflow_version(), overwrite=self.overwrite)
        self._progress = WorkerProgress(self.output, self.run_id)

    def process(self, track: Track):
        self.tracks.inc()
        results, audio_s = self._work.run(track)
        if audio_s:
            self.audio_ms.inc(int(1000 * audio_s))
        for result in results:
            self.units[result["status"]].inc()
            self._progress.count(result["status"])
            yield result

    def finish_bundle(self):
        # A side effect only (the DaskRunner drops finish_bundle's outputs): the last counts.
        self._progress.flush()


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
        self.job, self.output, self.run_id, self.overwrite = job, output, run_id, overwrite

    def expand(self, pcoll):
        if isinstance(pcoll, beam.pvalue.PBegin):
            pcoll = pcoll | "ListTracks" >> beam.Create(self.tracks or [])
        return (
            pcoll
            | "SpreadOverWorkers" >> beam.Reshuffle()
            | "Separate" >> beam.ParDo(SeparateTrackFn(self.job, self.output, self.run_id, self.overwrite))
        )


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


class _WriteShardFn(beam.DoFn):
    def __init__(self, write: Callable[[int, list], dict]):
        self.write = write

    def process(self, keyed):
        shard, items = keyed
        yield self.write(shard, list(items))


class WriteShards(beam.PTransform):
    """Elements -> ``shards`` table files written by the workers -> one combined summary.

    ``Map(shard of key(element)) -> GroupByKey -> ParDo(write(shard, elements) -> summary) ->
    CombineGlobally(combine)``: ``write`` stages one shard file (or several tables' shards of
    the same elements) atomically under the job's folder and returns its summary; the driver
    publishes the staged shards (:func:`pipelines.tables.publish_shards`). A linear chain,
    written from ``process`` only.
    """

    def __init__(self, key: Callable[[object], str], shards: int, write: Callable[[int, list], dict],
                 combine: beam.CombineFn | Callable[[Iterable], object]):
        super().__init__()
        self.key, self.shards, self.write, self.combine = key, max(1, shards), write, combine

    def expand(self, elements):
        key, shards = self.key, self.shards
        return (
            elements
            | "ByShard" >> beam.Map(lambda e: (shard_of(key(e), shards), e))
            | "GroupShards" >> beam.GroupByKey()
            | "WriteShards" >> beam.ParDo(_WriteShardFn(self.write))
            | "Summarize" >> beam.CombineGlobally(self.combine)
        )


def _track_id(result: dict) -> str:
    return result["track_id"]


class WriteMetadata(beam.PTransform):
    """Unit results -> the run's metadata (and features) shards and its summary, written by
    the workers: ``WriteShards(by track id) -> Map(write the summary) -> Map(remove
    temporaries)``. Every unit of a track lands in one of ``shards`` Parquet files
    (:func:`pipelines.run_files.write_shard`), staged under the run until
    :func:`pipelines.run_files.publish` moves them into ``<output>/metadata/``; the summary
    (counts, audio seconds, the first errors) is one small JSON the driver reads.
    """

    def __init__(self, output: str, run_id: str, shards: int):
        super().__init__()
        self.output, self.run_id, self.shards = output, run_id, shards

    def expand(self, results):
        output, run_id = self.output, self.run_id
        return (
            results
            | "Shards" >> WriteShards(_track_id, self.shards, functools.partial(write_shard, output, run_id),
                                      _MergeSummaries())
            | "WriteSummary" >> beam.Map(lambda summary: write_summary(output, run_id, summary))
            # Every unit is written by now: temporary files left are killed writers'.
            | "RemoveTemporaries" >> beam.Map(lambda _: remove_orphaned_temp_files(output))
        )
