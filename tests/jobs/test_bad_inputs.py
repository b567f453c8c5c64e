"""Broken, unusual and hostile inputs through the whole job: a folder of broken files (empty,
truncated, mislabelled, NaN, too short or long, odd channels and rates, odd names), file names
that try to escape or collide, and a folder of fuzzed (truncated, bit-flipped, random,
extreme-header) files. The job finishes; every input ends as ok rows with whole stems or as one
error row with the cause and a dead letter, without stems; nothing lands outside --output."""
from __future__ import annotations

import json
import os
import unicodedata
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from pipelines.config import job_config_from_dict
from pipelines.io import make_track_id, match_inputs
from pipelines.run import run_job
from pipelines.tables import read_metadata
from sepops import load_audio, save_audio
from tests.jobs.catalog import assert_schema, hpss_job, tree_files
from tests.sepops.test_fuzz_audio import EXTREME, SEEDS, wav_header

ROOT = Path(__file__).resolve().parents[2]
HPSS = {"operators": [{"operator": "hpss"}], "job": {"min_duration_s": 0.01}}


def _tone(path: Path, seconds: float = 0.3, sr: int = 8000) -> None:
    t = np.arange(int(seconds * sr)) / sr
    sf.write(str(path), 0.3 * np.sin(2 * np.pi * 440 * t), sr, format="WAV")


def _all_files_under(root: Path) -> list[Path]:
    return [Path(folder) / name for folder, _, names in os.walk(root) for name in names]


def test_hostile_file_names_stay_under_the_output_with_unique_recorded_ids(tmp_path):
    inputs = tmp_path / "in"
    (inputs / "Album").mkdir(parents=True)
    names = [
        "..hidden.wav", "a..b.wav", "\x01bell\x07.wav", "line\nbreak.wav", "tab\there.wav",
        "x" * 240 + ".wav", "Song.wav", "song.wav", unicodedata.normalize("NFC", "café.wav"),
        unicodedata.normalize("NFD", "café.wav"), "Album/.. dots.wav", "-rf *.wav", "$(reboot).wav",
    ]
    for name in names:
        _tone(inputs / name)
    # A manifest may name ids that try to climb out, or are absolute.
    manifest = tmp_path / "manifest.csv"
    manifest.write_text(
        "uri,track_id\n" + f"{inputs / 'Song.wav'},../../etc/passwd\n" + f"{inputs / 'song.wav'},/abs/olute\n"
    )
    out = tmp_path / "out"
    summary = run_job(job_config_from_dict(HPSS), [str(inputs)], str(out), progress=False)
    assert summary.tracks_ok == len(names) and summary.tracks_error == 0
    rows = read_metadata(str(out)).to_pylist()
    ids = {r["track_id"] for r in rows}
    assert len(ids) == len(names)
    folded = {i.casefold() for i in ids}
    assert len(folded) == len(ids)  # unique also on a case-insensitive store
    for r in rows:
        assert not any(c in r["track_id"] for c in "\x00\x01\x07\n\t")
        assert all(part not in ("", ".", "..") for part in r["track_id"].split("/"))
        assert all(len(part.encode()) <= 200 for part in r["track_id"].split("/"))
    # Collisions (case, Unicode normalisation) are suffixed deterministically and recorded.
    collided = {r["track_id"]: r["track_id_collision"] for r in rows if r["track_id_collision"]}
    assert sorted(collided.values()) == sorted(["Song", "song", "café", "café"])
    again = match_inputs([str(inputs)], job_config_from_dict(HPSS).job.extensions)
    assert sorted(t.track_id for t in again) == sorted(ids)  # stable from run to run
    for path in _all_files_under(out):
        assert path.resolve().is_relative_to(out.resolve())
    # The manifest's ids cannot climb out or become absolute either.
    out2 = tmp_path / "out2"
    run_job(job_config_from_dict(HPSS), [str(manifest)], str(out2), progress=False)
    ids2 = sorted(r["track_id"] for r in read_metadata(str(out2)).to_pylist())
    assert set(ids2) == {"etc/passwd", "abs/olute"}
    for path in _all_files_under(out2):
        assert path.resolve().is_relative_to(out2.resolve())
    assert make_track_id("../../../x.flac") == "x" and make_track_id("/etc/../x.wav") == "etc/x"


def test_a_folder_of_fuzzed_files_gives_whole_stems_or_error_rows(tmp_path):
    rng = np.random.default_rng(7)
    inputs = tmp_path / "fuzz"
    inputs.mkdir()
    count = 0
    for seed, data in sorted(SEEDS.items()):
        ext = seed.rsplit(".", 1)[-1]
        for k in range(4):
            cut = data[: int(len(data) * rng.uniform(0.0, 1.0))]
            (inputs / f"{seed}-cut{k}.{ext}").write_bytes(cut)
            flipped = bytearray(data)
            for _ in range(int(rng.integers(1, 12))):
                i = int(rng.uniform(0, 1) ** 2 * len(flipped))
                flipped[i] ^= int(rng.integers(1, 256))
            (inputs / f"{seed}-flip{k}.{ext}").write_bytes(bytes(flipped))
            count += 2
    for k in range(6):
        (inputs / f"random{k}.wav").write_bytes(rng.integers(0, 256, int(rng.integers(0, 5000)), dtype=np.uint8).tobytes())
        count += 1
    for i, (name, fields) in enumerate(sorted(EXTREME.items())):
        payload = rng.integers(0, 256, min(fields["data_bytes"], 64_000), dtype=np.uint8).tobytes()
        (inputs / f"extreme{i}.wav").write_bytes(wav_header(**fields, payload=payload))
        count += 1
    out = tmp_path / "out"
    job = job_config_from_dict({**HPSS, "job": {"min_duration_s": 0.0}})
    summary = run_job(job, [str(inputs)], str(out), progress=False)
    assert summary.tracks == count
    rows = read_metadata(str(out)).to_pylist()
    by_track: dict[str, list[dict]] = {}
    for r in rows:
        by_track.setdefault(r["track_id"], []).append(r)
    assert len(by_track) == count
    errors = 0
    for track_id, group in by_track.items():
        stem_dir = out / "stems" / track_id
        if group[0]["status"] == "error":
            errors += 1
            assert len(group) == 1 and group[0]["error_type"] and group[0]["error_message"]
            assert not stem_dir.exists()  # never a stem, whole or half, for a failed track
        else:
            assert sorted(r["stem"] for r in group) == ["harmonic", "percussive"]
            for r in group:
                stem, _ = load_audio(r["stem_uri"])  # every written stem decodes whole
                assert np.isfinite(stem).all()
    assert errors >= 10  # most of the damage is caught, not decoded as noise
    assert not [p for p in _all_files_under(out) if p.name.endswith(".tmp")]


def test_a_job_refuses_an_output_inside_its_input_unless_asked(tmp_path):
    import pytest

    from pipelines.cli import main
    from pipelines.errors import EXIT_USAGE

    inputs = tmp_path / "music"
    inputs.mkdir()
    _tone(inputs / "a.wav")
    for output, spec in [(inputs / "out", str(inputs)), (inputs, str(inputs)), (inputs / "x", f"{inputs}/**/*.wav")]:
        code = main(["run", "--operator", "hpss", "--input", spec, "--output", str(output), "--no_progress"])
        assert code == EXIT_USAGE
        assert not (output / "stems").exists()
    with pytest.raises(Exception, match="allow_output_in_input"):
        run_job(job_config_from_dict(HPSS), [str(inputs)], str(inputs / "out"), progress=False)
    job = job_config_from_dict({**HPSS, "job": {"allow_output_in_input": True, "min_duration_s": 0.01}})
    assert run_job(job, [str(inputs)], str(inputs / "out"), progress=False).tracks_ok == 1
    # A single file or a manifest names its tracks: an output beside them is fine.
    assert run_job(job_config_from_dict(HPSS), [str(inputs / "a.wav")], str(inputs / "o2"), progress=False).tracks_ok == 1


def test_file_size_and_channel_limits_become_error_rows(tmp_path):
    inputs = tmp_path / "in"
    inputs.mkdir()
    _tone(inputs / "small.wav")
    sf.write(str(inputs / "big.wav"), np.zeros((8000 * 60, 2), np.float32), 8000)  # 1.9 MB of PCM_16
    sf.write(str(inputs / "many.wav"), np.zeros((4000, 20), np.float32), 8000)  # 20 channels
    job = job_config_from_dict({**HPSS, "job": {"max_file_mb": 1.0, "min_duration_s": 0.01}})
    run_job(job, [str(inputs)], str(tmp_path / "out"), progress=False)
    rows = {r["track_id"]: r for r in read_metadata(str(tmp_path / "out")).to_pylist() if r["status"] == "error"}
    assert rows["big"]["error_type"] == "too_large" and "job.max_file_mb" in rows["big"]["error_message"]
    assert rows["many"]["error_type"] == "too_many_channels" and "20 channels" in rows["many"]["error_message"]
    assert "small" not in rows


def test_a_track_over_its_time_limit_becomes_a_timeout_row_and_writes_nothing_late(tmp_path):
    import time
    from dataclasses import dataclass

    import sepops
    import sepops.registry

    @dataclass(frozen=True)
    class StallConfig:
        stall_s: float = 3.0

    class StallingOperator(sepops.Operator):
        """Halves, but stalls on tracks longer than 1 s (a pathological file)."""

        name = "pipeline_test_stalling"
        Config = StallConfig
        stem_names = ("a", "b")

        def separate(self, audio, sr, *, analysis=None):
            if audio.shape[1] > sr:
                time.sleep(self.config.stall_s)
            return {"a": audio / 2, "b": audio / 2}

    sepops.register(StallingOperator)
    try:
        inputs = tmp_path / "in"
        inputs.mkdir()
        _tone(inputs / "short.wav", seconds=0.5)
        _tone(inputs / "stalls.wav", seconds=2.0)
        out = tmp_path / "out"
        job = job_config_from_dict({"operators": [{"operator": "pipeline_test_stalling"}],
                                    "job": {"track_timeout_s": 0.5, "min_duration_s": 0.01}})
        started = time.monotonic()
        summary = run_job(job, [str(inputs)], str(out), progress=False)
        assert time.monotonic() - started < 3.0  # the job did not wait for the stalled track
        assert (summary.tracks_ok, summary.tracks_error) == (1, 1)
        rows = {r["track_id"]: r for r in read_metadata(str(out)).to_pylist() if r["status"] == "error"}
        assert rows["stalls"]["error_type"] == "timeout" and "job.track_timeout_s" in rows["stalls"]["error_message"]
        time.sleep(3.5)  # the stalled thread finishes its computation and must write nothing
        assert not (out / "stems" / "stalls").exists()
        part = read_metadata(str(out)).to_pylist()
        assert [r["error_type"] for r in part if r["track_id"] == "stalls"] == ["timeout"]
        from pipelines.records import read_part

        assert read_part(str(out / "_sepflow" / "parts" / "pipeline_test_stalling" / "stalls.parquet")).to_pylist()[0][
            "error_type"] == "timeout"
    finally:
        sepops.registry._REGISTRY.pop("pipeline_test_stalling", None)


# --- bad inputs ----------------------------------------
SR = 22050


def _tone_array(seconds: float, channels: int = 1, sr: int = SR) -> np.ndarray:
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

    save_audio(str(root / "whole.flac"), _tone_array(1.0), SR)
    data = (root / "whole.flac").read_bytes()
    (root / "truncated.flac").write_bytes(data[: len(data) // 3])
    (root / "whole.flac").unlink()
    expected["truncated.flac"] = ("truncated", None)  # libsndfile decodes what is there, or fails

    (root / "notes.wav").write_text("this is a text file, not a WAV\n")
    expected["notes.wav"] = ("notes", "unsupported")

    nan = _tone_array(0.5)
    nan[:, 100:200] = np.nan
    sf.write(root / "nan_float.wav", nan.T, SR, subtype="FLOAT")
    expected["nan_float.wav"] = ("nan_float", "non_finite")

    save_audio(str(root / "blip.wav"), _tone_array(0.01), SR)
    expected["blip.wav"] = ("blip", "too_short")

    save_audio(str(root / "too_long.flac"), _tone_array(3.0), SR)
    expected["too_long.flac"] = ("too_long", "too_long")

    save_audio(str(root / "surround_8ch.flac"), _tone_array(0.5, channels=8), SR)
    expected["surround_8ch.flac"] = ("surround_8ch", (None, 8, SR))

    save_audio(str(root / "hires_96k.wav"), _tone_array(0.5, sr=96000), 96000, subtype="PCM_24")
    expected["hires_96k.wav"] = ("hires_96k", (None, 1, 96000))

    (root / "dir.flac").mkdir()
    expected["dir.flac"] = ("dir", "unreadable")

    (root / "Ünïcödé ♫ song.flac").parent.mkdir(exist_ok=True)
    save_audio(str(root / "Ünïcödé ♫ song.flac"), _tone_array(0.5, channels=2), SR)
    expected["Ünïcödé ♫ song.flac"] = ("Ünïcödé___song", (None, 2, SR))

    (root / "with space").mkdir()
    save_audio(str(root / "with space" / "my track.wav"), _tone_array(0.5), SR)
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
