"""``sepflow evaluate``: score a run's stems against reference stems, as a Beam job.

The job reads the estimates from the runs' published metadata (``<run>/metadata/*.parquet``,
rows with status ok or skipped), pairs every separated track with its reference track, and
writes one row per (track, operator, stem) with BSS Eval v3 SDR/SIR/SAR (whole signal, and
the median over 1 s frames) and SI-SDR::

    <output>/evaluation/evaluation-<evaluation_id>-part-<shard>.parquet   EVALUATION_SCHEMA
    <output>/evaluation_summary/summary-<evaluation_id>.json              the summary table

The graph is one linear chain with one leaf (the DaskRunner runs only a graph's last branch)::

    Create(metadata files) -> Reshuffle -> FlatMap(read rows) -> Map(key by reference track)
      -> GroupByKey -> ParDo(evaluate the reference track's units and oracles)
      -> Map(shard) -> GroupByKey -> ParDo(write a shard) -> CombineGlobally(counts) -> Map(write)

Keying by the *reference* track (not the estimate's track id) decodes each reference once
and computes each oracle once per reference group, however many runs or mixtures
(``mixture.flac`` and ``mixture_stereo.flac``) were separated from it. After the pipeline the
driver moves the staged shards into ``<output>/evaluation/`` and then removes the earlier
evaluation's files there (as :func:`pipelines.metadata.publish` does for metadata).
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

import fsspec
import pyarrow as pa
import pyarrow.parquet as pq

from sepops.audio import write_bytes_atomic

from .driver import (
    ProgressLine,
    job_dir,
    make_runner,
    pipeline_options,
    remove_job_dir,
    write_progress,
)
from .errors import InputError, UsageError
from .evaluation_summary import (
    earlier_summaries,
    summarize,
    summary_markdown,
    summary_record,
    summary_text,
    write_summary_record,
)
from .io import join_uri
from .references import ReferenceSet
from .scoring import ORACLES, evaluate_reference_track, parse_oracles
from .tables import (
    EVALUATION_DIR,
    EVALUATION_SCHEMA,
    METADATA_DIR,
    STATUS_ERROR,
    STATUS_OK,
    publish_shards,
    shard_of,
)

__all__ = ["EvaluationResult", "add_arguments", "build_pipeline", "evaluate", "main"]

_LOG = logging.getLogger("sepflow")
_ESTIMATE_COLUMNS = ["track_id", "label", "operator", "stem", "stem_uri", "source_uri", "status"]


# --- the Beam job -------------------------------------------------------------------------
def _staging_dir(output: str, evaluation_id: str) -> str:
    return join_uri(job_dir(output, evaluation_id), EVALUATION_DIR)


def _read_estimates(item: tuple[int, str]) -> Iterable[dict]:
    """The usable rows (ok or skipped, with a stem file) of one metadata file of run ``item[0]``."""
    run, uri = item
    fs, path = fsspec.core.url_to_fs(uri)
    with fs.open(path, "rb") as f:
        table = pq.read_table(f, columns=_ESTIMATE_COLUMNS)
    for row in table.to_pylist():
        if row["status"] in ("ok", "skipped") and row["stem_uri"] and row["stem"]:
            row["run"] = run
            yield row


def _make_dofns():
    """The DoFns, defined on first use: importing this module must not import Beam
    (``sepflow report`` reads ``EVALUATION_SCHEMA`` without it)."""
    import apache_beam as beam

    class KeyByReferenceFn(beam.DoFn):
        """(reference key, row): the references are indexed once per worker."""

        def __init__(self, references_uri: str):
            self.references_uri = references_uri

        def setup(self):
            self.references = ReferenceSet.load(self.references_uri)

        def process(self, row):
            track = self.references.pair(row["track_id"])
            yield (f"ref:{track.name}" if track else f"none:{row['track_id']}", row)

    class EvaluateFn(beam.DoFn):
        def __init__(self, references_uri, oracles, output, evaluation_id):
            self.references_uri, self.oracles = references_uri, list(oracles)
            self.output, self.evaluation_id = output, evaluation_id

        def setup(self):
            self.references = ReferenceSet.load(self.references_uri)
            self.writer = uuid.uuid4().hex
            self.counts = {"ok": 0, "error": 0, "skipped": 0}

        def process(self, keyed):
            key, rows = keyed
            out = evaluate_reference_track(key, list(rows), self.references, self.oracles, self.evaluation_id)
            units = {(r["track_id"], r["label"]): r["status"] for r in out if r["status"] == STATUS_ERROR}
            units.update({(r["track_id"], r["label"]): STATUS_OK for r in out
                          if r["status"] == STATUS_OK and (r["track_id"], r["label"]) not in units})
            for status in units.values():
                self.counts[status] += 1
            write_progress(self.output, self.evaluation_id, self.writer, self.counts)
            yield from out

    class WriteShardFn(beam.DoFn):
        def __init__(self, output, evaluation_id):
            self.output, self.evaluation_id = output, evaluation_id

        def process(self, keyed):
            shard, rows = keyed
            rows = list(rows)
            table = pa.Table.from_pylist(rows, schema=EVALUATION_SCHEMA).sort_by(
                [("reference_track", "ascending"), ("label", "ascending"), ("track_id", "ascending"),
                 ("stem", "ascending")]
            )
            sink = pa.BufferOutputStream()
            pq.write_table(table, sink, compression="zstd")
            uri = join_uri(_staging_dir(self.output, self.evaluation_id), f"part-{shard:05d}.parquet")
            write_bytes_atomic(uri, sink.getvalue().to_pybytes())
            yield {"rows": len(rows), "errors": sum(r["status"] == STATUS_ERROR for r in rows), "shards": 1}

    return KeyByReferenceFn, EvaluateFn, WriteShardFn


def _sum_counts(counts: Iterable[dict]) -> dict:
    total = {"rows": 0, "errors": 0, "shards": 0}
    for c in counts:
        for k in total:
            total[k] += c[k]
    return total


def build_pipeline(metadata_files, references_uri, oracles, output, evaluation_id, shards, options, runner=None):
    """The evaluation's graph: one linear chain (see the module's docstring). It holds the
    runs' metadata file names (a few per run), never the list of tracks."""
    import apache_beam as beam

    key_fn, evaluate_fn, write_fn = _make_dofns()
    done_uri = join_uri(job_dir(output, evaluation_id), "done.json")
    pipeline = beam.Pipeline(runner=runner, options=options)
    _ = (
        pipeline
        | "MetadataFiles" >> beam.Create(metadata_files)
        | "SpreadFiles" >> beam.Reshuffle()
        | "ReadEstimates" >> beam.FlatMap(_read_estimates)
        | "KeyByReference" >> beam.ParDo(key_fn(references_uri))
        | "GroupByReference" >> beam.GroupByKey()
        | "Evaluate" >> beam.ParDo(evaluate_fn(references_uri, oracles, output, evaluation_id))
        | "ByShard" >> beam.Map(lambda r: (shard_of(r["reference_track"] or r["track_id"], shards), r))
        | "GroupShards" >> beam.GroupByKey()
        | "WriteShards" >> beam.ParDo(write_fn(output, evaluation_id))
        | "Count" >> beam.CombineGlobally(_sum_counts)
        | "WriteDone" >> beam.Map(lambda c: write_bytes_atomic(done_uri, json.dumps(c).encode("utf-8")))
    )
    return pipeline


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


def _publish(output: str, evaluation_id: str) -> tuple[list[str], list[str]]:
    """Move the staged shards into ``<output>/evaluation/``; return them and the earlier
    evaluations' files there (tables and summaries), which go once the new summary is written."""
    return publish_shards(
        _staging_dir(output, evaluation_id), join_uri(output, EVALUATION_DIR), f"evaluation-{evaluation_id}",
        old_suffixes=(".parquet", ".json"),
    )


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


def _new_evaluation_id() -> str:
    return f"{datetime.now(UTC):%Y%m%dT%H%M%SZ}-{uuid.uuid4().hex[:6]}"


def _absolute(uri: str) -> str:
    uri = uri.rstrip("/") or uri
    return uri if "://" in uri else os.path.abspath(uri)


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
        Any of :data:`ORACLES`.
    output : str, optional
        Where ``evaluation/`` is written; default the first of ``estimates``.
    beam_args : sequence of str
        Beam pipeline options (the runner defaults to the in-process FnApiRunner, named).
    shards : int
        Parquet files the table is written as.

    Raises
    ------
    UsageError
        Bad references, runs without metadata, unknown oracles: nothing ran.
    """
    started = time.perf_counter()
    stream = stream or sys.stderr
    if not estimates:
        raise UsageError("missing --estimates (the --output of a sepflow run)")
    estimates = [_absolute(e) for e in estimates]
    references = _absolute(references)
    oracles = parse_oracles(",".join(oracles))
    output = _absolute(output or estimates[0])
    reference_set = ReferenceSet.load(references)  # validates before any work
    files = _metadata_files(estimates)
    evaluation_id = _new_evaluation_id()
    options = pipeline_options(beam_args, len(files))
    runner = make_runner(options)
    _LOG.info("evaluation %s: %d runs against %d reference tracks (%s) with %s -> %s", evaluation_id,
              len(estimates), len(reference_set.tracks), references, type(runner).__name__, output)
    pipeline = build_pipeline(files, references, oracles, output, evaluation_id, max(1, shards), options, runner)
    watcher = ProgressLine(output, evaluation_id, stream, 1.0 if "://" not in output else 5.0) if progress else None
    result = None
    try:
        if watcher:
            watcher.__enter__()
        result = pipeline.run()
        result.wait_until_finish()
    finally:
        if watcher:
            watcher.__exit__(None, None, None)
        client = getattr(result, "client", None)
        if client is not None:  # the DaskRunner leaves its Client open
            client.close()
    published, earlier = _publish(output, evaluation_id)
    table = (
        pa.concat_tables([_read_one(p, output) for p in published]) if published
        else EVALUATION_SCHEMA.empty_table()
    )
    summary = summarize(table)
    errors = [m for m, s in zip(table.column("error_message").to_pylist(), table.column("status").to_pylist())
              if s == STATUS_ERROR]
    summary_uri = write_summary_record(output, summary_record(
        evaluation_id, estimates=estimates, references=references, oracles=oracles, beam_args=beam_args,
        rows=table.num_rows, errors=errors, summary=summary,
    ))
    earlier += earlier_summaries(output, summary_uri)
    # The new table and summary are in place: only now do the earlier evaluation's files go.
    fs, _ = fsspec.core.url_to_fs(output)
    for path in earlier:
        fs.rm_file(path)
    remove_job_dir(output, evaluation_id)
    _remove_empty_dirs(fs, [join_uri(output, "_sepflow", "runs"), join_uri(output, "_sepflow")])
    return EvaluationResult(evaluation_id, output, table.num_rows, len(errors), summary, sorted(set(errors)),
                            time.perf_counter() - started, published + [summary_uri])


def _read_one(path: str, output: str) -> pa.Table:
    fs, _ = fsspec.core.url_to_fs(output)
    with fs.open(path, "rb") as f:
        return pq.read_table(f, columns=["label", "operator", "stem", "reference_stem", "is_oracle", "status", "sdr",
                                         "sdr_frames_median", "sir", "sar", "si_sdr", "error_message"])


def _remove_empty_dirs(fs, uris: Sequence[str]) -> None:
    """Remove the staging folders the evaluation made when nothing else is in them (an output
    that is not a run's must not keep an empty ``_sepflow/``)."""
    for uri in uris:
        try:
            path = fsspec.core.url_to_fs(uri)[1]
            if not fs.ls(path, detail=False):
                fs.rmdir(path)
        except (FileNotFoundError, OSError):
            pass


# --- the command --------------------------------------------------------------------------
DESCRIPTION = """\
Score the stems of one or more `sepflow run` outputs against reference stems, as a Beam job.

Every separated track is paired with a reference track by its track id: the longest prefix
folder of the id that is a reference track (loop_1101/mixture -> loop_1101), or the id itself.
Stems are matched by name when all of an operator's stem names are reference stems; otherwise
(ICA's source_*, REPET's background/foreground, unsupervised NMF's repeating/non_repeating)
by the best assignment: the permutation with the highest mean SDR over the manifest's first
group of that size (a loop's accompaniment/lead), or, without a manifest, over every subset
of the track's reference stems of that size.

Scores per (track, operator, stem): BSS Eval v3 SDR/SIR/SAR over the whole signal and their
medians over 1 s frames (silent frames excluded), and SI-SDR. Estimates and references that
differ in channel count are both downmixed to mono; rates are matched with soxr.

Oracles (--oracles ibm,irm,mix): per reference track and per reference group its operators were
matched to, the ideal binary and ratio masks (the true stems' magnitudes, 2048-point STFT) applied
to the mixture the runs separated (one with the references' channel count first), and `mix`, the
mixture itself as every stem's estimate (the floor). Their rows have is_oracle = true.

References (--references):
  <folder>/<track>/stems/<stem>.flac   the validation set's layout (mixture*.flac are not stems)
  <folder>/<track>/<stem>.wav          musdb's layout (any audio extension)
  <folder>/manifest.json               a manifest of pieces[].files.stems, with stem groups
                                       `stems` (assignment's candidates) and `hpss_stems`

Output (default: the first --estimates):
  <output>/evaluation/evaluation-<id>-part-*.parquet   one row per (track, operator, stem)
  <output>/evaluation_summary/summary-<id>.json        the summary table printed at the end
Re-running replaces the previous evaluation's files there.

Any other flag must be a Beam pipeline option (a misspelled one stops the command, exit 2); the
default runner is the in-process FnApiRunner (--runner=DirectRunner), as for `sepflow run`.

example (from the checkout, with the validation set in ../shared/data):
  sepflow run --config configs/hpss.yaml --input '../shared/data/loop_*/mixture.flac' --output out/hpss
  sepflow evaluate --estimates out/hpss --references ../shared/data/manifest.json --oracles ibm,irm,mix
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The flags of ``sepflow evaluate`` (unknown ones are Beam pipeline options)."""
    parser.description = DESCRIPTION
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.add_argument("--estimates", action="append", default=[], metavar="RUN",
                        help="the --output of a sepflow run (repeat for several runs; their labels should differ)")
    parser.add_argument("--references", metavar="FOLDER_OR_MANIFEST",
                        help="reference stems: a folder (<track>/stems/<stem>.flac or <track>/<stem>.wav) "
                             "or a manifest.json")
    parser.add_argument("--oracles", default="", metavar="NAMES",
                        help=f"comma-separated baselines to add: {', '.join(ORACLES)} (ideal binary / ratio "
                             "mask from the true stems; the mixture itself as every stem)")
    parser.add_argument("-o", "--output", metavar="URI",
                        help="where evaluation/ is written (default: the first --estimates)")
    parser.add_argument("--markdown", action="store_true", help="print the summary as a Markdown table")
    parser.add_argument("--shards", type=int, default=1, help="Parquet files of the table (default 1)")
    parser.add_argument("--no-progress", "--no_progress", dest="progress", action="store_false",
                        help="do not print the live progress line on stderr")
    parser.add_argument("--strict", action="store_true", help="exit with status 3 when any row is an error")
    parser.add_argument("-v", "--verbose", action="store_true", help="log Beam's and sepflow's progress messages")


def main(args: argparse.Namespace, beam_args: list[str]) -> int:
    """Run ``sepflow evaluate``; return the exit status (0 ok, 2 usage error, 3 errors with --strict)."""
    missing = [flag for flag, value in (("--estimates", args.estimates), ("--references", args.references))
               if not value]
    if missing:
        print(f"sepflow evaluate: missing {', '.join(missing)}; see sepflow evaluate --help", file=sys.stderr)
        return 2
    try:
        result = evaluate(
            args.estimates, args.references, oracles=parse_oracles(args.oracles), output=args.output,
            beam_args=beam_args, shards=args.shards, progress=args.progress,
        )
    except UsageError as exc:
        print(f"sepflow evaluate: {exc}", file=sys.stderr)
        return 2
    _print_result(result, args.markdown)
    if args.strict and result.errors:
        return 3
    return 0


def _print_result(result: EvaluationResult, markdown: bool) -> None:
    """The summary table on stdout, or, when no row was scored, the errors in its place (a
    table of headers only says nothing); the counts and the first errors on stderr."""
    shown = 10
    if result.summary:
        print(summary_markdown(result.summary) if markdown else summary_text(result.summary))
    else:
        print(f"no scores: all {result.rows} rows are errors:" if result.rows
              else "no scores: the runs have no separated stems to evaluate")
        for message in result.error_messages[:shown]:
            print(f"  {message}")
    print(f"[sepflow] evaluation {result.evaluation_id}: {result.rows} rows, {result.errors} errors, "
          f"{result.wall_s:.1f} s -> {join_uri(result.output, EVALUATION_DIR)}", file=sys.stderr)
    if result.summary:
        for message in result.error_messages[:shown]:
            print(f"[sepflow] error: {message}", file=sys.stderr)
    if len(result.error_messages) > shown:
        print(f"[sepflow] ... {len(result.error_messages) - shown} more distinct errors in the table's "
              "error_message column", file=sys.stderr)
