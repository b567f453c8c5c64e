"""``sepflow evaluate``: metrics of known signals, permutation matching, and the whole job
(``sepflow run`` then ``sepflow evaluate`` with oracles) on real audio with the DirectRunner."""
from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import soundfile as sf

from pipelines.evaluate import evaluate
from pipelines.tables import EVALUATION_SCHEMA, read_evaluation
from sepops.metrics import score_stems

SR = 22050


def _stem(data_dir: Path, piece: str, stem: str, seconds: float) -> np.ndarray:
    audio, sr = sf.read(data_dir / piece / "stems" / f"{stem}.flac", dtype="float64", always_2d=True)
    assert sr == SR
    return audio[: int(seconds * SR)].T


def _at_snr(reference: np.ndarray, snr_db: float, rng) -> np.ndarray:
    """``reference`` plus independent white noise whose energy is exactly ``snr_db`` below it."""
    noise = rng.standard_normal(reference.shape)
    noise *= np.sqrt(np.sum(reference**2) / np.sum(noise**2) / 10 ** (snr_db / 10))
    return reference + noise


@pytest.mark.parametrize("snr_db", [10.0, 20.0])
def test_sdr_of_reference_plus_noise_is_the_snr(data_dir, rng, snr_db):
    refs = {s: _stem(data_dir, "loop_1101", s, 3.0) for s in ("accompaniment", "lead")}
    ests = {s: _at_snr(a, snr_db, rng) for s, a in refs.items()}
    scores = score_stems(refs, ests, SR)
    for stem, s in scores.items():
        assert s["sdr"] == pytest.approx(snr_db, abs=0.1), stem
        assert s["si_sdr"] == pytest.approx(snr_db, abs=0.1), stem
        assert s["sdr_frames_median"] == pytest.approx(snr_db, abs=0.5), stem
        assert s["frames"] == 3 and s["duration_s"] == pytest.approx(3.0)


def _write_run(run: Path, units: list[tuple[str, str, str, dict[str, Path]]]) -> None:
    """A run's published metadata: one ok row per (track_id, label, source, {stem: file})."""
    from pipelines.tables import STEM_METADATA_SCHEMA

    now = datetime.now(UTC)
    rows = [
        {"track_id": track_id, "source_uri": str(source), "operator": label, "label": label,
         "operator_params": "{}", "status": "ok", "config_digest": "x", "run_id": "r", "sepflow_version": "0",
         "created_at": now, "stem": stem, "stem_uri": str(path)}
        for track_id, label, source, stems in units for stem, path in stems.items()
    ]
    (run / "metadata").mkdir(parents=True)
    pq.write_table(pa.Table.from_pylist(rows, schema=STEM_METADATA_SCHEMA), run / "metadata" / "stems-r-part-00000.parquet")


def test_unnamed_stems_are_matched_by_best_assignment(data_dir, rng, tmp_path):
    refs = tmp_path / "refs" / "piece" / "stems"
    refs.mkdir(parents=True)
    stems = {s: _stem(data_dir, "loop_1102", s, 3.0) for s in ("accompaniment", "lead", "percussive")}
    for name, audio in stems.items():
        sf.write(refs / f"{name}.wav", audio.T, SR)
    out = tmp_path / "run" / "stems"
    out.mkdir(parents=True)
    # source_0 holds the lead, source_1 the accompaniment: the reverse of the references' order.
    for name, ref in (("source_0", "lead"), ("source_1", "accompaniment")):
        sf.write(out / f"{name}.wav", _at_snr(stems[ref], 15.0, rng).T, SR, subtype="FLOAT")
    _write_run(tmp_path / "run", [
        ("piece/mixture", "ica", "unused.wav", {"source_0": out / "source_0.wav", "source_1": out / "source_1.wav"}),
        ("no_such_piece/mixture", "ica", "unused.wav", {"source_0": out / "source_0.wav"}),
    ])

    result = evaluate([str(tmp_path / "run")], str(tmp_path / "refs"), progress=False)

    rows = {r["track_id"] + ":" + r["stem"]: r for r in read_evaluation(str(tmp_path / "run")).to_pylist()}
    assert result.rows == len(rows) == 3
    for stem, ref in (("source_0", "lead"), ("source_1", "accompaniment")):
        row = rows[f"piece/mixture:{stem}"]
        assert (row["status"], row["matching"], row["reference_stem"]) == ("ok", "best_assignment", ref)
        assert row["reference_track"] == "piece" and row["sdr"] == pytest.approx(15.0, abs=0.2)
    missing = rows["no_such_piece/mixture:source_0"]
    assert missing["status"] == "error" and "no reference track" in missing["error_message"]
    assert "no_such_piece/mixture" in missing["error_message"]
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == ["evaluation", "evaluation_summary", "metadata", "stems"]


@pytest.fixture
def short_loops(data_dir, tmp_path) -> Path:
    """Two loops of the validation set cut to 4 s (mixture and stems), in its folder layout."""
    root = tmp_path / "data"
    for piece in ("loop_1101", "loop_1103"):
        (root / piece / "stems").mkdir(parents=True)
        audio, sr = sf.read(data_dir / piece / "mixture.flac", dtype="int16")
        sf.write(root / piece / "mixture.flac", audio[: 4 * sr], sr)
        for stem in ("accompaniment", "lead", "percussive", "harmonic"):
            audio, sr = sf.read(data_dir / piece / "stems" / f"{stem}.flac", dtype="int16")
            sf.write(root / piece / "stems" / f"{stem}.flac", audio[: 4 * sr], sr)
    return root


def test_run_then_evaluate_with_oracles(short_loops, tmp_path, capsys):
    from pipelines.cli import main
    from pipelines.config import load_job_config
    from pipelines.run import run_job

    run = tmp_path / "run"
    run_job(load_job_config("configs/hpss.yaml"), [str(short_loops / "*" / "mixture.flac")], str(run),
            progress=False)
    args = ["evaluate", "--estimates", str(run), "--references", str(short_loops), "--oracles", "ibm,irm,mix",
            "--markdown", "--no_progress"]

    assert main(args) == 0
    printed = capsys.readouterr().out
    assert printed.startswith("| label | operator | stem | reference stem | tracks |") and "| hpss | hpss | harmonic | harmonic | 2 |" in printed

    table = read_evaluation(str(run))
    assert table.schema == EVALUATION_SCHEMA
    rows = table.to_pylist()
    assert {r["status"] for r in rows} == {"ok"}
    assert {(r["label"], r["stem"]) for r in rows} == {
        (label, stem) for label in ("hpss", "ibm", "irm", "mix") for stem in ("harmonic", "percussive")
    }
    assert len(rows) == 2 * 4 * 2  # tracks x (hpss + 3 oracles) x stems
    hpss = [r for r in rows if r["label"] == "hpss"]
    assert {r["matching"] for r in hpss} == {"name"} and not any(r["is_oracle"] for r in hpss)
    assert all(r["is_oracle"] and r["matching"] == "oracle" for r in rows if r["label"] != "hpss")

    def mean_sdr(label):
        return np.mean([r["sdr"] for r in rows if r["label"] == label])

    assert mean_sdr("mix") < mean_sdr("hpss") < max(mean_sdr("ibm"), mean_sdr("irm"))

    # Re-running replaces the evaluation: same rows, only the new evaluation's files.
    assert main(args) == 0
    again = read_evaluation(str(run))
    assert again.num_rows == len(rows) and len(set(again.column("evaluation_id").to_pylist())) == 1
    files = sorted(p.name for p in (run / "evaluation").iterdir())
    evaluation_id = again.column("evaluation_id")[0].as_py()
    assert files == [f"evaluation-{evaluation_id}-part-00000.parquet"]  # only Parquet: a dataset
    summary = json.loads((run / "evaluation_summary" / f"summary-{evaluation_id}.json").read_text())
    assert {(s["label"], s["stem"], s["tracks"]) for s in summary["summary"]} >= {("hpss", "harmonic", 2)}
    assert not (run / "_sepflow" / "runs" / evaluation_id).exists()
    _every_table_folder_reads_as_a_dataset(run)


def _every_table_folder_reads_as_a_dataset(run):
    """metadata/, features/ and evaluation/ each read whole with pandas, pyarrow and DuckDB."""
    import duckdb
    import pandas as pd
    import pyarrow.dataset as ds

    for folder in ("metadata", "features", "evaluation"):
        path = run / folder
        frame = pd.read_parquet(path)
        dataset = ds.dataset(path, format="parquet")
        count = duckdb.sql(f"select count(*) from read_parquet('{path}/*.parquet')").fetchall()[0][0]
        assert len(frame) > 0 and dataset.count_rows() == len(frame) == count, folder


def test_bad_references_exit_2_with_one_line(tmp_path, capsys):
    from pipelines.cli import main

    status = main(["evaluate", "--estimates", str(tmp_path), "--references", str(tmp_path / "nowhere")])
    err = capsys.readouterr().err.strip()
    assert status == 2
    assert err.startswith("sepflow evaluate: --references") and "nowhere" in err and "\n" not in err
