"""The same job on a dask.distributed LocalCluster (2 worker processes on 127.0.0.1) through
Beam's DaskRunner: identical stems and metadata rows to the in-process run, operators built
once per worker process."""
from __future__ import annotations

from pipelines.evaluate import evaluate
from pipelines.run import run_job
from pipelines.tables import read_evaluation, read_features, read_metadata
from pipelines.track import operator_builds
from tests.jobs.catalog import (
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
        builds = client.run(operator_builds)
    per_worker = [b.get(job.operators_key(), 0) for b in builds.values()]
    assert sorted(per_worker) == [1, 1], builds

    # The features table: the same rows (what differs is when and where they were written).
    def features(out):
        rows = read_features(str(out)).to_pylist()
        drop = ("run_id", "created_at", "features_s", "stem_uri")
        return sorted(({k: v for k, v in r.items() if k not in drop} for r in rows), key=lambda r: (r["track_id"], r["stem"]))

    assert features(tmp_path / "dask") == features(tmp_path / "direct") != []

    # sepflow evaluate on the DaskRunner scores the Dask run as the in-process one scores its twin.
    dask_args = ["--runner=DaskRunner", f"--dask_client_address={dask_cluster.scheduler_address}"]
    references = str(data_dir / "manifest.json")
    evaluate([str(tmp_path / "dask")], references, oracles=["irm"], beam_args=dask_args, progress=False)
    evaluate([str(tmp_path / "direct")], references, oracles=["irm"], progress=False)

    def scores(out):
        return sorted(
            (r["track_id"], r["label"], r["stem"], r["status"], round(r["sdr"], 6) if r["sdr"] is not None else None)
            for r in read_evaluation(str(out)).to_pylist()
        )

    assert scores(tmp_path / "dask") == scores(tmp_path / "direct")
    assert {s[1] for s in scores(tmp_path / "dask")} == {"hpss", "irm"}
