"""A worker process killed in the middle of a multi-process run: on Beam's multi-process
DirectRunner (one of its SDK worker processes) and on a dask.distributed LocalCluster (one
worker, by pid). The job, or its re-run, must end with every track done exactly once and
the same stems and rows as an uninterrupted run; no temporary file is left behind."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from pipelines.cli import main
from pipelines.run import run_job
from pipelines.tables import read_metadata
from tests.jobs.catalog import assert_same_stems, comparable, tree_files

ROOT = Path(__file__).resolve().parents[2]
#: repet_sim takes about a second per 12 s mono track here: long enough to be caught working.
JOB_ARGS = ["--operator", "repet_sim", "--set", "audio.format=wav", "--set", "audio.subtype=FLOAT", "--no_progress"]


def _catalog(data_dir: Path, manifest: dict, dest: Path) -> int:
    from sepops import load_audio, save_audio

    pieces = manifest["pieces"][:8]
    for piece in pieces:
        mix, sr = load_audio(str(data_dir / piece["files"]["mixture"]))
        save_audio(str(dest / f"{piece['id']}.flac"), mix, sr)
    return len(pieces)


@pytest.fixture(scope="module")
def reference(tmp_path_factory, data_dir, manifest):
    """The catalog and an uninterrupted in-process run of the job."""
    root = tmp_path_factory.mktemp("kill")
    inputs = root / "in"
    inputs.mkdir()
    n = _catalog(data_dir, manifest, inputs)
    out = root / "reference"
    assert main(["run", "--input", str(inputs), "--output", str(out), *JOB_ARGS]) == 0
    return inputs, out, n


def _same_as_reference(out: Path, reference: Path, n: int) -> None:
    rows = read_metadata(str(out)).to_pylist()
    keys = [(r["track_id"], r["label"], r["stem"]) for r in rows]
    assert len(keys) == len(set(keys)) == 2 * n  # every track exactly once
    # A re-run reports the units the killed run finished as "skipped": the same rows else.
    for r in rows:
        assert r["status"] in ("ok", "skipped"), r
    normal = [{**r, "status": "ok"} for r in comparable(read_metadata(str(out)))]
    assert normal == comparable(read_metadata(str(reference)))
    assert_same_stems(out, reference)
    assert not [f for f in tree_files(out) if f.endswith(".tmp")]


def _wait_for_first_part(out: Path, alive, timeout: float = 240.0) -> None:
    parts = out / "_sepflow" / "parts"
    deadline = time.monotonic() + timeout
    while not list(parts.rglob("*.parquet")):
        if not alive() or time.monotonic() > deadline:
            raise AssertionError("the job ended, or never wrote a part, before a worker could be killed")
        time.sleep(0.05)


def test_a_killed_direct_runner_worker_process(reference, tmp_path):
    psutil = pytest.importorskip("psutil")
    inputs, ref_out, n = reference
    out = tmp_path / "out"
    args = ["run", "--input", str(inputs), "--output", str(out), *JOB_ARGS,
            "--runner=DirectRunner", "--direct_num_workers=2", "--direct_running_mode=multi_processing"]
    proc = subprocess.Popen([sys.executable, "-m", "pipelines.cli", *args], cwd=ROOT, start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        _wait_for_first_part(out, lambda: proc.poll() is None)
        workers = [p for p in psutil.Process(proc.pid).children(recursive=True)
                   # Beam's worker module, started through sepflow's quiet wrapper (pipelines.sdk_worker).
                   if "sdk_worker" in " ".join(p.cmdline())]
        assert workers, "no SDK worker process found"
        done_before = len(list((out / "_sepflow" / "parts").rglob("*.parquet")))
        os.kill(workers[0].pid, signal.SIGKILL)
        try:
            proc.wait(timeout=120)  # the runner either fails or finishes without that worker
            statuses = sorted({r["error_type"] or r["status"] for r in read_metadata(str(out)).to_pylist()}) \
                if (out / "metadata").exists() else "no metadata"
            print(f"direct runner after the kill: exit {proc.returncode}, {done_before}/{n} tracks done before, "
                  f"rows {statuses}")
        except subprocess.TimeoutExpired:
            print("direct runner after the kill: still waiting after 120 s, killed")  # as dead as the worker
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    assert done_before < n, "every track was done before the kill"
    # The re-run (skips what is complete) converges to the uninterrupted run.
    assert main(args) == 0
    _same_as_reference(out, ref_out, n)


def test_a_killed_dask_worker(reference, tmp_path):
    distributed = pytest.importorskip("distributed")
    inputs, ref_out, n = reference
    out = tmp_path / "out"
    from pipelines.config import load_job_config

    job = load_job_config(None, operators=["repet_sim"], overrides=["audio.format=wav", "audio.subtype=FLOAT"])
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1",
                                  dashboard_address=None) as cluster:
        beam_args = ["--runner=DaskRunner", f"--dask_client_address={cluster.scheduler_address}"]
        outcome: dict = {}

        def run():
            try:
                outcome["summary"] = run_job(job, [str(inputs)], str(out), beam_args, progress=False)
            except Exception as exc:  # noqa: BLE001 - a failed run is re-run below
                outcome["error"] = exc

        thread = threading.Thread(target=run)
        thread.start()
        _wait_for_first_part(out, thread.is_alive)
        with distributed.Client(cluster.scheduler_address) as client:
            pids = client.run(os.getpid)
        done_before = len(list((out / "_sepflow" / "parts").rglob("*.parquet")))
        os.kill(min(pids.values()), signal.SIGKILL)  # the nanny starts a new one
        thread.join(timeout=300)
        assert not thread.is_alive(), "the Dask run hung after losing a worker"
        assert done_before < n, "every track was done before the kill"
        print(f"dask after the kill: {'failed: ' + repr(outcome['error']) if 'error' in outcome else 'finished'}, "
              f"{done_before}/{n} tracks done before")
        if "error" in outcome:  # the job failed: its re-run must converge
            run_job(job, [str(inputs)], str(out), beam_args, progress=False)
    _same_as_reference(out, ref_out, n)
