"""A catalog of mixed formats (iTunes AAC/ALAC, Opus, MP3, WMA, AIFF) through the job: every
track separated, its tags in the metadata, a broken upload an error row."""
from __future__ import annotations

from pathlib import Path

from pipelines.config import job_config_from_dict
from pipelines.metadata import STEM_METADATA_SCHEMA, read_metadata
from pipelines.run import run_job
from sepops import load_audio

from .test_formats import CASES, TAGS, _tag

ROOT = Path(__file__).resolve().parents[1]


def test_a_folder_of_mixed_formats_with_tags(tmp_path):
    audio, sr = load_audio(str(ROOT / "examples" / "loop_stereo.flac"))
    audio = audio[:, : 2 * sr]
    inputs = tmp_path / "catalog"
    inputs.mkdir()
    names = ["aac.m4a", "alac.m4a", "opus.opus", "lame.mp3", "wma.wma", "pcm.aiff"]
    for name in names:
        path = inputs / name
        path.write_bytes(CASES[name][0](audio, sr))
        if path.suffix != ".aiff":
            _tag(path)
    (inputs / "broken.m4a").write_bytes(b"\x00\x00\x00\x20ftypM4A " + b"\x07" * 300)
    job = job_config_from_dict({"operators": [{"operator": "hpss"}]})
    summary = run_job(job, [str(inputs)], str(tmp_path / "out"), progress=False)
    assert (summary.tracks_ok, summary.tracks_error) == (len(names), 1)
    table = read_metadata(str(tmp_path / "out"))
    assert set(STEM_METADATA_SCHEMA.names) <= set(table.column_names)
    rows = table.to_pylist()
    by_track = {}
    for r in rows:
        by_track.setdefault(r["track_id"], []).append(r)
    assert by_track["broken"][0]["status"] == "error" and by_track["broken"][0]["error_type"] == "unsupported"
    assert "0x" not in by_track["broken"][0]["error_message"]
    codecs = {"aac": "aac", "alac": "alac", "opus": "opus", "lame": "mp3", "wma": "wma", "pcm": "pcm"}
    for name in names:
        track_id = name.split(".")[0]
        stems = by_track[track_id]
        assert sorted(r["stem"] for r in stems) == ["harmonic", "percussive"]
        for r in stems:
            assert r["status"] == "ok" and Path(r["stem_uri"]).is_file()
            assert r["source_codec"] == codecs[track_id]
            assert abs(r["source_duration_s"] - 2.0) < 0.1
            if track_id == "pcm":  # untagged: nulls, not errors
                assert (r["source_artist"], r["source_isrc"], r["source_track_number"]) == (None, None, None)
            else:
                assert (r["source_artist"], r["source_title"], r["source_album"]) == (
                    TAGS["artist"], TAGS["title"], TAGS["album"])
                assert (r["source_track_number"], r["source_isrc"]) == (3, TAGS["isrc"])
