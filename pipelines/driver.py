"""What every job's driver does around its pipeline: ids, runners, progress, staging, clean-up.

``sepflow run`` (:mod:`pipelines.run`) and ``sepflow evaluate`` (:mod:`pipelines.evaluate`)
share one life cycle::

    job_id = new_job_id()
    options = pipeline_options(beam_args, n_inputs); runner = make_runner(options)
    result = run_pipeline(pipeline, progress=ProgressLine(output, job_id, stream))
    published, earlier = tables.publish_shards(staged, target, ...)   # new files in place
    remove_files(output, earlier); remove_job_dir(output, job_id)      # only then the old go

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
import threading
import time
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, TextIO

import fsspec
from apache_beam.options.pipeline_options import (
    DirectOptions,
    PipelineOptions,
    SetupOptions,
    StandardOptions,
    WorkerOptions,
)
from apache_beam.portability import python_urns
from apache_beam.runners.portability.fn_api_runner import FnApiRunner

from sepops.audio import write_bytes_atomic

from .errors import ConfigError
from .io import join_uri

if TYPE_CHECKING:
    from .config import JobConfig

__all__ = [
    "IN_PROCESS_RUNNERS",
    "RUNNER_PATHS",
    "ProgressLine",
    "QuietWorkersRunner",
    "beam_counters",
    "check_runner",
    "describe_runner",
    "job_dir",
    "make_runner",
    "match_shards",
    "new_job_id",
    "pipeline_options",
    "remove_files",
    "remove_job_dir",
    "run_pipeline",
    "runner_name",
    "write_progress",
]

_LOG = logging.getLogger("sepflow")
#: Runner names that mean Beam's in-process FnApiRunner.
IN_PROCESS_RUNNERS = {"directrunner", "direct", "fnapirunner"}
#: Runners Beam's runner-name table lacks, by their full path.
RUNNER_PATHS = {"daskrunner": "apache_beam.runners.dask.dask_runner.DaskRunner"}
#: Where jobs stage their shards and write their summaries, under the output.
RUNS_DIR = "_sepflow/runs"


def new_job_id() -> str:
    """A run's or an evaluation's id: its UTC start and 6 random hex digits (ids sort by time)."""
    return f"{datetime.now(UTC):%Y%m%dT%H%M%SZ}-{uuid.uuid4().hex[:6]}"


def job_dir(output: str, run_id: str) -> str:
    """Where a job stages its shards and writes its summary and progress, under the output."""
    return join_uri(output, RUNS_DIR, run_id)



def remove_job_dir(output: str, run_id: str) -> None:
    """The run's staging folder, empty once its shards are published, with its summary."""
    fs, path = fsspec.core.url_to_fs(job_dir(output, run_id))
    try:
        fs.rm(path, recursive=True)
    except (FileNotFoundError, OSError):
        pass



#: On the DaskRunner each input's listing is split into this many shards (unless
#: ``--dask_npartitions`` says how many): they are the partitions the tracks are separated in.
DASK_MATCH_SHARDS = 16


def match_shards(options: PipelineOptions) -> int:
    """Shards of each input's listing: 1, except on the DaskRunner, whose ``Reshuffle`` does
    not spread elements (partitions are fixed where the pipeline's ``Create`` makes them)."""
    if runner_name(options) != "daskrunner":
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
    if runner_name(options) == "daskrunner":
        from apache_beam.runners.dask.dask_runner import DaskOptions

        dask = options.view_as(DaskOptions)
        # The DaskRunner's default puts up to 128 elements in one partition. The pipeline's
        # one Create holds a (pattern, shard) per listing shard: one partition each, and the
        # tracks of a shard are then separated in its partition.
        shards = getattr(dask, "npartitions", None) or DASK_MATCH_SHARDS
        if not getattr(dask, "partition_size", None):
            dask.npartitions = max(1, n_inputs * shards)
    return options



def runner_name(options: PipelineOptions) -> str:
    runner = options.view_as(StandardOptions).runner or "DirectRunner"
    if not isinstance(runner, str):
        runner = type(runner).__name__
    return runner.rsplit(".", 1)[-1].lower()



def make_runner(options: PipelineOptions):
    """The runner object for ``options``; DirectRunner means the in-process FnApiRunner."""
    name = runner_name(options)
    if name in IN_PROCESS_RUNNERS:
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
    return create_runner(RUNNER_PATHS.get(name, runner))


class QuietWorkersRunner(FnApiRunner):
    """The FnApiRunner, whose multi-process workers run :mod:`pipelines.sdk_worker` (Beam's
    worker without its start-up chatter; ``sepflow run -v`` shows it)."""

    def run_via_runner_api(self, pipeline_proto, options):
        for env in pipeline_proto.components.environments.values():
            if env.urn == python_urns.SUBPROCESS_SDK:
                env.payload = env.payload.replace(b"apache_beam.runners.worker.sdk_worker_main", b"pipelines.sdk_worker")
        return super().run_via_runner_api(pipeline_proto, options)



def describe_runner(options: PipelineOptions) -> str:
    """The runner as the user chose it, for the summary: its name as given (DirectRunner by
    default) and, for the local runner, the mode and workers; for Dask, the scheduler."""
    runner = options.view_as(StandardOptions).runner or "DirectRunner"
    name = runner if isinstance(runner, str) else type(runner).__name__
    name = name.rsplit(".", 1)[-1]
    key = name.lower()
    if key in IN_PROCESS_RUNNERS:
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



def check_runner(job: JobConfig, options: PipelineOptions) -> None:
    """What the runner needs and can be checked before the job starts (``ConfigError``):
    a Dask scheduler that answers, and CUDA where a model operator (unet, demucs, roformer) asks for it and the job runs on
    this machine (a cluster's workers may have the GPU the driver lacks)."""
    name = runner_name(options)
    if name == "daskrunner":
        from apache_beam.runners.dask.dask_runner import DaskOptions

        address = getattr(options.view_as(DaskOptions), "address", None)  # --dask_client_address
        if address:
            _check_reachable(address)
    if name in IN_PROCESS_RUNNERS:
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



def write_progress(output: str, run_id: str, writer: str, counts: dict[str, int]) -> None:
    """One worker's running counts of units done (``ok``, ``error``, ``skipped``)."""
    uri = join_uri(job_dir(output, run_id), "progress", f"{writer}.json")
    write_bytes_atomic(uri, json.dumps(counts).encode("utf-8"))



class ProgressLine:
    """Sums the progress files the workers write (:func:`write_progress`, one per DoFn
    instance) and prints one status line. Watching storage works the same for every runner
    and scheme, and the listing is of the workers, never of the catalog. It looks every
    ``interval_s``: by default 1 s on a local output, 5 s on an object store (each look is a
    listing there)."""

    def __init__(self, output: str, run_id: str, stream: TextIO, interval_s: float | None = None):
        self.progress_dir = join_uri(job_dir(output, run_id), "progress")
        self.stream = stream
        self.interval_s = interval_s if interval_s is not None else (1.0 if "://" not in output else 5.0)
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



def beam_counters(result) -> dict[str, int]:
    try:
        counters = result.metrics().query()["counters"]
    except Exception:  # noqa: BLE001 - the DaskRunner has no metrics yet
        return {}
    return {
        c.key.metric.name: c.committed or c.attempted for c in counters if c.key.metric.namespace == "sepflow"
    }



def run_pipeline(pipeline, progress: ProgressLine | None = None):
    """Run ``pipeline`` to its end (printing ``progress`` meanwhile); returns Beam's result.
    The DaskRunner's client, which it leaves open, is closed."""
    result = None
    try:
        with progress or contextlib.nullcontext():
            result = pipeline.run()
            result.wait_until_finish()
    finally:
        client = getattr(result, "client", None)
        if client is not None:  # the DaskRunner leaves its Client open
            client.close()
    return result


def remove_files(output: str, paths: Sequence[str]) -> None:
    """Remove an earlier job's published files (paths on ``output``'s file system), once the
    new ones are in place: readers never lack a table."""
    fs, _ = fsspec.core.url_to_fs(output)
    for path in paths:
        fs.rm_file(path)
