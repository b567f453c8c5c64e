"""A catalog of mixed formats (iTunes AAC/ALAC, Opus, MP3, WMA, AIFF) through the job: every
track separated, its tags in the metadata, a broken upload an error row."""
from __future__ import annotations

from pathlib import Path

from pipelines.config import job_config_from_dict
from pipelines.run import run_job
from pipelines.tables import STEM_METADATA_SCHEMA, read_metadata
from sepops import load_audio
from tests.sepops.test_formats import CASES, TAGS, _tag

ROOT = Path(__file__).resolve().parents[2]


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


def test_stems_as_mp3_and_opus_previews(tmp_path):
    import numpy as np

    source = str(ROOT / "examples" / "loop_stereo.flac")
    mix, sr = load_audio(source)
    for fmt, rate in (("mp3", sr), ("opus", 48000)):
        out = tmp_path / fmt
        job = job_config_from_dict(
            {"operators": [{"operator": "hpss"}], "audio": {"format": fmt, "subtype": "PCM_16"}}
        )
        assert run_job(job, [source], str(out), progress=False).tracks_ok == 1
        rows = read_metadata(str(out)).to_pylist()
        total = 0
        for r in rows:
            assert r["stem_uri"].endswith(f".{fmt}") and r["sample_rate"] == rate
            stem, stem_sr = load_audio(r["stem_uri"])
            assert stem_sr == rate and abs(stem.shape[1] / stem_sr - mix.shape[1] / sr) < 0.1
            total = total + stem[:, : int(2.0 * stem_sr)]
        # The two lossy stems still add up to the mixture, to a preview's precision.
        ref = load_audio(source, sr=rate)[0][:, : int(2.0 * rate)]
        lag = int(np.argmax(np.correlate(total[0, :20000], ref[0, 2000:12000], mode="valid"))) - 2000
        seg = total[:, 4000 + lag : 4000 + lag + rate]
        snr = 10 * np.log10(np.sum(ref[:, 4000 : 4000 + rate] ** 2) / np.sum((ref[:, 4000 : 4000 + rate] - seg) ** 2))
        assert snr > 10, (fmt, snr)


def test_lossy_formats_refuse_pcm_subtypes():
    import pytest

    from pipelines.config import ConfigError

    with pytest.raises(ConfigError, match="subtype PCM_24 applies to flac and wav"):
        job_config_from_dict({"operators": [{"operator": "hpss"}], "audio": {"format": "opus", "subtype": "PCM_24"}})
