"""A growing catalog keeps its track ids: a file's id, once written, never moves; a newcomer
whose name an earlier file holds is the one suffixed; re-runs skip what is done and leave
no stems outside the metadata."""
from __future__ import annotations

from pathlib import Path

from pipelines.config import job_config_from_dict
from pipelines.io import match_inputs
from pipelines.run import run_job
from pipelines.tables import read_metadata
from pipelines.track_ids import read_known_ids
from sepops import load_audio
from tests.sepops.test_formats import CASES

ROOT = Path(__file__).resolve().parents[2]
HPSS = {"operators": [{"operator": "hpss"}], "features": {"activity": False, "onsets": False, "loudness": False}}


def _run(inputs: Path, out: Path) -> tuple[dict[str, str], dict[str, str]]:
    """One run: ({source file name: track id}, {track id: status}) of its metadata."""
    summary = run_job(job_config_from_dict(HPSS), [str(inputs)], str(out), progress=False)
    assert summary.tracks_error == 0
    rows = read_metadata(str(out)).to_pylist()
    ids = {Path(r["source_uri"]).name: r["track_id"] for r in rows}
    status = {r["track_id"]: r["status"] for r in rows}
    return ids, status


def _stem_folders(out: Path) -> set[str]:
    return {str(p.parent.relative_to(out / "stems")) for p in (out / "stems").rglob("*.flac")}


def test_a_catalog_grown_over_three_runs_keeps_every_id(tmp_path):
    audio, sr = load_audio(str(ROOT / "examples" / "loop_stereo.flac"))
    audio = audio[:, : sr]
    inputs, out = tmp_path / "catalog", tmp_path / "out"
    inputs.mkdir()

    (inputs / "loop.m4a").write_bytes(CASES["aac.m4a"][0](audio, sr))
    ids1, status1 = _run(inputs, out)
    assert ids1 == {"loop.m4a": "loop"} and status1 == {"loop": "ok"}

    (inputs / "loop.mp3").write_bytes(CASES["lame.mp3"][0](audio, sr))
    ids2, status2 = _run(inputs, out)
    assert ids2["loop.m4a"] == "loop"  # kept: the newcomer is the one suffixed
    assert ids2["loop.mp3"].startswith("loop-mp3-") and len(ids2["loop.mp3"]) == len("loop-mp3-") + 8
    assert status2 == {"loop": "skipped", ids2["loop.mp3"]: "ok"}

    (inputs / "Loop.ogg").write_bytes(CASES["vorbis.ogg"][0](audio, sr))  # the same id without case
    (inputs / "other.flac").write_bytes(CASES["flac.flac"][0](audio, sr))
    ids3, status3 = _run(inputs, out)
    assert {k: ids3[k] for k in ids2} == ids2
    assert ids3["Loop.ogg"].startswith("Loop-ogg-") and ids3["other.flac"] == "other"
    assert status3 == {"loop": "skipped", ids2["loop.mp3"]: "skipped", ids3["Loop.ogg"]: "ok", "other": "ok"}
    # Every stem folder is a track of the table: nothing orphaned.
    assert _stem_folders(out) == set(ids3.values())


def test_a_file_that_leaves_and_comes_back_gets_its_old_id(tmp_path):
    audio, sr = load_audio(str(ROOT / "examples" / "loop_stereo.flac"))
    audio = audio[:, : sr]
    inputs, out = tmp_path / "catalog", tmp_path / "out"
    inputs.mkdir()
    flac = CASES["flac.flac"][0](audio, sr)
    (inputs / "a.flac").write_bytes(flac)
    (inputs / "a.wav").write_bytes(CASES["pcm24.wav"][0](audio, sr))
    first, _ = _run(inputs, out)
    assert sorted(first) == ["a.flac", "a.wav"] and all(i.startswith("a-") for i in first.values())
    (inputs / "a.wav").unlink()
    second, _ = _run(inputs, out)
    assert second == {"a.flac": first["a.flac"]}  # alone now, but it keeps its suffix
    (inputs / "a.wav").write_bytes(CASES["pcm24.wav"][0](audio, sr))
    third, status = _run(inputs, out)
    assert third == first and set(status.values()) == {"skipped"}


def test_ids_from_an_output_written_before_id_records(tmp_path):
    """Outputs of earlier versions hold only the metadata table: its ids are the known ones."""
    audio, sr = load_audio(str(ROOT / "examples" / "loop_stereo.flac"))
    inputs, out = tmp_path / "catalog", tmp_path / "out"
    inputs.mkdir()
    (inputs / "song.flac").write_bytes(CASES["flac.flac"][0](audio[:, :sr], sr))
    _run(inputs, out)
    for record in (out / "_sepflow" / "track_ids").iterdir():
        record.unlink()
    known = read_known_ids(str(out))
    assert known.by_uri == {str(inputs / "song.flac"): "song"}
    (inputs / "Song.wav").write_bytes(CASES["pcm24.wav"][0](audio[:, :sr], sr))
    tracks = {Path(t.source_uri).name: t for t in match_inputs([str(inputs)], known=known)}
    assert tracks["song.flac"].track_id == "song" and not tracks["song.flac"].new_id
    assert tracks["Song.wav"].track_id.startswith("Song-wav-") and tracks["Song.wav"].new_id
