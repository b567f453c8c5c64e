"""A folder of broken and unusual inputs: the job finishes, every input gets its rows (one per
stem, or one error row with the cause), failures get dead letters, and nothing is half written."""
from __future__ import annotations

import json

import numpy as np
import pytest
import soundfile as sf

from pipelines.run import run_job
from pipelines.tables import read_metadata
from sepops import save_audio

from .test_pipeline_helpers import assert_schema, hpss_job, tree_files

SR = 22050


def _tone(seconds: float, channels: int = 1, sr: int = SR) -> np.ndarray:
    t = np.arange(int(seconds * sr)) / sr
    rng = np.random.default_rng(channels)
    tone = 0.3 * np.sin(2 * np.pi * 220 * t) + 0.05 * rng.standard_normal(t.size)
    return np.tile(tone.astype(np.float32), (channels, 1))


@pytest.fixture
def bad_folder(tmp_path):
    """Inputs by name -> (track_id, expected error_type or None for ok rows, channels, rate)."""
    root = tmp_path / "bad"
    root.mkdir()
    expected = {}

    (root / "zero_bytes.wav").write_bytes(b"")
    expected["zero_bytes.wav"] = ("zero_bytes", "empty")

    save_audio(str(root / "whole.flac"), _tone(1.0), SR)
    data = (root / "whole.flac").read_bytes()
    (root / "truncated.flac").write_bytes(data[: len(data) // 3])
    (root / "whole.flac").unlink()
    expected["truncated.flac"] = ("truncated", None)  # libsndfile decodes what is there, or fails

    (root / "notes.wav").write_text("this is a text file, not a WAV\n")
    expected["notes.wav"] = ("notes", "unsupported")

    nan = _tone(0.5)
    nan[:, 100:200] = np.nan
    sf.write(root / "nan_float.wav", nan.T, SR, subtype="FLOAT")
    expected["nan_float.wav"] = ("nan_float", "non_finite")

    save_audio(str(root / "blip.wav"), _tone(0.01), SR)
    expected["blip.wav"] = ("blip", "too_short")

    save_audio(str(root / "too_long.flac"), _tone(3.0), SR)
    expected["too_long.flac"] = ("too_long", "too_long")

    save_audio(str(root / "surround_8ch.flac"), _tone(0.5, channels=8), SR)
    expected["surround_8ch.flac"] = ("surround_8ch", (None, 8, SR))

    save_audio(str(root / "hires_96k.wav"), _tone(0.5, sr=96000), 96000, subtype="PCM_24")
    expected["hires_96k.wav"] = ("hires_96k", (None, 1, 96000))

    (root / "dir.flac").mkdir()
    expected["dir.flac"] = ("dir", "unreadable")

    (root / "Ünïcödé ♫ song.flac").parent.mkdir(exist_ok=True)
    save_audio(str(root / "Ünïcödé ♫ song.flac"), _tone(0.5, channels=2), SR)
    expected["Ünïcödé ♫ song.flac"] = ("Ünïcödé___song", (None, 2, SR))

    (root / "with space").mkdir()
    save_audio(str(root / "with space" / "my track.wav"), _tone(0.5), SR)
    expected["with space/my track.wav"] = ("with_space/my_track", (None, 1, SR))
    return root, expected


def test_bad_inputs_become_error_rows_and_the_job_finishes(bad_folder, tmp_path):
    root, expected = bad_folder
    job = hpss_job("job.max_duration_s=2", "job.min_duration_s=0.1")
    out = tmp_path / "out"
    summary = run_job(job, [str(root)], str(out), progress=False)

    table = read_metadata(str(out))
    assert_schema(table)
    rows = table.to_pylist()
    by_track: dict[str, list[dict]] = {}
    for r in rows:
        by_track.setdefault(r["track_id"], []).append(r)
    assert set(by_track) == {track_id for track_id, _ in expected.values()}

    errors = 0
    for name, (track_id, outcome) in expected.items():
        mine = by_track[track_id]
        assert all(r["source_uri"] == str(root / name) for r in mine)
        if name == "truncated.flac":  # either outcome is right, as long as it is one of them
            outcome = mine[0]["error_type"] if mine[0]["status"] == "error" else (None, 1, SR)
        if isinstance(outcome, str):
            (r,) = mine
            assert (r["status"], r["error_type"]) == ("error", outcome), r
            assert r["error_message"] and r["stem"] is None and r["stem_uri"] is None
            letter = json.loads((out / "dead_letter" / "hpss" / f"{track_id}.json").read_text())
            assert (letter["source_uri"], letter["error_type"]) == (str(root / name), outcome)
            assert not (out / "stems" / track_id).exists()
            errors += 1
        else:
            _, channels, sr = outcome
            assert [r["status"] for r in mine] == ["ok"] * len(mine) and len(mine) >= 2, mine
            for r in mine:
                assert (r["channels"], r["sample_rate"]) == (channels, sr)
                info = sf.info(r["stem_uri"])
                assert (info.channels, info.samplerate) == (channels, sr)
    assert summary.tracks_error == errors and summary.tracks_ok == len(expected) - errors
    assert len(summary.errors) == errors

    # No temporary or partial files anywhere in the output.
    files = tree_files(out)
    assert not [f for f in files if f.endswith(".tmp") or "/." in f or f.startswith(".")]
    dead = sorted(f for f in files if f.startswith("dead_letter/"))
    assert len(dead) == errors
