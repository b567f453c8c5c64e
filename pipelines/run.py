"""The catalog job: ``sepflow run``'s graph and driver; progress and a final summary.

>>> from pipelines.config import load_job_config
>>> from pipelines.run import run_job
>>> summary = run_job(load_job_config("configs/hpss.yaml"), ["data/**/*.flac"], "out/")

The graph (:func:`build_pipeline`) is ``MatchCatalog -> SeparateCatalog -> WriteMetadata``
(:mod:`pipelines.transforms`); around it the driver (:mod:`pipelines.driver`) checks the
inputs and the runner, shows progress, publishes the run's tables and writes its record.
"""
from __future__ import annotations

import json
import logging
import os
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TextIO

import apache_beam as beam
import fsspec
import pyarrow as pa
from apache_beam.options.pipeline_options import PipelineOptions

from sepops.audio import is_local, write_bytes_atomic

from . import sepflow_version
from .config import JobConfig
from .driver import (
    ProgressLine,
    beam_counters,
    check_runner,
    describe_runner,
    make_runner,
    match_shards,
    new_job_id,
    pipeline_options,
    remove_job_dir,
    run_pipeline,
    runner_name,
)
from .errors import InputError
from .io import input_folder, join_uri, plan_inputs
from .run_files import publish, read_input_reports, read_summary
from .tables import METADATA_DIR, read_metadata
from .transforms import MatchCatalog, SeparateCatalog, WriteMetadata

__all__ = ["RunSummary", "build_pipeline", "run_job"]

_LOG = logging.getLogger("sepflow")


@dataclass
class RunSummary:
    """What a run did. Counts of *tracks* treat a track as failed if any operator failed on it."""

    run_id: str
    output: str
    runner: str
    tracks_ok: int
    tracks_error: int
    tracks_skipped: int
    units_ok: int
    units_error: int
    units_skipped: int
    stems_written: int
    audio_s: float
    wall_s: float
    #: The first errors (``metadata.SUMMARY_ERRORS`` of them, by track id); ``errors_total``
    #: counts them all.
    errors: list = field(default_factory=list)
    errors_total: int = 0
    #: Inputs that matched no file (or could not be listed), with the reason; the others ran.
    inputs_unmatched: list = field(default_factory=list)
    #: Beam's ``sepflow`` counters (tracks, units_ok, units_error, units_skipped, audio_ms),
    #: where the runner reports metrics (not the DaskRunner).
    beam_counters: dict = field(default_factory=dict)
    #: The runner as the user chose it, in words (``runner`` is Beam's class that ran the job):
    #: "DirectRunner (multi_processing, 2 workers)", "DaskRunner (tcp://scheduler:8786)".
    runner_chosen: str = ""

    @property
    def tracks(self) -> int:
        return self.tracks_ok + self.tracks_error + self.tracks_skipped

    @property
    def metadata(self) -> pa.Table:
        """The published metadata table, read on first use (a full read of the run's rows:
        the run itself never needs it)."""
        if "_metadata" not in self.__dict__:
            self.__dict__["_metadata"] = read_metadata(self.output)
        return self.__dict__["_metadata"]

    def as_dict(self) -> dict:
        return {k: v for k, v in self.__dict__.items() if not k.startswith("_")}

    def table(self) -> str:
        """The summary as a Markdown table."""
        rows = [
            ("tracks", self.tracks),
            ("tracks ok", self.tracks_ok),
            ("tracks error", self.tracks_error),
            ("tracks skipped (already complete)", self.tracks_skipped),
            ("(track, operator) ok / error / skipped", f"{self.units_ok} / {self.units_error} / {self.units_skipped}"),
            ("stems written", self.stems_written),
            ("audio separated", f"{self.audio_s / 3600:.3f} h ({self.audio_s:.1f} s)"),
            ("wall time", f"{self.wall_s:.1f} s"),
            ("speed", self.speed()),
            ("runner", self.runner_chosen or self.runner),
            ("Beam counters", ", ".join(f"{k}={v}" for k, v in sorted(self.beam_counters.items())) or "-"),
            ("metadata", join_uri(self.output, METADATA_DIR)),
        ]
        lines = ["| sepflow run " + self.run_id + " | |", "|---|---|"]
        lines += [f"| {k} | {v} |" for k, v in rows]
        lines += [f"| input not used | {message} |" for message in self.inputs_unmatched]
        if self.errors:
            lines += ["", "| track | operator | error | message |", "|---|---|---|---|"]
            for e in self.errors[:20]:
                lines.append(f"| {e['track_id']} | {e['label']} | {e['error_type']} | {e['error_message'][:120]} |")
            if self.errors_total > 20:
                lines.append(f"| ... {self.errors_total - 20} more in {join_uri(self.output, 'dead_letter')} | | | |")
        return "\n".join(lines)

    def speed(self) -> str:
        """Audio separated per wall-clock second; a run that separated nothing says why."""
        if self.audio_s > 0 and self.wall_s > 0:
            return f"{self.audio_s / self.wall_s:.1f}x real time"
        if self.tracks and self.tracks_skipped == self.tracks:
            return f"all {self.tracks} track{'s' if self.tracks != 1 else ''} skipped (already complete)"
        return "- (no audio separated)"


def summary_of(pipeline_summary: dict, run_id: str, output: str, runner: str, wall_s: float) -> RunSummary:
    """The run's summary from the one the pipeline wrote (``run_files.write_shard``)."""
    keys = ("tracks_ok", "tracks_error", "tracks_skipped", "units_ok", "units_error", "units_skipped",
            "stems_written", "audio_s", "errors", "errors_total")
    return RunSummary(run_id=run_id, output=output, runner=runner, wall_s=wall_s,
                      **{k: pipeline_summary[k] for k in keys})


def build_pipeline(
    job: JobConfig, patterns: list, output: str, run_id: str, options: PipelineOptions, *, runner=None,
    overwrite: bool = False,
) -> beam.Pipeline:
    """The job's graph: ``MatchCatalog -> SeparateCatalog -> WriteMetadata``. It holds the
    inputs' patterns (``pipelines.io.plan_inputs``), never the list of tracks, so its size
    (what Dataflow receives) does not depend on the catalog's."""
    pipeline = beam.Pipeline(runner=runner, options=options)
    _ = (
        pipeline
        | "MatchCatalog" >> MatchCatalog(patterns, job.job.extensions, output, run_id, match_shards(options))
        | "SeparateCatalog" >> SeparateCatalog(None, job, output, run_id, overwrite)
        | "WriteMetadata" >> WriteMetadata(output, run_id, job.job.metadata_shards)
    )
    return pipeline


def run_job(
    job: JobConfig,
    inputs: Sequence[str],
    output: str,
    beam_args: Sequence[str] = (),
    *,
    overwrite: bool | None = None,
    progress: bool = True,
    stream: TextIO | None = None,
) -> RunSummary:
    """Separate every track of ``inputs`` into ``output``; return the summary.

    Per-track failures never stop the job: they become error rows and dead-letter records.
    Configuration and input errors (``ConfigError``, ``InputError``) are raised before the
    pipeline starts.
    """
    started = time.perf_counter()
    stream = stream or sys.stderr
    output = _checked_output(output, inputs, job)
    patterns = plan_inputs(list(inputs))
    fs, path = fsspec.core.url_to_fs(output)
    output_existed = fs.exists(path)
    if output_existed and not fs.isdir(path):
        raise InputError(f"--output {output} is a file; give a folder (or a bucket prefix) for the stems and metadata")
    run_id = new_job_id()
    options = pipeline_options(beam_args, len(patterns))
    check_runner(job, options)
    runner = make_runner(options)
    # Beam's name for it (ours only quiets the workers' logs).
    beam_runner = next(c.__name__ for c in type(runner).__mro__ if c.__module__.startswith("apache_beam"))
    _LOG.info("run %s: %d inputs x %d operators with %s -> %s", run_id, len(patterns), len(job.operators), beam_runner, output)
    overwrite = job.job.overwrite if overwrite is None else overwrite
    pipeline = build_pipeline(job, patterns, output, run_id, options, runner=runner, overwrite=overwrite)
    show_progress = progress and runner_name(options) != "dataflowrunner"
    watcher = ProgressLine(output, run_id, stream) if show_progress else None
    counters = beam_counters(run_pipeline(pipeline, watcher))

    written = read_summary(output, run_id)
    if written is None:
        raise RuntimeError(f"the pipeline of run {run_id} ended without writing its summary")
    unmatched = _unmatched_inputs(output, run_id, patterns, output_existed)
    publish(output, run_id)
    remove_job_dir(output, run_id)
    summary = summary_of(written, run_id, output, beam_runner, time.perf_counter() - started)
    summary.inputs_unmatched = unmatched
    summary.beam_counters = counters
    summary.runner_chosen = describe_runner(options)
    _write_run_record(output, run_id, job, inputs, beam_args, summary)
    if progress:
        stream.write(summary.table() + "\n")
        stream.flush()
    return summary


def _checked_output(output: str, inputs: Sequence[str], job: JobConfig) -> str:
    """``--output`` as the job writes it (local paths absolute); ``InputError`` when it is
    inside an input (unless the job allows it)."""
    output = output.rstrip("/")
    if "://" not in output:
        output = os.path.abspath(output)
    if not job.job.allow_output_in_input:
        _refuse_output_in_input(output, inputs)
    return output


def _unmatched_inputs(output: str, run_id: str, patterns: list, output_existed: bool) -> list[str]:
    """Why each input that matched no file did not; ``InputError`` when none matched (the
    run then publishes nothing, an earlier run's table stays, and no empty output is left)."""
    reports = read_input_reports(output, run_id)
    unmatched = [
        reports[p.index]["errors"][0] if reports.get(p.index, {}).get("errors") else f"input {p.spec!r} matched no files"
        for p in patterns if not reports.get(p.index, {}).get("matched")
    ]
    if len(unmatched) == len(patterns):
        remove_job_dir(output, run_id)
        if not output_existed:
            fs, path = fsspec.core.url_to_fs(output)
            fs.rm(path, recursive=True)
        raise InputError("; ".join(unmatched))
    return unmatched


def _refuse_output_in_input(output: str, inputs: Sequence[str]) -> None:
    """An output inside a folder (or under a glob's fixed part) that the job reads would have
    its stems read back as new tracks by the next run: refuse it (``InputError``)."""
    out = _normalised(output)
    for spec in inputs:
        folder = input_folder(spec)
        if folder is None:
            continue
        root = _normalised(folder)
        if out == root or out.startswith(root.rstrip("/") + "/"):
            raise InputError(
                f"--output {output} is inside the input {spec}: the next run would read its stems as "
                "tracks; choose another --output, or --set job.allow_output_in_input=true"
            )


def _normalised(uri: str) -> str:
    """One spelling per location: local paths (``file://`` too) resolved, others as URIs."""
    fs, path = fsspec.core.url_to_fs(uri)
    return os.path.realpath(path) if is_local(fs) else fs.unstrip_protocol(path).rstrip("/")


def _write_run_record(output, run_id, job, inputs, beam_args, summary) -> None:
    """``<output>/_sepflow/runs/<run_id>.json``: what was run, with what, and what came of it."""
    record = {
        "run_id": run_id,
        "sepflow_version": sepflow_version(),
        "inputs": list(inputs),
        "beam_args": list(beam_args),
        "config": job.to_dict(),
        "stem_layout": job.stem_layout,
        "summary": summary.as_dict(),
    }
    write_bytes_atomic(
        join_uri(output, "_sepflow", "runs", f"{run_id}.json"),
        json.dumps(record, indent=1, default=str, ensure_ascii=False).encode("utf-8"),
    )
