"""Build and run the catalog job; print progress and a final summary.

>>> from pipelines.config import load_job_config
>>> from pipelines.run import run_job
>>> summary = run_job(load_job_config("configs/hpss.yaml"), ["data/**/*.flac"], "out/")

Runners (any Beam pipeline option can be passed in ``beam_args``):

- no ``--runner`` or ``--runner=DirectRunner``: Beam's in-process FnApiRunner, named
  explicitly. (Beam 2.77's DirectRunner would first try to download and start its Prism
  runner binary, and only fall back to the FnApiRunner when that fails.)
  ``--direct_num_workers=N --direct_running_mode=multi_processing`` uses N processes.
- ``--runner=DaskRunner --dask_client_address=HOST:PORT``: a ``dask.distributed`` cluster.
- ``--runner=DataflowRunner --project ... --region ... --temp_location gs://... --setup_file
  ./setup.py``: Google Cloud Dataflow.
"""
from __future__ import annotations

import contextlib
import json
import logging
import os
import sys
import threading
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TextIO

import apache_beam as beam
import fsspec
import pyarrow as pa
from apache_beam.options.pipeline_options import (
    DirectOptions,
    PipelineOptions,
    SetupOptions,
    StandardOptions,
    WorkerOptions,
)
from apache_beam.portability import python_urns
from apache_beam.runners.portability.fn_api_runner import FnApiRunner

from . import sepflow_version
from .config import ConfigError, JobConfig
from .io import InputError, join_uri, plan_inputs
from .metadata import (
    METADATA_DIR,
    publish,
    read_input_reports,
    read_metadata,
    read_summary,
    run_dir,
)
from .transforms import MatchCatalog, SeparateCatalog, WriteMetadata

__all__ = ["RunSummary", "build_pipeline", "describe_runner", "make_runner", "pipeline_options", "run_job"]

_LOG = logging.getLogger("sepflow")
_IN_PROCESS_NAMES = {"directrunner", "direct", "fnapirunner"}
_RUNNER_PATHS = {"daskrunner": "apache_beam.runners.dask.dask_runner.DaskRunner"}


def new_run_id() -> str:
    return f"{datetime.now(UTC):%Y%m%dT%H%M%SZ}-{uuid.uuid4().hex[:6]}"


#: On the DaskRunner each input's listing is split into this many shards (unless
#: ``--dask_npartitions`` says how many): they are the partitions the tracks are separated in.
DASK_MATCH_SHARDS = 16


def match_shards(options: PipelineOptions) -> int:
    """Shards of each input's listing: 1, except on the DaskRunner, whose ``Reshuffle`` does
    not spread elements (partitions are fixed where the pipeline's ``Create`` makes them)."""
    if _runner_name(options) != "daskrunner":
        return 1
    from apache_beam.runners.dask.dask_runner import DaskOptions

    return getattr(options.view_as(DaskOptions), "npartitions", None) or DASK_MATCH_SHARDS


def pipeline_options(beam_args: Sequence[str], n_inputs: int) -> PipelineOptions:
    """Beam options from the command line, with the defaults this job needs."""
    options = PipelineOptions(list(beam_args))
    standard = options.view_as(StandardOptions)
    if not standard.runner:
        standard.runner = "DirectRunner"
    # Workers import sepops/pipelines as installed packages; nothing from __main__ is needed.
    options.view_as(SetupOptions).save_main_session = False
    worker = options.view_as(WorkerOptions)
    if not worker.default_sdk_harness_log_level:
        # Beam's SDK workers log every connection step at INFO (pass the flag to see them).
        worker.default_sdk_harness_log_level = "WARNING"
    if _runner_name(options) == "daskrunner":
        from apache_beam.runners.dask.dask_runner import DaskOptions

        dask = options.view_as(DaskOptions)
        # The DaskRunner's default puts up to 128 elements in one partition. The pipeline's
        # one Create holds a (pattern, shard) per listing shard: one partition each, and the
        # tracks of a shard are then separated in its partition.
        shards = getattr(dask, "npartitions", None) or DASK_MATCH_SHARDS
        if not getattr(dask, "partition_size", None):
            dask.npartitions = max(1, n_inputs * shards)
    return options


def _runner_name(options: PipelineOptions) -> str:
    runner = options.view_as(StandardOptions).runner or "DirectRunner"
    if not isinstance(runner, str):
        runner = type(runner).__name__
    return runner.rsplit(".", 1)[-1].lower()


def make_runner(options: PipelineOptions):
    """The runner object for ``options``; DirectRunner means the in-process FnApiRunner."""
    name = _runner_name(options)
    if name in _IN_PROCESS_NAMES:
        direct = options.view_as(DirectOptions)
        if (direct.direct_num_workers or 1) > 1 and direct.direct_running_mode == "in_memory":
            # FnApiRunner ignores extra workers in in_memory mode; say so instead of silently.
            _LOG.warning("--direct_num_workers > 1 needs --direct_running_mode=multi_processing (or multi_threading)")
        from .sdk_worker import QuietWorkerLogs

        # The runner logs what its workers ship to it under this logger: the same filter.
        worker_logs = logging.getLogger("apache_beam.runners.portability.local_job_service")
        if not any(isinstance(f, QuietWorkerLogs) for f in worker_logs.filters):
            worker_logs.addFilter(QuietWorkerLogs())
        return QuietWorkersRunner()
    from apache_beam.runners.runner import create_runner

    # Beam's runner-name table lacks the DaskRunner; its full path works.
    runner = options.view_as(StandardOptions).runner
    return create_runner(_RUNNER_PATHS.get(name, runner))


class QuietWorkersRunner(FnApiRunner):
    """The FnApiRunner, whose multi-process workers run :mod:`pipelines.sdk_worker` (Beam's
    worker without its start-up chatter; ``sepflow run -v`` shows it)."""

    def run_via_runner_api(self, pipeline_proto, options):
        for env in pipeline_proto.components.environments.values():
            if env.urn == python_urns.SUBPROCESS_SDK:
                env.payload = env.payload.replace(b"apache_beam.runners.worker.sdk_worker_main", b"pipelines.sdk_worker")
        return super().run_via_runner_api(pipeline_proto, options)


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


def describe_runner(options: PipelineOptions) -> str:
    """The runner as the user chose it, for the summary: its name as given (DirectRunner by
    default) and, for the local runner, the mode and workers; for Dask, the scheduler."""
    runner = options.view_as(StandardOptions).runner or "DirectRunner"
    name = runner if isinstance(runner, str) else type(runner).__name__
    name = name.rsplit(".", 1)[-1]
    key = name.lower()
    if key in _IN_PROCESS_NAMES:
        direct = options.view_as(DirectOptions)
        mode = direct.direct_running_mode or "in_memory"
        # As the FnApiRunner counts them: 0 means one per CPU; in_memory runs one.
        workers = 1 if mode == "in_memory" else (direct.direct_num_workers or os.cpu_count() or 1)
        return f"{name} ({mode}, {workers} worker{'s' if workers != 1 else ''})"
    if key == "daskrunner":
        from apache_beam.runners.dask.dask_runner import DaskOptions

        address = getattr(options.view_as(DaskOptions), "address", None)
        return f"{name} ({address or 'a local Dask cluster'})"
    return name


def summary_of(pipeline_summary: dict, run_id: str, output: str, runner: str, wall_s: float) -> RunSummary:
    """The run's summary from the one the pipeline wrote (``metadata.write_shard``)."""
    keys = ("tracks_ok", "tracks_error", "tracks_skipped", "units_ok", "units_error", "units_skipped",
            "stems_written", "audio_s", "errors", "errors_total")
    return RunSummary(run_id=run_id, output=output, runner=runner, wall_s=wall_s,
                      **{k: pipeline_summary[k] for k in keys})


class _ProgressLine:
    """Sums the progress files the workers write (``metadata.write_progress``, one per DoFn
    instance) and prints one status line. Watching storage works the same for every runner
    and scheme, and the listing is of the workers, never of the catalog."""

    def __init__(self, output: str, run_id: str, stream: TextIO, interval_s: float):
        self.progress_dir = join_uri(run_dir(output, run_id), "progress")
        self.stream = stream
        self.interval_s = interval_s
        self.started = time.time()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="sepflow-progress", daemon=True)
        self._last = None
        self._tty = hasattr(stream, "isatty") and stream.isatty()

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join(timeout=5)
        self._report(final=True)
        if self._tty:  # end the line; one that never counted anything is erased
            self.stream.write("\n" if self._last else "\r\033[K")
            self.stream.flush()

    def _counts(self) -> dict[str, int]:
        fs, path = fsspec.core.url_to_fs(self.progress_dir)
        fs.invalidate_cache()
        totals = {"ok": 0, "error": 0, "skipped": 0}
        try:
            paths = fs.ls(path, detail=False)
        except FileNotFoundError:
            return totals
        for p in paths:
            try:
                counts = json.loads(fs.cat_file(p))
            except (FileNotFoundError, ValueError):
                continue
            for k in totals:
                totals[k] += counts.get(k, 0)
        return totals

    def _loop(self):
        while not self._stop.wait(self.interval_s):
            self._report()

    def _report(self, final: bool = False):
        try:
            c = self._counts()
        except Exception:  # noqa: BLE001 - progress is best effort
            return
        elapsed = time.time() - self.started
        done = sum(c.values())
        if done == 0 and (final or not self._tty):
            # Nothing done (yet): no line. A job whose inputs matched nothing ends in its
            # error alone; a terminal still sees the waiting line, erased at the end.
            return
        line = (f"[sepflow] {done} (track, operator) done: {c['ok']} ok, {c['error']} error, "
                f"{c['skipped']} skipped  {elapsed:6.0f} s")
        if self._tty:
            self.stream.write("\r" + line)
            self.stream.flush()
        elif done != self._last or final:
            self.stream.write(line + "\n")
            self.stream.flush()
        self._last = done


def _modified(info: dict) -> float:
    value = info.get("mtime") or info.get("LastModified") or info.get("updated") or info.get("last_modified")
    if isinstance(value, datetime):
        return value.timestamp()
    if isinstance(value, str):
        try:
            return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
        except ValueError:
            return 0.0
    return float(value or 0.0)


def _beam_counters(result) -> dict[str, int]:
    try:
        counters = result.metrics().query()["counters"]
    except Exception:  # noqa: BLE001 - the DaskRunner has no metrics yet
        return {}
    return {
        c.key.metric.name: c.committed or c.attempted for c in counters if c.key.metric.namespace == "sepflow"
    }


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
    output = output.rstrip("/")
    if "://" not in output:
        output = os.path.abspath(output)
    overwrite = job.job.overwrite if overwrite is None else overwrite
    if not job.job.allow_output_in_input:
        _refuse_output_in_input(output, inputs)
    patterns = plan_inputs(list(inputs))
    out_fs, out_path = fsspec.core.url_to_fs(output)
    output_existed = out_fs.exists(out_path)
    if output_existed and not out_fs.isdir(out_path):
        raise InputError(f"--output {output} is a file; give a folder (or a bucket prefix) for the stems and metadata")
    run_id = new_run_id()
    options = pipeline_options(beam_args, len(patterns))
    check_runner(job, options)
    runner = make_runner(options)
    # Beam's name for it (ours only quiets the workers' logs).
    runner_name = next(c.__name__ for c in type(runner).__mro__ if c.__module__.startswith("apache_beam"))
    _LOG.info("run %s: %d inputs x %d operators with %s -> %s", run_id, len(patterns), len(job.operators), runner_name, output)

    pipeline = build_pipeline(job, patterns, output, run_id, options, runner=runner, overwrite=overwrite)
    show_progress = progress and _runner_name(options) != "dataflowrunner"
    interval = 1.0 if "://" not in output else 5.0
    watcher = (
        _ProgressLine(output, run_id, stream, interval)
        if show_progress
        else contextlib.nullcontext()
    )
    result = None
    try:
        with watcher:
            result = pipeline.run()
            result.wait_until_finish()
    finally:
        client = getattr(result, "client", None)
        if client is not None:  # the DaskRunner leaves its Client open
            client.close()
    counters = _beam_counters(result)

    written = read_summary(output, run_id)
    if written is None:
        raise RuntimeError(f"the pipeline of run {run_id} ended without writing its summary")
    reports = read_input_reports(output, run_id)
    unmatched = [
        reports[p.index]["errors"][0] if reports.get(p.index, {}).get("errors") else f"input {p.spec!r} matched no files"
        for p in patterns if not reports.get(p.index, {}).get("matched")
    ]
    if len(unmatched) == len(patterns):  # nothing to publish: keep an earlier run's table
        _remove_run_dir(output, run_id)
        if not output_existed:  # leave no empty output behind
            out_fs.rm(out_path, recursive=True)
        raise InputError("; ".join(unmatched))
    publish(output, run_id)
    _remove_run_dir(output, run_id)
    summary = summary_of(written, run_id, output, runner_name, time.perf_counter() - started)
    summary.inputs_unmatched = unmatched
    summary.beam_counters = counters
    summary.runner_chosen = describe_runner(options)
    _write_run_record(output, run_id, job, inputs, beam_args, summary)
    if progress:
        stream.write(summary.table() + "\n")
        stream.flush()
    return summary


def check_runner(job: JobConfig, options: PipelineOptions) -> None:
    """What the runner needs and can be checked before the job starts (``ConfigError``):
    a Dask scheduler that answers, and CUDA where a model operator (unet, demucs, roformer) asks for it and the job runs on
    this machine (a cluster's workers may have the GPU the driver lacks)."""
    name = _runner_name(options)
    if name == "daskrunner":
        from apache_beam.runners.dask.dask_runner import DaskOptions

        address = getattr(options.view_as(DaskOptions), "address", None)  # --dask_client_address
        if address:
            _check_reachable(address)
    if name in _IN_PROCESS_NAMES:
        from sepops import OperatorConfigError

        for spec in job.operators:
            if spec.params.get("device") == "cuda":
                from sepops.pretrained import resolve_device

                try:
                    resolve_device("cuda", operator=spec.operator)
                except OperatorConfigError as exc:
                    raise ConfigError(str(exc)) from None


def _check_reachable(address: str, timeout_s: float = 5.0) -> None:
    """Refuse a Dask scheduler address nothing answers at (the DaskRunner would try for 30 s,
    then fail in a 69-line traceback)."""
    import socket
    from urllib.parse import urlsplit

    parts = urlsplit(address if "://" in address else f"tcp://{address}")
    try:
        host, port = parts.hostname, parts.port
    except ValueError:
        host, port = None, None
    if not host or not port:
        raise ConfigError(f"--dask_client_address {address}: expected tcp://HOST:PORT")
    try:
        socket.create_connection((host, port), timeout=timeout_s).close()
    except OSError as exc:
        raise ConfigError(
            f"--dask_client_address {address}: no Dask scheduler answers there ({exc.strerror or exc}); "
            "start one (dask scheduler) or fix the address"
        ) from None


def _refuse_output_in_input(output: str, inputs: Sequence[str]) -> None:
    """An output inside a folder (or under a glob's fixed part) that the job reads would have
    its stems read back as new tracks by the next run: refuse it (``InputError``)."""
    from .io import input_folder

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
    from sepops.audio import is_local

    fs, path = fsspec.core.url_to_fs(uri)
    return os.path.realpath(path) if is_local(fs) else fs.unstrip_protocol(path).rstrip("/")


def _remove_run_dir(output: str, run_id: str) -> None:
    """The run's staging folder, empty once its shards are published, with its summary."""
    fs, path = fsspec.core.url_to_fs(run_dir(output, run_id))
    try:
        fs.rm(path, recursive=True)
    except (FileNotFoundError, OSError):
        pass


def _write_run_record(output, run_id, job, inputs, beam_args, summary) -> None:
    """``<output>/_sepflow/runs/<run_id>.json``: what was run, with what, and what came of it."""
    from sepops.audio import write_bytes_atomic

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
