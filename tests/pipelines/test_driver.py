"""The driver holds the patterns, never the catalog: it lists no input and reads no metadata
part, its filesystem calls do not grow with the catalog, and the metadata the pipeline writes
equals, row for row, the parts of every unit (what the driver used to consolidate), on the
in-process runner, the multi-process DirectRunner and the DaskRunner."""
from __future__ import annotations

import os
from pathlib import Path

import fsspec.implementations.local as fsspec_local
import numpy as np
import pyarrow as pa

from pipelines.io import match_inputs
from pipelines.records import Unit, part_uri, read_part
from pipelines.run import run_job
from pipelines.tables import read_metadata
from sepops import save_audio
from tests.jobs.catalog import comparable, hpss_job

MULTI_PROCESS = ["--runner=DirectRunner", "--direct_num_workers=2", "--direct_running_mode=multi_processing"]
_LISTINGS = {"ls", "find", "glob", "walk", "scandir", "listdir"}


def _catalog(root: Path, n: int) -> Path:
    """``n`` tiny tracks (0.2 s, 8 kHz) in nested folders, with two ids that collide by case
    and one file that is not audio."""
    rng = np.random.default_rng(n)
    for i in range(n):
        path = root / f"artist{i % 7}" / f"album{i % 3}" / f"track {i:04d}.wav"
        path.parent.mkdir(parents=True, exist_ok=True)
        save_audio(str(path), 0.1 * rng.standard_normal((1, 1600)).astype(np.float32), 8000, format="wav")
    save_audio(str(root / "Song.wav"), np.zeros((1, 1600), np.float32), 8000, format="wav")
    save_audio(str(root / "song.flac"), 0.1 * np.ones((1, 1600), np.float32), 8000)
    (root / "notes.txt").write_text("not audio")
    return root


class _Recorder:
    """Records the filesystem calls this (the driver's) process makes, with their paths."""

    _FS_METHODS = ("ls", "find", "glob", "walk", "info", "exists", "isdir", "isfile", "cat_file", "cat", "_open",
                   "mv", "rm", "rm_file", "makedirs", "size")

    def __init__(self, monkeypatch):
        self.calls: list[tuple[str, str]] = []
        for name in self._FS_METHODS:
            original = getattr(fsspec_local.LocalFileSystem, name)
            monkeypatch.setattr(fsspec_local.LocalFileSystem, name, self._wrap(name, original, method=True))
        for name in ("walk", "scandir", "listdir"):
            monkeypatch.setattr(os, name, self._wrap(name, getattr(os, name)))

    def _wrap(self, name, original, method=False):
        calls = self.calls

        def wrapper(*args, **kwargs):
            path = args[1] if method and len(args) > 1 else (args[0] if args and not method else kwargs.get("path", ""))
            calls.append((name, str(path)))
            return original(*args, **kwargs)

        return wrapper


def _driver_calls(monkeypatch, inputs: list[str], out: Path) -> list[tuple[str, str]]:
    with monkeypatch.context() as m:
        recorder = _Recorder(m)
        summary = run_job(hpss_job(), inputs, str(out), MULTI_PROCESS, progress=False)
    assert summary.tracks_error == 0 and summary.tracks_ok > 0
    return recorder.calls


def test_the_driver_neither_lists_the_inputs_nor_reads_parts_and_its_work_does_not_grow(tmp_path, monkeypatch):
    small = _catalog(tmp_path / "small", 40)
    large = _catalog(tmp_path / "large", 240)
    calls = {}
    for name, root in (("small", small), ("large", large)):
        out = tmp_path / f"out-{name}"
        calls[name] = _driver_calls(monkeypatch, [str(root)], out)
        parts = str(out / "_sepflow" / "parts")
        assert not [c for c in calls[name] if c[1].startswith(parts)], "the driver touched a metadata part"
        listed = [c for c in calls[name] if c[0] in _LISTINGS and c[1].startswith(str(root))]
        assert not listed, f"the driver listed the inputs: {listed[:5]}"
        stems = str(out / "stems")
        assert not [c for c in calls[name] if c[1].startswith(stems)], "the driver touched the stems"
    # The same calls (in kind and number) on the job's folders for 6x the tracks: nothing the
    # driver does grows with the catalog.
    ours = {k: sorted(n for n, p in v if p.startswith(str(tmp_path))) for k, v in calls.items()}
    assert ours["large"] == ours["small"] and ours["small"]
    assert len(read_metadata(str(tmp_path / "out-large"))) == 242 * 2  # every track: 2 stems


def _parts_table(inputs: list[str], out: Path) -> pa.Table:
    """Today's consolidation, by hand: every unit's part, read on this side."""
    job = hpss_job()
    tables = [read_part(part_uri(str(out), u.label, u.track_id))
              for t in match_inputs(inputs, job.job.extensions) for u in [Unit.of(t, job.operators[0], job)]]
    return pa.concat_tables(tables)


def test_the_pipelines_metadata_equals_the_units_parts_on_every_runner(tmp_path, dask_cluster):
    root = _catalog(tmp_path / "in", 120)
    inputs = [str(root)]
    runners = {
        "in_process": [],
        "multi_process": MULTI_PROCESS,
        "dask": ["--runner=DaskRunner", f"--dask_client_address={dask_cluster.scheduler_address}"],
    }
    tables = {}
    for name, args in runners.items():
        out = tmp_path / name
        summary = run_job(hpss_job(), inputs, str(out), args, progress=False)
        assert (summary.tracks_ok, summary.tracks_error, summary.stems_written) == (122, 0, 244)
        table = read_metadata(str(out))
        assert comparable(table) == comparable(_parts_table(inputs, out)), name
        files = list((out / "metadata").glob("*.parquet"))
        assert 1 <= len(files) <= hpss_job().job.metadata_shards
        assert not (out / "_sepflow" / "runs" / summary.run_id).exists()  # the staging is gone
        tables[name] = comparable(table)
    assert tables["multi_process"] == tables["in_process"] == tables["dask"]
    ids = sorted({r["track_id"] for r in tables["dask"]})
    assert sum(i.lower().startswith("song-") for i in ids) == 2  # the case collision, resolved


def test_the_submitted_graph_does_not_grow_with_the_catalog(tmp_path):
    """What a runner receives (Dataflow's job graph has a size limit of a few MB) holds the
    inputs' patterns, not the tracks: a 100,000-track manifest gives the graph of a 10-track one."""
    from apache_beam.options.pipeline_options import PipelineOptions

    from pipelines.io import plan_inputs
    from pipelines.run import build_pipeline

    sizes = {}
    for n in (10, 100_000):
        manifest = tmp_path / f"m{n:06d}" / "catalog.csv"  # folder names of one length
        manifest.parent.mkdir()
        manifest.write_text("uri\n" + "".join(f"/music/artist{i % 97}/track{i:06d}.flac\n" for i in range(n)))
        pipeline = build_pipeline(hpss_job(), plan_inputs([str(manifest)]), str(tmp_path / "out"), "r1",
                                  PipelineOptions(["--runner=DirectRunner"]))
        sizes[n] = len(pipeline.to_runner_api().SerializeToString())
    # The graphs differ only by the digits of n in the manifest's folder name.
    assert abs(sizes[100_000] - sizes[10]) < 64, sizes
    assert sizes[100_000] < 1_000_000, sizes
