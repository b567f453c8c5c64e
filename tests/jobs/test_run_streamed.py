"""Large tracks streamed through the job (read, separated and written in blocks): the same
stems and rows as decoding them whole, errors as error rows; every operator streams, except one
that needs the whole track."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

import sepops
from pipelines.config import job_config_from_dict
from pipelines.run import run_job
from pipelines.tables import read_metadata
from sepops import Operator, load_audio, register
from tests.jobs.catalog import assert_same_stems, comparable

ROOT = Path(__file__).resolve().parents[2]


def _job(stream: bool, **audio):
    return job_config_from_dict({
        "operators": [{"operator": "hpss"}],
        "audio": {"format": "wav", "subtype": "FLOAT", **audio},
        "job": {"stream_above_mb": 0 if stream else None, "block_s": 4.0},
    })


def test_streamed_tracks_equal_whole_ones(tmp_path):
    audio, sr = load_audio(str(ROOT / "examples" / "loop_stereo.flac"))
    inputs = tmp_path / "in"
    inputs.mkdir()
    sf.write(str(inputs / "long.flac"), np.tile(audio, (1, 4)).T, sr, subtype="PCM_24")
    (inputs / "broken.wav").write_bytes(b"RIFF\x24\x00\x00\x00WAVEfmt " + b"\x01" * 40)
    for mono in (False, True):
        whole = tmp_path / f"whole{mono}"
        streamed = tmp_path / f"streamed{mono}"
        run_job(_job(False, mono=mono), [str(inputs)], str(whole), progress=False)
        summary = run_job(_job(True, mono=mono), [str(inputs)], str(streamed), progress=False)
        assert (summary.tracks_ok, summary.tracks_error) == (1, 1)
        rows = comparable(read_metadata(str(streamed)))
        expected = comparable(read_metadata(str(whole)))
        assert [r["error_type"] for r in rows] == [r["error_type"] for r in expected]
        for got, want in zip(rows, expected):
            for key, value in want.items():
                if isinstance(value, float):  # levels summed block by block: float rounding
                    assert abs(got[key] - value) < 1e-6 * max(1.0, abs(value)), key
                else:
                    assert got[key] == value, key
        files = sorted((streamed / "stems").rglob("*.wav"))
        assert len(files) == 2
        for f in files:
            a, _ = load_audio(str(f))
            b, _ = load_audio(str(whole / f.relative_to(streamed)))
            np.testing.assert_allclose(a, b, atol=1e-6)


def _stems(root: Path) -> dict[str, np.ndarray]:
    return {str(f.relative_to(root)): load_audio(str(f))[0] for f in sorted((root / "stems").rglob("*.wav"))}


_EXACT = [{"operator": "repet_sim", "params": {"max_lag_s": 3.0}}, {"operator": "ica"},
          {"operator": "nmf", "label": "nmf_sup", "params": {"dictionary": "loops_accompaniment_lead"}}]
_WINDOWED = [{"operator": "repet"}, {"operator": "nmf"}]


def test_every_operator_streams_through_the_job(tmp_path):
    """Streamed in one job: REPET-SIM, ICA (fitted to the whole stream first) and supervised
    NMF give the stems of whole-track decoding; REPET and unsupervised NMF (windowed) give
    stems that sum to the mixture."""
    audio, sr = load_audio(str(ROOT / "examples" / "loop_stereo.flac"))
    audio = np.tile(audio, (1, 4)) * np.linspace(0.3, 1.0, 4 * audio.shape[1], dtype=np.float32)
    inputs = tmp_path / "in"
    inputs.mkdir()
    sf.write(str(inputs / "long.wav"), audio.T, sr, subtype="FLOAT")
    runs = {}
    for mode, stream_above_mb in (("whole", None), ("streamed", 0)):
        job = job_config_from_dict({
            "operators": _EXACT + _WINDOWED, "audio": {"format": "wav", "subtype": "FLOAT"},
            "job": {"stream_above_mb": stream_above_mb, "stream_above_s": None, "block_s": 8.0},
        })
        summary = run_job(job, [str(inputs)], str(tmp_path / mode), progress=False)
        assert summary.units_ok == 5
        runs[mode] = _stems(tmp_path / mode)
    assert runs["streamed"].keys() == runs["whole"].keys() and len(runs["whole"]) == 10
    exact = [name for name in runs["streamed"] if name.split("/")[2] in ("repet_sim", "ica", "nmf_sup")]
    assert len(exact) == 6  # stems/long/<label>/<stem>.wav
    for name in exact:
        np.testing.assert_allclose(runs["streamed"][name], runs["whole"][name], atol=2e-5, err_msg=name)
    for label in ("repet", "nmf"):
        total = sum(v for k, v in runs["streamed"].items() if k.split("/")[2] == label)
        np.testing.assert_allclose(total, audio, atol=1e-5)


def test_a_long_track_in_a_small_file_streams_by_its_duration(tmp_path):
    """A long track in a small file (a podcast at a low bit rate) is streamed because its
    header says it is longer than job.stream_above_s."""
    audio, sr = load_audio(str(ROOT / "examples" / "loop_mono.flac"))
    inputs = tmp_path / "in"
    inputs.mkdir()
    sf.write(str(inputs / "long.flac"), np.tile(audio, (1, 3)).T, sr)
    jobs = {
        "by_duration": {"stream_above_mb": None, "stream_above_s": 10.0},
        "by_size": {"stream_above_mb": 0, "stream_above_s": None},
        "whole": {"stream_above_mb": None, "stream_above_s": None},
    }
    for name, limits in jobs.items():
        job = job_config_from_dict({"operators": [{"operator": "repet"}], "audio": {"format": "wav", "subtype": "FLOAT"},
                                    "job": {**limits, "block_s": 4.0}})
        assert run_job(job, [str(inputs)], str(tmp_path / name), progress=False).units_ok == 1
    streamed, by_size, whole = (_stems(tmp_path / n) for n in jobs)
    for stem in whole:  # windowed REPET: streaming shows in the stems
        np.testing.assert_array_equal(streamed[stem], by_size[stem])
        assert not np.allclose(streamed[stem], whole[stem], atol=1e-3)


class _WholeTrackOperator(Operator):
    """An operator that does not declare block_context: it needs the whole track."""

    name = "whole_track_test"

    @dataclass(frozen=True)
    class Config:
        pass

    stem_names = ("all",)

    def separate(self, audio, sr, *, analysis=None):
        return {"all": audio.copy()}


@pytest.fixture
def whole_track_operator():
    register(_WholeTrackOperator)
    yield _WholeTrackOperator.name
    sepops.registry._REGISTRY.pop(_WholeTrackOperator.name)


def test_jobs_with_an_operator_that_needs_the_whole_track_decode_whole(tmp_path, whole_track_operator):
    audio, sr = load_audio(str(ROOT / "examples" / "loop_mono.flac"))
    inputs = tmp_path / "in"
    inputs.mkdir()
    sf.write(str(inputs / "a.wav"), audio.T, sr)
    operators = [{"operator": "repet"}, {"operator": whole_track_operator}]
    job = job_config_from_dict({"operators": operators, "job": {"stream_above_mb": 0, "block_s": 2.0}})
    out = tmp_path / "out"
    assert run_job(job, [str(inputs)], str(out), progress=False).units_ok == 2
    reference = tmp_path / "ref"
    run_job(job_config_from_dict({"operators": operators}), [str(inputs)], str(reference), progress=False)
    assert_same_stems(out, reference)


def test_a_streamed_track_over_the_size_limit_is_an_error_row(tmp_path):
    audio, sr = load_audio(str(ROOT / "examples" / "loop_stereo.flac"))
    inputs = tmp_path / "in"
    inputs.mkdir()
    sf.write(str(inputs / "long.wav"), np.tile(audio, (1, 4)).T, sr)  # about 2 MB
    job = job_config_from_dict({"operators": [{"operator": "hpss"}],
                                "job": {"stream_above_mb": 0, "max_file_mb": 1.0}})
    run_job(job, [str(inputs)], str(tmp_path / "out"), progress=False)
    [row] = read_metadata(str(tmp_path / "out")).to_pylist()
    assert row["error_type"] == "too_large" and not (tmp_path / "out" / "stems").exists()
