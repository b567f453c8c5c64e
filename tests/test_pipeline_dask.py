"""The same job on a dask.distributed LocalCluster (2 worker processes on 127.0.0.1) through
Beam's DaskRunner: identical stems and metadata rows to the in-process run, operators built
once per worker process."""
from __future__ import annotations

from pipelines import transforms
from pipelines.metadata import read_metadata
from pipelines.run import run_job

from .test_pipeline_helpers import (
    assert_ok_rows,
    assert_same_stems,
    comparable,
    cut_catalog,
    hpss_job,
)


def test_dask_runner_reproduces_the_in_process_run(dask_cluster, tmp_path, data_dir, manifest):
    import distributed

    catalog_root = tmp_path / "catalog"
    tracks = cut_catalog(data_dir, manifest, catalog_root)
    job = hpss_job()
    inputs = [str(catalog_root / "**" / "*.flac")]

    reference = run_job(job, inputs, str(tmp_path / "direct"), progress=False)
    summary = run_job(
        job, inputs, str(tmp_path / "dask"),
        ["--runner=DaskRunner", f"--dask_client_address={dask_cluster.scheduler_address}"],
        progress=False,
    )
    assert summary.runner == "DaskRunner"
    assert (summary.tracks_ok, summary.tracks_error) == (len(tracks), 0)

    table = read_metadata(str(tmp_path / "dask"))
    assert_ok_rows(table, tracks, job)
    assert comparable(table) == comparable(reference.metadata)
    assert_same_stems(tmp_path / "dask", tmp_path / "direct")

    # One partition per track: both workers took part, and neither built the operator twice
    # although DoFn.setup ran once per partition.
    with distributed.Client(dask_cluster.scheduler_address) as client:
        builds = client.run(transforms.operator_builds)
    per_worker = [b.get(job.operators_key(), 0) for b in builds.values()]
    assert sorted(per_worker) == [1, 1], builds
