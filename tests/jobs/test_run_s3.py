"""s3:// input and output against a real S3-compatible server (moto) on 127.0.0.1.

The endpoint and credentials travel the standard way, as AWS_* environment variables, so
worker processes (here: the multi-process DirectRunner's) find them too.
"""
from __future__ import annotations

import io

import pandas as pd
import pytest

from pipelines.run import run_job
from pipelines.tables import read_metadata
from sepops import load_audio
from tests.jobs.catalog import (
    assert_hpss_quality,
    assert_ok_rows,
    comparable,
    cut_catalog,
    hpss_job,
)

BUCKET = "catalog"
MULTI_PROCESS = ["--runner=DirectRunner", "--direct_num_workers=2", "--direct_running_mode=multi_processing"]


@pytest.fixture(scope="module")
def s3_server():
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


@pytest.fixture
def s3(s3_server, monkeypatch):
    """An s3fs filesystem on the local server, with the AWS_* variables set for workers."""
    import s3fs

    for name, value in {
        "AWS_ENDPOINT_URL_S3": s3_server,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
    }.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    s3fs.S3FileSystem.clear_instance_cache()
    fs = s3fs.S3FileSystem()
    if not fs.exists(BUCKET):
        fs.mkdir(BUCKET)
    yield fs
    s3fs.S3FileSystem.clear_instance_cache()


@pytest.fixture(scope="module")
def local_catalog(tmp_path_factory, data_dir, manifest):
    root = tmp_path_factory.mktemp("catalog")
    return root, cut_catalog(data_dir, manifest, root)


def read_s3_audio(uri):
    return load_audio(uri)


def test_s3_in_and_out_match_a_local_run(s3, local_catalog, tmp_path):
    root, tracks = local_catalog
    s3.put(str(root) + "/", f"{BUCKET}/in/", recursive=True)
    assert len(s3.find(f"{BUCKET}/in")) == len(tracks)

    job = hpss_job()
    out = f"s3://{BUCKET}/out/run1"
    summary = run_job(job, [f"s3://{BUCKET}/in/**/*.flac"], out, MULTI_PROCESS, progress=False)
    assert (summary.tracks_ok, summary.tracks_error) == (len(tracks), 0)

    table = read_metadata(out)
    stems = assert_ok_rows(table, tracks, job, read=read_s3_audio)
    assert_hpss_quality(tracks, stems)
    assert all(u.startswith(f"s3://{BUCKET}/out/run1/stems/") for u in table.column("stem_uri").to_pylist())
    assert all(u.startswith(f"s3://{BUCKET}/in/") for u in table.column("source_uri").to_pylist())
    # pandas reads the published metadata (the run's shards) straight from the bucket too.
    keys = s3.glob(f"{BUCKET}/out/run1/metadata/*.parquet")
    assert 1 <= len(keys) <= job.job.metadata_shards
    frame = pd.concat([pd.read_parquet(io.BytesIO(s3.cat_file(key))) for key in keys])
    assert len(frame) == table.num_rows
    assert not s3.glob(f"{BUCKET}/out/run1/**/*.tmp")

    # The same job on local files gives the same rows.
    local = run_job(job, [str(root / "**" / "*.flac")], str(tmp_path / "out"), progress=False)
    assert comparable(local.metadata) == comparable(table)

    # Re-running against the bucket skips everything.
    again = run_job(job, [f"s3://{BUCKET}/in/**/*.flac"], out, progress=False)
    assert (again.tracks_skipped, again.stems_written) == (len(tracks), 0)
