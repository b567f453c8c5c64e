"""Large tracks streamed through the job (read, separated and written in blocks): the same
stems and rows as decoding them whole, errors as error rows, global operators decoded whole."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import soundfile as sf

from pipelines.config import job_config_from_dict
from pipelines.metadata import read_metadata
from pipelines.run import run_job
from sepops import load_audio

from .test_pipeline_helpers import assert_same_stems, comparable

ROOT = Path(__file__).resolve().parents[1]


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


def test_jobs_with_a_global_operator_decode_whole(tmp_path):
    audio, sr = load_audio(str(ROOT / "examples" / "loop_mono.flac"))
    inputs = tmp_path / "in"
    inputs.mkdir()
    sf.write(str(inputs / "a.wav"), audio.T, sr)
    job = job_config_from_dict({"operators": [{"operator": "hpss"}, {"operator": "repet"}],
                                "job": {"stream_above_mb": 0}})
    out = tmp_path / "out"
    assert run_job(job, [str(inputs)], str(out), progress=False).units_ok == 2
    reference = tmp_path / "ref"
    run_job(job_config_from_dict({"operators": [{"operator": "hpss"}, {"operator": "repet"}]}),
            [str(inputs)], str(reference), progress=False)
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
