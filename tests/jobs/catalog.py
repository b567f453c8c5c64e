"""Shared pieces of the pipeline tests (no tests here): a small catalog cut from the dev set,
the hpss job, and checks of stems and metadata rows."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from pipelines.config import job_config_from_dict
from pipelines.tables import STEM_METADATA_SCHEMA
from sepops import list_operators, load_audio, save_audio
from sepops.metrics import bss_eval, mean_sdr, trivial_estimate
from tests.conftest import load_piece

#: Loops carry true percussive/harmonic stems, what hpss separates.
PIECES = ("loop_1101", "loop_1102")
CLIP_S = 3.0
#: Columns that legitimately differ between two runs of the same job.
RUN_COLUMNS = ("processing_s", "created_at", "run_id", "source_uri", "stem_uri")


def require_hpss():
    if "hpss" not in list_operators():
        pytest.skip("the hpss operator is not registered yet")


def hpss_job(*overrides: str):
    """The job of configs/hpss.yaml, written as WAV FLOAT so stems sum back exactly."""
    require_hpss()
    return job_config_from_dict(
        {"operators": [{"operator": "hpss"}], "audio": {"format": "wav", "subtype": "FLOAT"}},
        overrides=list(overrides),
    )


def cut_catalog(data_dir: Path, manifest: dict, dest: Path, seconds: float = CLIP_S) -> dict[str, dict]:
    """Write the first ``seconds`` of each piece's mono and stereo mixture under ``dest``.

    Returns ``{track_id: {"mix", "sr", "refs"}}`` (``refs`` for the mono tracks only).
    """
    tracks = {}
    by_id = {p["id"]: p for p in manifest["pieces"]}
    for i, piece_id in enumerate(PIECES):
        mix, sr, refs = load_piece(data_dir, by_id[piece_id], stems_key="hpss_stems")
        n = int(seconds * sr)
        path = dest / piece_id / "mono.flac"
        path.parent.mkdir(parents=True, exist_ok=True)
        save_audio(str(path), mix[:, :n], sr)
        tracks[f"{piece_id}/mono"] = {"mix": load_audio(str(path))[0], "sr": sr, "refs": {k: v[:, :n] for k, v in refs.items()}}
        if i == 0:  # one stereo track too
            stereo, sr = load_audio(str(data_dir / by_id[piece_id]["files"]["mixture_stereo"]))
            path = dest / piece_id / "stereo.flac"
            save_audio(str(path), stereo[:, :n], sr)
            tracks[f"{piece_id}/stereo"] = {"mix": load_audio(str(path))[0], "sr": sr, "refs": None}
    return tracks


def assert_schema(table: pa.Table) -> None:
    assert table.schema.remove_metadata().equals(STEM_METADATA_SCHEMA.remove_metadata(), check_metadata=False), (
        f"schema differs:\n{table.schema}"
    )


def assert_ok_rows(table: pa.Table, catalog: dict[str, dict], job, read=load_audio, statuses=("ok",)) -> dict:
    """Every track has one ok row per stem of every operator, and each row matches its file.

    Returns ``{(track_id, label): {stem: audio}}`` read back from the stem files.
    """
    assert_schema(table)
    rows = table.to_pylist()
    stems_read = {}
    for spec in job.operators:
        from sepops import get_operator

        stem_names = get_operator(spec.operator, **spec.params).stem_names
        for track_id, track in catalog.items():
            mine = [r for r in rows if r["track_id"] == track_id and r["label"] == spec.label]
            assert sorted(r["stem"] for r in mine) == sorted(stem_names), (track_id, mine)
            audio = {}
            for r in mine:
                assert r["status"] in statuses and r["error_type"] is None and r["error_message"] is None
                assert r["operator"] == spec.operator and json.loads(r["operator_params"]) == spec.params
                # One operator in the config: stems/<track_id>/<stem>; several: .../<label>/<stem>.
                folder = f"{track_id}/{spec.label}" if job.stems_by_label else track_id
                assert r["stem_uri"].endswith(f"/stems/{folder}/{r['stem']}.{job.audio.format}"), r["stem_uri"]
                stem, sr = read(r["stem_uri"])
                audio[r["stem"]] = stem
                assert (r["sample_rate"], r["channels"]) == (track["sr"], track["mix"].shape[0]) == (sr, stem.shape[0])
                assert r["duration_s"] == pytest.approx(track["mix"].shape[1] / track["sr"])
                rms_db = 10 * np.log10(max(np.mean(np.square(stem, dtype=np.float64)), 1e-12))
                assert r["stem_rms_db"] == pytest.approx(rms_db, abs=0.05)
                assert r["stem_peak_db"] == pytest.approx(20 * np.log10(np.abs(stem).max()), abs=0.05)
                assert r["processing_s"] > 0 and r["sepflow_version"] and r["created_at"] is not None
            assert sum(r["energy_share"] for r in mine) == pytest.approx(1.0, abs=1e-6)
            stems_read[(track_id, spec.label)] = audio
    assert len(rows) == sum(len(v) for v in stems_read.values())
    return stems_read


def assert_hpss_quality(catalog: dict[str, dict], stems_read: dict, label: str = "hpss") -> None:
    """Soft-mask stems sum to the mixture, and beat the trivial estimate where truth is known."""
    for track_id, track in catalog.items():
        stems = stems_read[(track_id, label)]
        np.testing.assert_allclose(sum(stems.values()), track["mix"], atol=1e-4)
        if track["refs"]:
            refs = track["refs"]
            estimate = {k: stems[k] for k in refs}
            sdr = mean_sdr(bss_eval(refs, estimate))
            trivial = mean_sdr(bss_eval(refs, trivial_estimate(track["mix"], refs)))
            assert sdr > trivial + 1.0, (track_id, sdr, trivial)


def comparable(table: pa.Table) -> list[dict]:
    """Rows without the columns that differ from run to run, in a fixed order."""
    keep = [c for c in table.column_names if c not in RUN_COLUMNS]
    rows = table.select(keep).to_pylist()
    return sorted(rows, key=lambda r: (r["track_id"], r["label"], r["stem"] or ""))


def tree_files(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()}


def assert_same_stems(out: Path, reference: Path) -> None:
    """The same stem files with bit-identical samples (headers of float WAVs carry a timestamp)."""
    files = tree_files(reference / "stems")
    assert files and tree_files(out / "stems") == files
    for f in files:
        a, sr_a = load_audio(str(out / "stems" / f))
        b, sr_b = load_audio(str(reference / "stems" / f))
        assert sr_a == sr_b and np.array_equal(a, b), f
