"""Matching inputs (globs, folders, manifests) and making safe, unique track ids."""
from __future__ import annotations

import csv

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipelines.io import InputError, make_track_id, match_inputs


@pytest.mark.parametrize(
    "relative, expected",
    [
        ("Artist/Album/01 Intro.flac", "Artist/Album/01_Intro"),
        ("../../etc/passwd.wav", "etc/passwd"),
        ("/abs/path/x.wav", "abs/path/x"),
        ("a\\b\\c.flac", "a/b/c"),
        ("Beyoncé/naïve ♫ song.flac", "Beyoncé/naïve___song"),
        (".hidden/.x.wav", "_hidden/_x"),
        ("weird#name?{1}.wav", "weird_name__1_"),
        ("dir.flac", "dir"),
    ],
)
def test_make_track_id(relative, expected):
    assert make_track_id(relative) == expected


def test_long_names_are_shortened_with_a_digest():
    track_id = make_track_id("x" * 400 + ".wav")
    assert len(track_id.encode()) <= 200 and track_id.startswith("xxx")
    assert track_id != make_track_id("x" * 401 + ".wav")


def _touch(path):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"not audio, only names matter here")
    return path


@pytest.fixture
def catalog(tmp_path):
    root = tmp_path / "catalog"
    for rel in ["a/one.flac", "a/two.wav", "b/deep/three.flac", "b/cover.jpg", "top.flac", "dup.flac", "dup.wav"]:
        _touch(root / rel)
    (root / "folder.flac").mkdir()
    return root


def test_recursive_glob_ids_relative_to_the_glob_root(catalog):
    tracks = match_inputs([str(catalog / "**" / "*.flac")])
    ids = {t.track_id: t.source_uri for t in tracks}
    assert set(ids) == {"a/one", "b/deep/three", "top", "dup", "folder"}
    assert ids["a/one"] == str(catalog / "a" / "one.flac")


def test_folder_input_keeps_audio_extensions_and_disambiguates_collisions(catalog):
    tracks = match_inputs([str(catalog)], extensions=("flac", "wav"))
    ids = sorted(t.track_id for t in tracks)
    # dup.flac and dup.wav would both be "dup": each gets its extension and 8 hex of its URI.
    dups = [i for i in ids if i.startswith("dup")]
    assert sorted(i.rsplit("-", 1)[0] for i in dups) == ["dup-flac", "dup-wav"]
    assert all(len(i) == len(i.rsplit("-", 1)[0]) + 9 for i in dups)
    assert {"a/one", "a/two", "b/deep/three", "top", "folder"} <= set(ids)
    assert not any("cover" in i for i in ids)
    assert match_inputs([str(catalog)], extensions=("flac", "wav")) == tracks  # stable


def test_several_patterns_share_one_root(catalog):
    tracks = match_inputs([str(catalog / "a" / "*.flac"), str(catalog / "b" / "**" / "*.flac"), str(catalog / "a" / "one.flac")])
    assert sorted(t.track_id for t in tracks) == ["a/one", "b/deep/three"]


def test_manifests_csv_and_parquet(catalog, tmp_path):
    csv_path = tmp_path / "list.csv"
    with open(csv_path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["uri", "track_id"])
        w.writerow(["catalog/a/one.flac", ""])  # relative to the manifest's folder
        w.writerow([str(catalog / "b/deep/three.flac"), "custom/id 3"])
    tracks = match_inputs([str(csv_path)])
    assert {t.track_id for t in tracks} == {"a/one", "custom/id_3"}
    parquet_path = tmp_path / "list.parquet"
    pq.write_table(pa.table({"path": [str(catalog / "top.flac"), str(catalog / "a/two.wav")]}), parquet_path)
    assert sorted(t.track_id for t in match_inputs([str(parquet_path)])) == ["a/two", "top"]


def test_input_errors(catalog, tmp_path):
    with pytest.raises(InputError, match="matched no files"):
        match_inputs([str(catalog / "*.ogg")])
    with pytest.raises(InputError, match="not found"):
        match_inputs([str(catalog / "missing.flac")])
    with pytest.raises(InputError, match="mix storage schemes"):
        match_inputs([str(catalog / "top.flac"), "memory://bucket/x.flac"])
    bad = tmp_path / "bad.csv"
    bad.write_text("file\nx.flac\n")
    with pytest.raises(InputError, match="needs a column named one of uri"):
        match_inputs([str(bad)])
