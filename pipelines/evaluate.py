"""``sepflow evaluate``'s job: score a run's stems against reference stems, as a Beam job.

The job reads the estimates from the runs' published metadata (``<run>/metadata/*.parquet``,
rows with status ok or skipped), pairs every separated track with its reference track, and
writes one row per (track, operator, stem) with BSS Eval v3 SDR/SIR/SAR (whole signal, and
the median over 1 s frames) and SI-SDR::

    <output>/evaluation/evaluation-<evaluation_id>-part-<shard>.parquet   EVALUATION_SCHEMA
    <output>/evaluation_summary/summary-<evaluation_id>.json              the summary table

The graph is one linear chain with one leaf (the DaskRunner runs only a graph's last branch)::

    Create(metadata files) -> Reshuffle -> FlatMap(read rows) -> ParDo(key by reference track)
      -> GroupByKey -> ParDo(evaluate the reference track's units and oracles)
      -> WriteShards(by reference track: Map(shard) -> GroupByKey -> ParDo(write a shard)
         -> CombineGlobally(counts)) -> Map(write)

Keying by the *reference* track (not the estimate's track id) decodes each reference once
and computes each oracle once per reference group, however many runs or mixtures
(``mixture.flac`` and ``mixture_stereo.flac``) were separated from it. The work on one
reference track is Beam-free (:mod:`pipelines.scoring`, :mod:`pipelines.references`); the
summary is :mod:`pipelines.evaluation_summary`'s and the command :mod:`pipelines.cli_evaluate`'s.
After the pipeline the driver moves the staged shards into ``<output>/evaluation/``, writes
the summary record, and only then removes the earlier evaluation's files there (the life cycle
of :mod:`pipelines.driver`).
"""
from __future__ import annotations

import functools
import json
import logging
import os
import sys
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import apache_beam as beam
import fsspec
import pyarrow as pa
import pyarrow.parquet as pq

from sepops.audio import write_bytes_atomic

from .driver import (
    ProgressLine,
    job_dir,
    make_runner,
    new_job_id,
    pipeline_options,
    remove_files,
    remove_job_dir,
    run_pipeline,
)
from .errors import InputError, UsageError
from .evaluation_summary import (
    SUMMARY_COLUMNS,
    earlier_summaries,
    summarize,
    summary_record,
    write_summary_record,
)
from .io import join_uri
from .references import ReferenceSet
from .scoring import evaluate_reference_track, parse_oracles
from .tables import (
    EVALUATION_DIR,
    EVALUATION_SCHEMA,
    METADATA_DIR,
    STATUS_ERROR,
    STATUS_OK,
    STATUS_SKIPPED,
    publish_shards,
    write_shard_table,
)
from .transforms import WorkerProgress, WriteShards

__all__ = [
    "EvaluateFn",
    "EvaluationResult",
    "KeyByReferenceFn",
    "build_pipeline",
    "evaluate",
    "read_estimates",
    "write_evaluation_shard",
]

_LOG = logging.getLogger("sepflow")

_ESTIMATE_COLUMNS = ["track_id", "label", "operator", "stem", "stem_uri", "source_uri", "status"]
#: The order of the rows in each shard of the table.
ROW_ORDER = [("reference_track", "ascending"), ("label", "ascending"), ("track_id", "ascending"),
             ("stem", "ascending")]


# --- the Beam job -------------------------------------------------------------------------
def _staging_dir(output: str, evaluation_id: str) -> str:
    return join_uri(job_dir(output, evaluation_id), EVALUATION_DIR)


def read_estimates(item: tuple[int, str]) -> Iterable[dict]:
    """The usable rows (ok or skipped, with a stem file) of one metadata file of run ``item[0]``."""
    run, uri = item
    fs, path = fsspec.core.url_to_fs(uri)
    with fs.open(path, "rb") as f:
        table = pq.read_table(f, columns=_ESTIMATE_COLUMNS)
    for row in table.to_pylist():
        if row["status"] in (STATUS_OK, STATUS_SKIPPED) and row["stem_uri"] and row["stem"]:
            row["run"] = run
            yield row


class KeyByReferenceFn(beam.DoFn):
    """(reference key, row): the references are indexed once per worker."""

    def __init__(self, references_uri: str):
        self.references_uri = references_uri

    def setup(self):
        self.references = ReferenceSet.load(self.references_uri)

    def process(self, row):
        track = self.references.pair(row["track_id"])
        yield (f"ref:{track.name}" if track else f"none:{row['track_id']}", row)


def unit_statuses(rows: Iterable[dict]) -> list[str]:
    """The status of each (track, label) unit among a reference track's rows (oracles are
    units too): error when any of its rows is, else ok."""
    units = {(r["track_id"], r["label"]): r["status"] for r in rows if r["status"] == STATUS_ERROR}
    units.update({(r["track_id"], r["label"]): STATUS_OK for r in rows
                  if r["status"] == STATUS_OK and (r["track_id"], r["label"]) not in units})
    return list(units.values())


class EvaluateFn(beam.DoFn):
    """(reference key, its rows) -> the evaluation rows of that reference track
    (:func:`pipelines.scoring.evaluate_reference_track`), its units counted for the progress line."""

    def __init__(self, references_uri: str, oracles: Sequence[str], output: str, evaluation_id: str):
        self.references_uri, self.oracles = references_uri, list(oracles)
        self.output, self.evaluation_id = output, evaluation_id

    def setup(self):
        self.references = ReferenceSet.load(self.references_uri)
        self.progress = WorkerProgress(self.output, self.evaluation_id)

    def process(self, keyed):
        key, rows = keyed
        out = evaluate_reference_track(key, list(rows), self.references, self.oracles, self.evaluation_id)
        # Written after every reference track (each takes seconds), not at most once a second:
        # the line then counts all of a track's units at once.
        self.progress.count_all(unit_statuses(out))
        yield from out


def write_evaluation_shard(staged_dir: str, shard: int, rows: list[dict]) -> dict:
    """Stage one shard of the table (sorted by :data:`ROW_ORDER`, zstd); return its counts."""
    write_shard_table(staged_dir, shard, rows, EVALUATION_SCHEMA, ROW_ORDER)
    return {"rows": len(rows), "errors": sum(r["status"] == STATUS_ERROR for r in rows), "shards": 1}


def _shard_key(row: dict) -> str:
    """Every row of a reference track in one shard (an unpaired track's by its id)."""
    return row["reference_track"] or row["track_id"]


def _sum_counts(counts: Iterable[dict]) -> dict:
    total = {"rows": 0, "errors": 0, "shards": 0}
    for c in counts:
        for k in total:
            total[k] += c[k]
    return total


def _write_done(counts: dict, uri: str) -> None:
    write_bytes_atomic(uri, json.dumps(counts).encode("utf-8"))


def build_pipeline(metadata_files, references_uri, oracles, output, evaluation_id, shards, options, runner=None):
    """The evaluation's graph: one linear chain (see the module's docstring). It holds the
    runs' metadata file names (a few per run), never the list of tracks."""
    write = functools.partial(write_evaluation_shard, _staging_dir(output, evaluation_id))
    pipeline = beam.Pipeline(runner=runner, options=options)
    _ = (
        pipeline
        | "MetadataFiles" >> beam.Create(metadata_files)
        | "SpreadFiles" >> beam.Reshuffle()
        | "ReadEstimates" >> beam.FlatMap(read_estimates)
        | "KeyByReference" >> beam.ParDo(KeyByReferenceFn(references_uri))
        | "GroupByReference" >> beam.GroupByKey()
        | "Evaluate" >> beam.ParDo(EvaluateFn(references_uri, oracles, output, evaluation_id))
        | "Shards" >> WriteShards(_shard_key, shards, write, _sum_counts)
        | "WriteDone" >> beam.Map(_write_done, join_uri(job_dir(output, evaluation_id), "done.json"))
    )
    return pipeline


# --- the driver ---------------------------------------------------------------------------
@dataclass
class EvaluationResult:
    """What an evaluation wrote: its id, output, rows and error rows, and the summary."""

    evaluation_id: str
    output: str
    rows: int
    errors: int
    summary: list[dict]
    error_messages: list[str]
    wall_s: float
    files: list[str]


@dataclass
class _Plan:
    """An evaluation's validated inputs: absolute URIs, oracles, the runs' metadata files."""

    estimates: list[str]
    references: str
    oracles: list[str]
    output: str
    reference_set: ReferenceSet
    files: list[tuple[int, str]]


def _absolute(uri: str) -> str:
    uri = uri.rstrip("/") or uri
    return uri if "://" in uri else os.path.abspath(uri)


def _metadata_files(estimates: Sequence[str]) -> list[tuple[int, str]]:
    """(run index, metadata file) of every ``--estimates``: a listing of each run's shards."""
    files = []
    for index, run in enumerate(estimates):
        fs, path = fsspec.core.url_to_fs(join_uri(run, METADATA_DIR))
        try:
            found = sorted(p for p in fs.ls(path, detail=False) if p.endswith(".parquet"))
        except (FileNotFoundError, NotADirectoryError):
            found = []
        if not found:
            raise InputError(f"--estimates {run}: no published metadata ({join_uri(run, METADATA_DIR)}/*.parquet); "
                             "is it the --output of a finished sepflow run?")
        files += [(index, fs.unstrip_protocol(p) if "://" in run else p) for p in found]
    return files


def _plan(estimates: Sequence[str], references: str, oracles: Sequence[str], output: str | None) -> _Plan:
    """Check the flags and inputs before any work (``UsageError``, ``InputError``)."""
    if not estimates:
        raise UsageError("missing --estimates (the --output of a sepflow run)")
    estimates = [_absolute(e) for e in estimates]
    references = _absolute(references)
    oracles = parse_oracles(",".join(oracles))
    output = _absolute(output or estimates[0])
    reference_set = ReferenceSet.load(references)
    return _Plan(estimates, references, oracles, output, reference_set, _metadata_files(estimates))


def _run(plan: _Plan, evaluation_id: str, beam_args: Sequence[str], shards: int, progress: bool, stream) -> None:
    """Build the job's pipeline and run it to its end, with the progress line on ``stream``."""
    options = pipeline_options(beam_args, len(plan.files))
    runner = make_runner(options)
    _LOG.info("evaluation %s: %d runs against %d reference tracks (%s) with %s -> %s", evaluation_id,
              len(plan.estimates), len(plan.reference_set.tracks), plan.references, type(runner).__name__,
              plan.output)
    pipeline = build_pipeline(plan.files, plan.references, plan.oracles, plan.output, evaluation_id, shards,
                              options, runner)
    run_pipeline(pipeline, ProgressLine(plan.output, evaluation_id, stream) if progress else None)


def _publish(output: str, evaluation_id: str) -> tuple[list[str], list[str]]:
    """Move the staged shards into ``<output>/evaluation/``; return them and the earlier
    evaluations' files there (tables and summaries), which go once the new summary is written."""
    return publish_shards(
        _staging_dir(output, evaluation_id), join_uri(output, EVALUATION_DIR), f"evaluation-{evaluation_id}",
        old_suffixes=(".parquet", ".json"),
    )


def _read_published(output: str, paths: Sequence[str]) -> pa.Table:
    """The columns the summary needs of the shards just published (the earlier evaluation's
    files are still beside them, so the folder is not read as a whole)."""
    if not paths:
        return EVALUATION_SCHEMA.empty_table()
    fs, _ = fsspec.core.url_to_fs(output)
    tables = []
    for path in paths:
        with fs.open(path, "rb") as f:
            tables.append(pq.read_table(f, columns=[*SUMMARY_COLUMNS, "error_message"]))
    return pa.concat_tables(tables)


def _remove_empty_dirs(output: str) -> None:
    """Remove the staging folders the evaluation made when nothing else is in them (an output
    that is not a run's must not keep an empty ``_sepflow/``)."""
    fs, _ = fsspec.core.url_to_fs(output)
    for uri in (join_uri(output, "_sepflow", "runs"), join_uri(output, "_sepflow")):
        try:
            path = fsspec.core.url_to_fs(uri)[1]
            if not fs.ls(path, detail=False):
                fs.rmdir(path)
        except (FileNotFoundError, OSError):
            pass


def _finish(plan: _Plan, evaluation_id: str, beam_args: Sequence[str], started: float) -> EvaluationResult:
    """Publish the table, write the summary record, then remove the earlier evaluation's files."""
    published, earlier = _publish(plan.output, evaluation_id)
    table = _read_published(plan.output, published)
    summary = summarize(table)
    errors = [m for m, s in zip(table.column("error_message").to_pylist(), table.column("status").to_pylist())
              if s == STATUS_ERROR]
    summary_uri = write_summary_record(plan.output, summary_record(
        evaluation_id, estimates=plan.estimates, references=plan.references, oracles=plan.oracles,
        beam_args=beam_args, rows=table.num_rows, errors=errors, summary=summary,
    ))
    earlier += earlier_summaries(plan.output, summary_uri)
    # The new table and summary are in place: only now do the earlier evaluation's files go.
    remove_files(plan.output, earlier)
    remove_job_dir(plan.output, evaluation_id)
    _remove_empty_dirs(plan.output)
    return EvaluationResult(evaluation_id, plan.output, table.num_rows, len(errors), summary, sorted(set(errors)),
                            time.perf_counter() - started, published + [summary_uri])


def evaluate(
    estimates: Sequence[str],
    references: str,
    *,
    oracles: Sequence[str] = (),
    output: str | None = None,
    beam_args: Sequence[str] = (),
    shards: int = 1,
    progress: bool = True,
    stream=None,
) -> EvaluationResult:
    """Run the evaluation job and publish its table and summary.

    Parameters
    ----------
    estimates : sequence of str
        Outputs of ``sepflow run`` (their ``metadata/`` is read).
    references : str
        A folder of reference stems or a ``manifest.json`` (see :class:`ReferenceSet`).
    oracles : sequence of str
        Any of :data:`pipelines.scoring.ORACLES`.
    output : str, optional
        Where ``evaluation/`` is written; default the first of ``estimates``.
    beam_args : sequence of str
        Beam pipeline options (the runner defaults to the in-process FnApiRunner, named).
    shards : int
        Parquet files the table is written as.

    Raises
    ------
    UsageError
        Bad references, runs without metadata (``InputError``), unknown oracles: nothing ran.
    """
    started = time.perf_counter()
    plan = _plan(estimates, references, oracles, output)  # validates before any work
    evaluation_id = new_job_id()
    _run(plan, evaluation_id, beam_args, max(1, shards), progress, stream or sys.stderr)
    return _finish(plan, evaluation_id, beam_args, started)
