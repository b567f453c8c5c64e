"""End to end on local files: the in-process runner, the multi-process DirectRunner, re-runs,
a restarted run, and the `sepflow run` command, on clips of the dev set."""
from __future__ import annotations

import shutil
from pathlib import Path

import pandas as pd
import pyarrow.dataset as ds
import pytest
import yaml

from pipelines.cli import main
from pipelines.run import run_job
from pipelines.tables import read_metadata
from tests.jobs.catalog import (
    assert_hpss_quality,
    assert_ok_rows,
    assert_same_stems,
    comparable,
    cut_catalog,
    hpss_job,
    require_hpss,
    tree_files,
)

ROOT = Path(__file__).resolve().parents[2]
MULTI_PROCESS = ["--runner=DirectRunner", "--direct_num_workers=2", "--direct_running_mode=multi_processing"]


@pytest.fixture(scope="module")
def catalog(tmp_path_factory, data_dir, manifest):
    root = tmp_path_factory.mktemp("catalog")
    return root, cut_catalog(data_dir, manifest, root)


@pytest.fixture(scope="module")
def reference_run(catalog, tmp_path_factory):
    """The hpss job on the in-process runner: the run other runners must reproduce."""
    root, tracks = catalog
    out = tmp_path_factory.mktemp("reference") / "out"
    job = hpss_job()
    summary = run_job(job, [str(root / "**" / "*.flac")], str(out), progress=False)
    return job, out, summary


def test_in_process_run_writes_stems_and_metadata(catalog, reference_run):
    _, tracks = catalog
    job, out, summary = reference_run
    assert (summary.tracks_ok, summary.tracks_error, summary.tracks_skipped) == (len(tracks), 0, 0)
    assert summary.runner == "FnApiRunner"
    audio_ms = sum(int(1000 * t["mix"].shape[1] / t["sr"]) for t in tracks.values())
    counters = summary.beam_counters
    assert (counters["tracks"], counters["units_ok"], counters["audio_ms"]) == (len(tracks), len(tracks), audio_ms)
    assert counters.get("units_error", 0) == counters.get("units_skipped", 0) == 0
    assert summary.audio_s == pytest.approx(sum(t["mix"].shape[1] / t["sr"] for t in tracks.values()))

    table = read_metadata(str(out))
    stems = assert_ok_rows(table, tracks, job)
    assert_hpss_quality(tracks, stems)
    # One table for every reader: pyarrow.dataset and pandas agree with the run's own table.
    assert ds.dataset(out / "metadata", format="parquet").to_table().num_rows == table.num_rows
    frame = pd.read_parquet(out / "metadata")
    assert len(frame) == table.num_rows and set(frame["status"]) == {"ok"}
    assert comparable(summary.metadata) == comparable(table)
    # One operator in the config: stems/<track_id>/<stem>, no label folder.
    assert sorted(tree_files(out / "stems")) == sorted(f"{t}/{s}.wav" for t in tracks for s in ("harmonic", "percussive"))
    # Nothing half written, nothing failed.
    files = tree_files(out)
    assert not [f for f in files if f.endswith(".tmp") or "/." in f]
    assert not (out / "dead_letter").exists()
    assert len([f for f in files if f.startswith("_sepflow/runs/")]) == 1


def test_metadata_reads_as_one_table_in_duckdb(reference_run):
    """DuckDB, pyarrow.dataset and pandas see the same rows and columns in <output>/metadata/."""
    duckdb = pytest.importorskip("duckdb")
    _, out, summary = reference_run
    pattern = str(out / "metadata" / "*.parquet")
    arrow = ds.dataset(out / "metadata", format="parquet").to_table()
    frame = pd.read_parquet(out / "metadata")
    con = duckdb.connect()
    try:
        rel = con.sql(f"select * from read_parquet('{pattern}')")
        assert rel.columns == arrow.column_names == list(frame.columns)
        [(count,)] = con.sql(f"select count(*) from read_parquet('{pattern}')").fetchall()
        assert count == arrow.num_rows == len(frame) == summary.metadata.num_rows > 0
        # The same rows, not only the same number.
        assert comparable(rel.to_arrow_table()) == comparable(arrow)
        # The query the docs show: per-operator mean stem level, and error rows.
        per_operator = con.sql(
            f"""select label, stem, count(*) as n, avg(stem_rms_db) as mean_rms_db
                from read_parquet('{pattern}') where status != 'error'
                group by label, stem order by label, stem"""
        ).fetchall()
        by_stem = {(r["label"], r["stem"]): r["stem_rms_db"] for r in arrow.to_pylist()}
        assert [(label, stem) for label, stem, _, _ in per_operator] == sorted(by_stem)
        for label, stem, n, mean_db in per_operator:
            levels = [r["stem_rms_db"] for r in arrow.to_pylist() if (r["label"], r["stem"]) == (label, stem)]
            assert n == len(levels) and mean_db == pytest.approx(sum(levels) / len(levels))
        [(errors,)] = con.sql(f"select count(*) from read_parquet('{pattern}') where status = 'error'").fetchall()
        assert errors == 0
    finally:
        con.close()


def test_multi_process_runner_reproduces_the_in_process_run(catalog, reference_run, tmp_path):
    root, tracks = catalog
    job, ref_out, _ = reference_run
    out = tmp_path / "out"
    summary = run_job(job, [str(root / "**" / "*.flac")], str(out), MULTI_PROCESS, progress=False)
    assert summary.tracks_ok == len(tracks)
    assert comparable(read_metadata(str(out))) == comparable(read_metadata(str(ref_out)))
    assert_same_stems(out, ref_out)


def test_rerun_skips_complete_tracks_and_overwrite_redoes_them(catalog, tmp_path):
    root, tracks = catalog
    job = hpss_job()
    out = tmp_path / "out"
    inputs = [str(root / "**" / "*.flac")]
    first = run_job(job, inputs, str(out), progress=False)
    stem_files = sorted((out / "stems").rglob("*.wav"))
    mtimes = [p.stat().st_mtime_ns for p in stem_files]

    again = run_job(job, inputs, str(out), progress=False)
    assert (again.tracks_ok, again.tracks_skipped, again.stems_written) == (0, len(tracks), 0)
    table = read_metadata(str(out))
    assert set(table.column("status").to_pylist()) == {"skipped"}
    assert comparable(table) == [dict(r, status="skipped") for r in comparable(first.metadata)]
    assert [p.stat().st_mtime_ns for p in stem_files] == mtimes
    assert_only_this_runs_metadata(out, again)

    # A changed parameter changes the outputs, so those tracks are redone without --overwrite.
    changed = run_job(hpss_job("audio.subtype=PCM_24"), inputs, str(out), progress=False)
    assert changed.tracks_ok == len(tracks)

    redone = run_job(hpss_job("audio.subtype=PCM_24"), inputs, str(out), overwrite=True, progress=False)
    assert (redone.tracks_ok, redone.tracks_skipped) == (len(tracks), 0)
    assert set(read_metadata(str(out)).column("status").to_pylist()) == {"ok"}


def test_restarted_run_finishes_the_rest_without_duplicates(catalog, tmp_path):
    """The state a killed run leaves, built deterministically: some units complete, one with a
    stem but no part yet and a temporary file cut short, no consolidated metadata. The restart
    redoes only the unfinished unit. (test_killed_run_restarts_without_duplicates kills a real
    process; where it lands varies, this fixes the worst case.)"""
    root, tracks = catalog
    job = hpss_job()
    out = tmp_path / "out"
    inputs = [str(root / "**" / "*.flac")]
    run_job(job, inputs, str(out), progress=False)
    killed_track = sorted(tracks)[0]
    (out / "_sepflow" / "parts" / "hpss" / f"{killed_track}.parquet").unlink()
    killed_stem = next((out / "stems" / killed_track).glob("*.wav"))
    killed_stem.unlink()
    orphan = killed_stem.parent / f".{killed_stem.name}.{'0' * 32}.tmp"  # a write cut short
    orphan.write_bytes(b"RIFF half a file")
    shutil.rmtree(out / "metadata")

    summary = run_job(job, inputs, str(out), progress=False)
    assert (summary.tracks_ok, summary.tracks_skipped, summary.tracks_error) == (1, len(tracks) - 1, 0)
    table = read_metadata(str(out))
    statuses = {(r["track_id"], r["stem"]): r["status"] for r in table.to_pylist()}
    assert len(statuses) == table.num_rows  # no duplicate rows
    assert {s for (t, _), s in statuses.items() if t == killed_track} == {"ok"}
    assert {s for (t, _), s in statuses.items() if t != killed_track} == {"skipped"}
    assert_ok_rows(table, tracks, job, statuses=("ok", "skipped"))
    assert not orphan.exists() and killed_stem.exists()


def _kill_catalog(data_dir: Path, manifest: dict, dest: Path) -> dict[str, int]:
    """Six mono loops of 2.5 s, one of them whole (12 s) so the job has a long unit to be
    caught in. Returns ``{track_id: samples}``."""
    from sepops import load_audio, save_audio

    loops = [p for p in manifest["pieces"] if p["subset"] == "loops"][:6]
    if len(loops) < 6:
        pytest.skip("the validation set has fewer than 6 loops")
    lengths = {}
    for i, piece in enumerate(loops):
        mix, sr = load_audio(str(data_dir / piece["files"]["mixture"]))
        n = mix.shape[1] if i == len(loops) - 1 else int(2.5 * sr)
        save_audio(str(dest / f"{piece['id']}.flac"), mix[:, :n], sr)
        lengths[piece["id"]] = n
    return lengths


def test_killed_run_restarts_without_duplicates(data_dir, manifest, tmp_path):
    """SIGKILL a real `sepflow run` process after its first (track, operator) is complete,
    then run the same command again: complete tracks are skipped (stems untouched), the rest
    are done, one set of rows per track, no temporary files, every stem decodes."""
    require_hpss()
    import os
    import signal
    import subprocess
    import sys
    import time

    from sepops import load_audio

    inputs = tmp_path / "in"
    inputs.mkdir()
    lengths = _kill_catalog(data_dir, manifest, inputs)
    out = tmp_path / "out"
    args = ["run", "--config", str(ROOT / "configs" / "hpss.yaml"), "--input", str(inputs), "--output", str(out),
            "--no_progress"]
    parts = out / "_sepflow" / "parts" / "hpss"
    proc = subprocess.Popen(
        [sys.executable, "-m", "pipelines.cli", *args],
        cwd=ROOT, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 300
        while not list(parts.glob("*.parquet")):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"no part appeared (exit {proc.returncode}): {proc.stderr.read().decode()[-2000:]}")
            time.sleep(0.02)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)  # the job and anything it started
        proc.wait()
        proc.stderr.close()
    assert proc.returncode == -signal.SIGKILL, "the job finished before it could be killed"
    # What the killed run left (nothing changes any more): complete units and their stems.
    done = sorted(p.name[: -len(".parquet")] for p in parts.glob("*.parquet"))
    assert 1 <= len(done) <= len(lengths)
    done_stems = {p: p.stat().st_mtime_ns for t in done for p in (out / "stems" / t).glob("*.flac")}
    assert len(done_stems) == 2 * len(done)

    # The same command again, in this process (saves an interpreter start-up).
    assert main(args) == 0
    table = read_metadata(str(out))
    rows = table.to_pylist()
    keys = [(r["track_id"], r["label"], r["stem"]) for r in rows]
    assert len(keys) == len(set(keys)) == 2 * len(lengths)  # one set of rows per track, no duplicates
    assert sorted({r["track_id"] for r in rows}) == sorted(lengths)
    for r in rows:
        assert r["stem"] in ("harmonic", "percussive") and r["stem_uri"] == str(out / "stems" / r["track_id"] / f"{r['stem']}.flac")
        assert r["status"] == ("skipped" if r["track_id"] in done else "ok"), (r["track_id"], r["status"], done)
        audio, sr = load_audio(r["stem_uri"])  # every stem decodes, at full length
        assert audio.shape == (1, lengths[r["track_id"]]) and sr == r["sample_rate"]
    # Complete tracks were not separated again.
    assert {p: p.stat().st_mtime_ns for p in done_stems} == done_stems
    files = tree_files(out)
    assert not [f for f in files if f.endswith(".tmp") or "/." in f or f.startswith(".")]
    assert_only_this_runs_metadata(out)


def test_sepflow_run_command(catalog, tmp_path, capsys):
    require_hpss()
    root, tracks = catalog
    out = tmp_path / "out"
    code = main(
        [
            "run", "--config", str(ROOT / "configs" / "hpss.yaml"),
            "--input", str(root / "loop_1101" / "*.flac"), "--input", str(root / "loop_1102"),
            "--output", str(out), "--set", "audio.format=wav", "--runner=DirectRunner",
        ]
    )
    assert code == 0
    err = capsys.readouterr().err
    assert "| tracks ok | 3 |" in err and "[sepflow]" in err
    table = read_metadata(str(out))
    assert sorted(set(table.column("track_id").to_pylist())) == sorted(tracks)
    assert all(u.endswith(".wav") for u in table.column("stem_uri").to_pylist())


def test_multi_operator_job_writes_each_operator_under_its_label(catalog, tmp_path):
    require_hpss()
    from pipelines.config import job_config_from_dict

    root, tracks = catalog
    job = job_config_from_dict(
        {
            "operators": [
                {"operator": "hpss", "label": "hpss_soft", "params": {"mask": "soft"}},
                {"operator": "hpss", "label": "hpss_binary", "params": {"mask": "binary"}},
            ],
            "audio": {"format": "wav", "subtype": "FLOAT"},
        }
    )
    out = tmp_path / "out"
    summary = run_job(job, [str(root / "**" / "*.flac")], str(out), progress=False)
    assert (summary.units_ok, summary.tracks_ok) == (2 * len(tracks), len(tracks))
    table = read_metadata(str(out))
    stems = assert_ok_rows(table, tracks, job)
    for label in ("hpss_soft", "hpss_binary"):
        assert_hpss_quality(tracks, stems, label=label)
    # Binary masks give each bin to one stem: the two stems differ from the soft ones.
    some = sorted(tracks)[0]
    assert not (stems[(some, "hpss_soft")]["harmonic"] == stems[(some, "hpss_binary")]["harmonic"]).all()

    # Several operators in the config: stems/<track_id>/<label>/<stem>.
    assert sorted(p.relative_to(out / "stems").as_posix() for p in (out / "stems").rglob("*.wav")) == sorted(
        f"{t}/{label}/{s}.wav" for t in tracks for label in ("hpss_soft", "hpss_binary") for s in ("harmonic", "percussive")
    )
    mtimes = {p: p.stat().st_mtime_ns for p in (out / "stems").rglob("*.wav")}

    # --operator runs one of them; the config's layout is kept, so its outputs from the full
    # run are found and skipped.
    from pipelines.cli import main

    config = tmp_path / "multi.yaml"
    config.write_text(yaml.safe_dump(job.to_dict()))
    code = main(["run", "--config", str(config), "--operator", "hpss_binary", "--input", str(root / "**" / "*.flac"),
                 "--output", str(out), "--no_progress"])
    assert code == 0
    table = read_metadata(str(out))
    assert set(table.column("status").to_pylist()) == {"skipped"} and set(table.column("label").to_pylist()) == {"hpss_binary"}
    assert all("/hpss_binary/" in u for u in table.column("stem_uri").to_pylist())
    assert {p: p.stat().st_mtime_ns for p in (out / "stems").rglob("*.wav")} == mtimes


def assert_only_this_runs_metadata(out: Path, summary=None) -> None:
    """The published metadata is one run's shards alone, the latest's (earlier runs' files
    removed)."""
    files = sorted((out / "metadata").glob("*.parquet"))
    assert 1 <= len(files) <= hpss_job().job.metadata_shards
    runs = {f.name.split("-part-")[0] for f in files}
    assert len(runs) == 1 and (summary is None or runs == {f"stems-{summary.run_id}"}), files
