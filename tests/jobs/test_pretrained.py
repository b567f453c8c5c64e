"""Pretrained-model operators in the catalog job: random-weight demucs and roformer
models run by the in-process, multi-process and Dask runners, read from a local folder and
from the S3 test server, streamed in blocks, then scored by `sepflow evaluate` and shown by
`sepflow report`."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from pipelines.cli import main
from pipelines.config import job_config_from_dict
from pipelines.evaluate import evaluate
from pipelines.run import run_job
from pipelines.tables import read_evaluation, read_features, read_metadata
from pipelines.track import operator_builds
from sepops import get_operator, load_audio, save_audio
from tests.jobs.test_run_s3 import BUCKET, MULTI_PROCESS, s3, s3_server  # noqa: F401 - fixtures
from tests.sepops.demucs_files import (
    SOURCES,
    mixture_signal,
    small_htdemucs,
    write_bag,
    write_th,
)

pytest.importorskip("demucs")


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("demucs_repo")
    write_th(small_htdemucs(11), folder, "1a2b3c4d")
    write_bag(folder, "htdemucs", ["1a2b3c4d"])
    return folder


@pytest.fixture(scope="module")
def catalog(tmp_path_factory) -> dict[str, Path]:
    """Two tracks as true stems and their sum: stereo 44.1 kHz and mono 22.05 kHz."""
    root = tmp_path_factory.mktemp("catalog")
    refs = tmp_path_factory.mktemp("references")
    tracks = {}
    for name, sr, channels, seconds in (("song_a", 44100, 2, 4.0), ("song_b", 22050, 1, 3.0)):
        stems = {s: mixture_signal(seconds, sr=sr, channels=channels, seed=20 + i) * (0.5 if i else 1.0)
                 for i, s in enumerate(SOURCES)}
        mix = sum(stems.values()) / 2
        save_audio(str(root / f"{name}.wav"), mix, sr, format="wav", subtype="FLOAT")
        for s, audio in stems.items():  # musdb's layout: <folder>/<track>/<stem>.wav
            (refs / name).mkdir(exist_ok=True)
            save_audio(str(refs / name / f"{s}.wav"), audio / 2, sr, format="wav", subtype="FLOAT")
        tracks[name] = root / f"{name}.wav"
    tracks["_references"] = refs
    return tracks


def demucs_job(repo: str, *overrides: str, features: dict | None = None):
    return job_config_from_dict(
        {
            "operators": [{"operator": "demucs", "params": {"repo": repo, "device": "cpu", "threads": 1}}],
            "audio": {"format": "wav", "subtype": "FLOAT"},
            "features": features or {},
        },
        overrides=list(overrides),
    )


def stems_of(out: Path) -> dict[tuple[str, str], np.ndarray]:
    table = read_metadata(str(out))
    rows = table.to_pylist()
    assert rows and all(r["status"] == "ok" for r in rows), [r for r in rows if r["status"] != "ok"]
    return {(r["track_id"], r["stem"]): load_audio(r["stem_uri"])[0] for r in rows}


def inputs_of(catalog) -> list[str]:
    return [str(p) for k, p in catalog.items() if not k.startswith("_")]


def test_demucs_job_in_process_equals_the_operator_and_feeds_features_evaluate_report(model_dir, catalog, tmp_path):
    job = demucs_job(str(model_dir), features={"rhythm": True, "pitch": True})
    out = tmp_path / "out"
    summary = run_job(job, inputs_of(catalog), str(out), progress=False)
    assert (summary.tracks_ok, summary.tracks_error) == (2, 0)
    stems = stems_of(out)
    assert sorted(stems) == sorted((t, s) for t in ("song_a", "song_b") for s in SOURCES)
    op = get_operator("demucs", repo=str(model_dir), device="cpu")
    for track in ("song_a", "song_b"):
        mix, sr = load_audio(str(catalog[track]))
        expected = op.separate(mix, sr)
        for s in SOURCES:
            assert stems[(track, s)].shape == mix.shape
            np.testing.assert_allclose(stems[(track, s)], expected[s], atol=1e-5 * np.abs(expected[s]).max())

    # Features follow the stems' names: drums get tempo and beats, vocals and bass an f0.
    rows = {(r["track_id"], r["stem"]): r for r in read_features(str(out)).to_pylist()}
    assert len(rows) == 8
    assert rows[("song_a", "drums")]["tempo_bpm"] is not None and rows[("song_a", "vocals")]["tempo_bpm"] is None
    assert rows[("song_a", "vocals")]["f0_hop_s"] is not None and rows[("song_a", "drums")]["f0_hop_s"] is None

    # sepflow evaluate matches the stems by name against the true stems; report renders it.
    evaluate([str(out)], str(catalog["_references"]), oracles=["irm"], progress=False)
    scores = read_evaluation(str(out)).to_pylist()
    ours = [r for r in scores if r["label"] == "demucs"]
    assert sorted((r["track_id"], r["stem"]) for r in ours) == sorted(stems)
    assert all(r["status"] == "ok" and np.isfinite(r["sdr"]) for r in ours), ours
    page = tmp_path / "report.html"
    assert main(["report", "--run", str(out), "--out", str(page)]) == 0
    html = page.read_text()
    assert "vocals" in html and "drums" in html and "demucs" in html

    # A re-run skips every unit; a long-track run (streamed in 2 s blocks) writes the same stems.
    again = run_job(job, inputs_of(catalog), str(out), progress=False)
    assert (again.units_skipped, again.units_ok, again.stems_written) == (2, 0, 0)
    streamed = tmp_path / "streamed"
    run_job(demucs_job(str(model_dir), "job.stream_above_s=1", "job.block_s=2"), inputs_of(catalog), str(streamed),
            progress=False)
    for key, audio in stems_of(streamed).items():
        assert np.abs(audio - stems[key]).max() <= 1e-4 * max(np.abs(stems[key]).max(), 1e-6), key


ROFORMER = Path(__file__).resolve().parents[1] / "data" / "roformer" / "bs_roformer_tiny.ckpt"


def both_job(demucs_repo: str, roformer_ckpt: str):
    """A demucs and a roformer operator over the same tracks (stems under their labels)."""
    return job_config_from_dict({
        "operators": [
            {"operator": "demucs", "params": {"repo": demucs_repo, "device": "cpu", "threads": 1}},
            {"operator": "roformer", "params": {"checkpoint": roformer_ckpt, "device": "cpu", "threads": 1}},
        ],
        "audio": {"format": "wav", "subtype": "FLOAT"},
    })


def labelled_stems(out: Path) -> dict[tuple[str, str, str], np.ndarray]:
    rows = read_metadata(str(out)).to_pylist()
    assert rows and all(r["status"] == "ok" for r in rows), [r for r in rows if r["status"] != "ok"]
    return {(r["track_id"], r["label"], r["stem"]): load_audio(r["stem_uri"])[0] for r in rows}


def test_models_from_s3_on_the_multi_process_runner(s3, model_dir, catalog, tmp_path, monkeypatch):  # noqa: F811
    for f in model_dir.iterdir():
        s3.put(str(f), f"{BUCKET}/models/demucs/{f.name}")
    for f in (ROFORMER, ROFORMER.with_suffix(".yaml")):
        s3.put(str(f), f"{BUCKET}/models/roformer/{f.name}")
    monkeypatch.setenv("SEPFLOW_MODEL_CACHE", str(tmp_path / "cache"))
    remote = both_job(f"s3://{BUCKET}/models/demucs", f"s3://{BUCKET}/models/roformer/{ROFORMER.name}")
    run_job(remote, inputs_of(catalog), str(tmp_path / "multi"), MULTI_PROCESS, progress=False)
    run_job(both_job(str(model_dir), str(ROFORMER)), inputs_of(catalog), str(tmp_path / "local"), progress=False)
    multi, local = labelled_stems(tmp_path / "multi"), labelled_stems(tmp_path / "local")
    assert {k[1:] for k in local} == {("demucs", s) for s in SOURCES} | {("roformer", "vocals"), ("roformer", "other")}
    assert multi.keys() == local.keys()
    for key in local:
        np.testing.assert_array_equal(multi[key], local[key])
    # Each bucket object was copied once into this machine's cache, not once per worker or track:
    # the demucs folder, the checkpoint and its YAML.
    assert len([p for p in (tmp_path / "cache").iterdir() if not p.name.startswith(".")]) == 3


def test_models_on_the_dask_runner(dask_cluster, model_dir, catalog, tmp_path):
    import distributed

    job = both_job(str(model_dir), str(ROFORMER))
    run_job(job, inputs_of(catalog), str(tmp_path / "direct"), progress=False)
    args = ["--runner=DaskRunner", f"--dask_client_address={dask_cluster.scheduler_address}"]
    summary = run_job(job, inputs_of(catalog), str(tmp_path / "dask"), args, progress=False)
    assert (summary.tracks_ok, summary.tracks_error) == (2, 0)
    dask, direct = labelled_stems(tmp_path / "dask"), labelled_stems(tmp_path / "direct")
    assert dask.keys() == direct.keys() and len(direct) == 2 * (4 + 2)
    for key in direct:
        np.testing.assert_array_equal(dask[key], direct[key])
    with distributed.Client(dask_cluster.scheduler_address) as client:
        builds = client.run(operator_builds)
    assert all(b.get(job.operators_key(), 0) <= 1 for b in builds.values()), builds


@pytest.mark.parametrize(
    "sets, expected",
    [
        ([], "parameter 'repo': name the folder"),
        (["demucs.repo={missing}"], "no such file"),
        (["demucs.repo={repo}", "demucs.two_stems=guitar"], "'two_stems': 'guitar' is not a source"),
        (["demucs.repo={repo}", "demucs.name=htdemucs_ft"], "parameter 'name'"),
    ],
)
def test_model_mistakes_stop_the_job_before_it_starts(sets, expected, model_dir, catalog, tmp_path):
    argv = [sys.executable, "-m", "pipelines.cli", "run", "--runner=DirectRunner", "--operator", "demucs",
            "-i", str(catalog["song_a"]), "-o", str(tmp_path / "out")]
    for item in sets:
        argv += ["--set", item.format(repo=model_dir, missing=tmp_path / "nothing")]
    out = subprocess.run(argv, check=False, capture_output=True, text=True, timeout=120)
    assert out.returncode == 2, out.stderr
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and expected in lines[0], out.stderr
    assert not (tmp_path / "out").exists()
