"""Unit tests of the job's transforms on Beam's in-process runner, with small operators
defined here (in-process, so no worker needs to import them)."""
from __future__ import annotations

from dataclasses import dataclass

import apache_beam as beam
import numpy as np
import pytest
from apache_beam.runners.portability.fn_api_runner import FnApiRunner
from apache_beam.testing.util import assert_that, equal_to

import sepops
import sepops.registry
from pipelines import track
from pipelines.config import job_config_from_dict
from pipelines.io import match_inputs
from pipelines.records import read_part
from pipelines.track import operator_builds
from pipelines.transforms import SeparateCatalog
from sepops import load_audio, save_audio
from sepops.masks import stems_from_estimates

SEEN_ANALYSES: list = []


@dataclass(frozen=True)
class SplitConfig:
    split_bin: int = 40
    n_fft: int = 512
    hop_length: int = 128
    window: str = "hann"


class LowHighOperator(sepops.Operator):
    """Binary low/high frequency split; records the Analysis it was given."""

    name = "pipeline_test_lowhigh"
    Config = SplitConfig

    @property
    def stem_names(self):
        return ["low", "high"]

    def separate(self, audio, sr, *, analysis=None):
        an = self._analysis(audio, sr, analysis)
        SEEN_ANALYSES.append(an)
        cfg = self.stft_config()
        mag = np.abs(an.stft(cfg))
        low = mag.copy()
        low[:, self.config.split_bin:] = 0
        return stems_from_estimates(an, cfg, {"low": low, "high": mag - low}, mask="binary")


@dataclass(frozen=True)
class FailConfig:
    pass


class FailingOperator(sepops.Operator):
    """Always raises, to check that one unit's failure stays that unit's error row."""

    name = "pipeline_test_failing"
    Config = FailConfig
    stem_names = ["x"]

    def separate(self, audio, sr, *, analysis=None):
        raise RuntimeError("boom")


@pytest.fixture(autouse=True)
def test_operators():
    for cls in (LowHighOperator, FailingOperator):
        sepops.register(cls)
    SEEN_ANALYSES.clear()
    yield
    for cls in (LowHighOperator, FailingOperator):
        sepops.registry._REGISTRY.pop(cls.name, None)


@pytest.fixture
def tiny_catalog(tmp_path, rng):
    root = tmp_path / "in"
    for i, name in enumerate(["x.wav", "sub/y.wav", "z.wav"]):
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        save_audio(str(root / name), 0.1 * rng.standard_normal((2, 8000 + 1000 * i)).astype(np.float32), 8000)
    return root


def run_catalog(tracks, job, output, run_id="r1", overwrite=False, check=None):
    with beam.Pipeline(runner=FnApiRunner()) as p:
        results = p | SeparateCatalog(tracks, job, str(output), run_id, overwrite)
        if check is not None:
            assert_that(results, check)


def test_separate_catalog_emits_one_result_per_track_and_operator(tiny_catalog, tmp_path):
    job = job_config_from_dict({"operators": ["pipeline_test_lowhigh", "pipeline_test_failing"]})
    tracks = match_inputs([str(tiny_catalog / "**" / "*.wav")])
    assert [t.track_id for t in tracks] == ["sub/y", "x", "z"]

    def strip(results):
        return sorted((r["track_id"], r["label"], r["status"]) for r in results)

    expected = sorted(
        (t.track_id, label, status)
        for t in tracks
        for label, status in (("pipeline_test_lowhigh", "ok"), ("pipeline_test_failing", "error"))
    )
    with beam.Pipeline(runner=FnApiRunner()) as p:
        results = p | SeparateCatalog(tracks, job, str(tmp_path / "out"), "r1")
        assert_that(results | beam.combiners.ToList() | beam.Map(strip), equal_to([expected]))

    # The failing operator left an error part and a dead letter; the other one its stems.
    part = read_part(str(tmp_path / "out/_sepflow/parts/pipeline_test_failing/x.parquet")).to_pylist()
    assert [(r["status"], r["error_type"], r["error_message"]) for r in part] == [("error", "operator_error", "RuntimeError: boom")]
    assert (tmp_path / "out/dead_letter/pipeline_test_failing/x.json").exists()
    low, sr = load_audio(str(tmp_path / "out/stems/x/pipeline_test_lowhigh/low.flac"))
    high, _ = load_audio(str(tmp_path / "out/stems/x/pipeline_test_lowhigh/high.flac"))
    mix, _ = load_audio(str(tiny_catalog / "x.wav"))
    assert sr == 8000 and low.shape == mix.shape
    np.testing.assert_allclose(low + high, mix, atol=2e-4)  # two PCM_16 roundings


def test_stem_layout_single_and_multi_operator_and_skips_in_both(tiny_catalog, tmp_path):
    """One operator in the config: stems/<track_id>/<stem>; several: stems/<track_id>/<label>/<stem>.
    Re-runs skip complete units in either layout; a unit recorded in the other layout is redone."""
    out = tmp_path / "out"
    tracks = match_inputs([str(tiny_catalog / "**" / "*.wav")])
    ids = [t.track_id for t in tracks]
    single = job_config_from_dict({"operators": ["pipeline_test_lowhigh"]})
    multi_file = {"operators": ["pipeline_test_lowhigh", "pipeline_test_failing"]}
    only_lowhigh = job_config_from_dict(multi_file, operators=["pipeline_test_lowhigh"])
    assert single.operators == only_lowhigh.operators and single.unit_digest(single.operators[0]) == (
        only_lowhigh.unit_digest(only_lowhigh.operators[0])
    )

    def statuses(expected):
        return lambda results: equal_to([(t, expected) for t in ids])(sorted((r["track_id"], r["status"]) for r in results))

    def stem_files():
        return sorted(str(p.relative_to(out / "stems")) for p in (out / "stems").rglob("*.flac"))

    run_catalog(tracks, single, out, check=statuses("ok"))
    flat = sorted(f"{t}/{s}.flac" for t in ids for s in ("high", "low"))
    assert stem_files() == flat
    part = read_part(str(out / "_sepflow/parts/pipeline_test_lowhigh/x.parquet")).to_pylist()
    assert sorted(r["stem_uri"] for r in part) == [str(out / "stems/x/high.flac"), str(out / "stems/x/low.flac")]
    mtimes = {p: p.stat().st_mtime_ns for p in (out / "stems").rglob("*.flac")}
    run_catalog(tracks, single, out, run_id="r2", check=statuses("skipped"))
    assert {p: p.stat().st_mtime_ns for p in (out / "stems").rglob("*.flac")} == mtimes

    # --operator on the multi-operator config: that config's layout, so the flat stems of
    # the single-operator job are not its outputs; the unit is redone under the label.
    run_catalog(tracks, only_lowhigh, out, run_id="r3", check=statuses("ok"))
    nested = sorted(f"{t}/pipeline_test_lowhigh/{s}.flac" for t in ids for s in ("high", "low"))
    assert stem_files() == sorted(flat + nested)  # the flat files stay where they were
    part = read_part(str(out / "_sepflow/parts/pipeline_test_lowhigh/x.parquet")).to_pylist()
    assert sorted(r["stem_uri"] for r in part) == [
        str(out / "stems/x/pipeline_test_lowhigh/high.flac"), str(out / "stems/x/pipeline_test_lowhigh/low.flac")
    ]
    run_catalog(tracks, only_lowhigh, out, run_id="r4", check=statuses("skipped"))


def test_operators_share_one_stft_per_track(tiny_catalog, tmp_path):
    job = job_config_from_dict(
        {
            "operators": [
                {"operator": "pipeline_test_lowhigh", "label": "split20", "params": {"split_bin": 20}},
                {"operator": "pipeline_test_lowhigh", "label": "split60", "params": {"split_bin": 60}},
            ],
            "stft": {"n_fft": 512, "hop_length": 128},
        }
    )
    tracks = match_inputs([str(tiny_catalog / "**" / "*.wav")])
    run_catalog(tracks, job, tmp_path / "out")
    assert len(SEEN_ANALYSES) == 2 * len(tracks)
    # Both operators of a track got the same Analysis, which computed one STFT.
    distinct = {id(a): a for a in SEEN_ANALYSES}
    assert len(distinct) == len(tracks)
    assert all(a.stft_count == 1 for a in distinct.values())


def test_operators_are_built_once_per_process(tiny_catalog, tmp_path):
    job = job_config_from_dict({"operators": [{"operator": "pipeline_test_lowhigh", "params": {"split_bin": 33}}]})
    tracks = match_inputs([str(tiny_catalog / "**" / "*.wav")])
    for run in range(3):  # three pipelines, three DoFn setups, one build
        run_catalog(tracks, job, tmp_path / "out", run_id=f"r{run}", overwrite=True)
    assert operator_builds()[job.operators_key()] == 1
    assert track.operators_for(job) is track.operators_for(job)
