"""The features table of a run: one row per ok stem, computed in the unit, whole or streamed,
skipped and redone with the metadata, switched by the job's ``features:`` section."""
from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import soundfile as sf

from pipelines.config import ConfigError, job_config_from_dict
from pipelines.run import run_job
from pipelines.tables import STEM_FEATURES_SCHEMA, read_features, read_metadata
from sepops import load_audio

ROOT = Path(__file__).resolve().parents[2]


def _job(features: dict | None = None, **job):
    return job_config_from_dict({
        "operators": [{"operator": "hpss"}],
        "audio": {"format": "wav", "subtype": "FLOAT"},
        "job": job,
        "features": features or {},
    })


@pytest.fixture
def inputs(tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    shutil.copy(ROOT / "examples" / "loop_stereo.flac", folder / "loop.flac")
    (folder / "broken.flac").write_bytes(b"fLaC" + b"\x00" * 64)
    return folder


def _by_key(table):
    return {(r["track_id"], r["label"], r["stem"]): r for r in table.to_pylist()}


def test_a_run_writes_one_feature_row_per_ok_stem(inputs, tmp_path):
    out = tmp_path / "out"
    job = _job({"rhythm": True, "chroma": True, "pitch": True, "pitch_stems": ["harmonic"]})
    summary = run_job(job, [str(inputs)], str(out), progress=False)
    assert (summary.tracks_ok, summary.tracks_error) == (1, 1)
    features = read_features(str(out))
    assert features.schema.equals(STEM_FEATURES_SCHEMA, check_metadata=False)
    metadata = read_metadata(str(out)).to_pylist()
    ok = {(r["track_id"], r["label"], r["stem"]) for r in metadata if r["status"] == "ok"}
    rows = _by_key(features)
    assert set(rows) == ok == {("loop", "hpss", "harmonic"), ("loop", "hpss", "percussive")}
    harmonic, percussive = rows["loop", "hpss", "harmonic"], rows["loop", "hpss", "percussive"]
    # The features of the stems written: recomputed from the files, they agree.
    stem, sr = load_audio(harmonic["stem_uri"])
    assert harmonic["duration_s"] == pytest.approx(stem.shape[1] / sr)
    assert 0.5 < harmonic["active_fraction"] <= 1.0 and harmonic["activity_segments"]
    assert -40 < harmonic["loudness_lufs"] < 0 and percussive["onset_times_s"]
    assert percussive["tempo_bpm"] > 0 and percussive["beat_times_s"] and harmonic["tempo_bpm"] is None
    assert harmonic["chroma_per_beat"] and percussive["chroma_per_beat"] is None
    assert harmonic["f0_hz"] is not None and percussive["f0_hz"] is None
    assert all(r["feature_errors"] is None and r["features_s"] > 0 for r in rows.values())
    files = sorted((out / "features").glob("*.parquet"))
    assert files and all(pq.read_schema(f).names == STEM_FEATURES_SCHEMA.names for f in files)


def test_a_rerun_skips_and_keeps_the_features_and_new_settings_redo_them(inputs, tmp_path):
    out = tmp_path / "out"
    first = run_job(_job(), [str(inputs)], str(out), progress=False)
    before = _by_key(read_features(str(out)))
    again = run_job(_job(), [str(inputs)], str(out), progress=False)
    assert (again.units_skipped, again.units_ok) == (1, 0)
    after = _by_key(read_features(str(out)))
    assert after == before and {r["run_id"] for r in after.values()} == {first.run_id}
    redone = run_job(_job({"rhythm": True}), [str(inputs)], str(out), progress=False)
    assert redone.units_ok == 1
    rows = _by_key(read_features(str(out)))
    assert rows["loop", "hpss", "percussive"]["tempo_bpm"] > 0
    assert {r["run_id"] for r in rows.values()} == {redone.run_id}
    assert len(list((out / "features").glob("*.parquet"))) <= 8  # the earlier run's files are gone


def test_a_job_without_features_writes_no_table(inputs, tmp_path):
    out = tmp_path / "out"
    run_job(_job({"activity": False, "onsets": False, "loudness": False}), [str(inputs)], str(out), progress=False)
    assert not (out / "features").exists()
    assert not (out / "_sepflow" / "features").exists()


def test_streamed_tracks_have_the_whole_tracks_activity_and_loudness(tmp_path):
    audio, sr = load_audio(str(ROOT / "examples" / "loop_stereo.flac"))
    folder = tmp_path / "in"
    folder.mkdir()
    long = np.tile(audio, (1, 3))
    long[:, sr * 9 : sr * 11] *= 0.01  # a quiet passage across a block edge
    sf.write(str(folder / "long.flac"), long.T, sr, subtype="PCM_24")
    whole, streamed = tmp_path / "whole", tmp_path / "streamed"
    features = {"rhythm": True, "rhythm_stems": ["*"], "pitch": True, "pitch_stems": ["harmonic"]}
    run_job(_job(features, stream_above_mb=None), [str(folder)], str(whole), progress=False)
    run_job(_job(features, stream_above_mb=0, block_s=4.0), [str(folder)], str(streamed), progress=False)
    a, b = _by_key(read_features(str(whole))), _by_key(read_features(str(streamed)))
    assert set(a) == set(b)
    for key in a:
        assert b[key]["activity_segments"] == a[key]["activity_segments"]
        assert b[key]["loudness_lufs"] == pytest.approx(a[key]["loudness_lufs"], abs=0.01)
        # The frame series are laid on one grid across blocks and analysed whole at the end.
        assert b[key]["tempo_bpm"] == pytest.approx(a[key]["tempo_bpm"])
        np.testing.assert_allclose(b[key]["beat_times_s"], a[key]["beat_times_s"], atol=0.011)
        # Onset strength's dB floor is per block (80 dB under its loudest frame): most onsets agree.
        found, truth = np.asarray(b[key]["onset_times_s"]), np.asarray(a[key]["onset_times_s"])
        assert np.mean([np.abs(found - t).min() < 0.02 for t in truth]) > 0.9
    f0_whole, f0_streamed = a["long", "hpss", "harmonic"]["f0_hz"], b["long", "hpss", "harmonic"]["f0_hz"]
    assert len(f0_whole) == len(f0_streamed)
    same = [x == y or (x is not None and y is not None and abs(x - y) < 1.0) for x, y in zip(f0_whole, f0_streamed)]
    assert np.mean(same) > 0.95


def test_features_settings_are_checked_before_the_job_starts():
    with pytest.raises(ConfigError, match="features.pitch_hop_s"):
        job_config_from_dict({"operators": ["hpss"], "features": {"pitch_hop_s": "fast"}})
    with pytest.raises(ConfigError, match="unknown key features.lyrics"):
        job_config_from_dict({"operators": ["hpss"], "features": {"lyrics": True}})
    job = job_config_from_dict({"operators": ["hpss"], "features": {"pitch_stems": ["lead", "vocals"]}})
    assert job.features.pitch_stems == ("lead", "vocals")


def test_a_feature_failure_never_fails_the_stems(inputs, tmp_path, monkeypatch):
    from sepops.features import FeatureExtractor

    def broken(self):
        raise FloatingPointError("pathological input")

    monkeypatch.setattr(FeatureExtractor, "finish", broken)
    out = tmp_path / "out"
    summary = run_job(_job(), [str(inputs)], str(out), progress=False)
    assert (summary.tracks_ok, summary.tracks_error) == (1, 1)
    rows = _by_key(read_features(str(out)))
    assert set(rows) == {("loop", "hpss", "harmonic"), ("loop", "hpss", "percussive")}
    for r in rows.values():
        assert r["feature_errors"] == "features: FloatingPointError: pathological input"
        assert r["activity_segments"] is None and r["loudness_lufs"] is None
