"""One (track, operator) without Beam: pipelines.unit decides skips, writes stems, parts and
dead letters, and reports a part it could not write."""
from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import dataclass

import numpy as np
import pytest

import sepops
import sepops.registry
from pipelines import units as unit_module
from pipelines.config import job_config_from_dict
from pipelines.decode import decode_track
from pipelines.io import Track
from pipelines.records import Unit, read_part
from pipelines.track import separate_unit
from pipelines.units import PartNotWritten, UnitFailed, is_complete
from sepops import Analysis, get_operator, save_audio


@dataclass(frozen=True)
class HalfConfig:
    broken: bool = False
    silent_b: bool = False


class HalvesOperator(sepops.Operator):
    """Two equal halves of the mixture (or a stem one sample short, when ``broken``)."""

    name = "pipeline_unit_halves"
    Config = HalfConfig

    @property
    def stem_names(self):
        return ["a", "b"]

    def separate(self, audio, sr, *, analysis=None):
        half = audio / 2
        if self.config.silent_b:
            return {"a": audio, "b": np.zeros_like(audio)}
        return {"a": half[:, :-1] if self.config.broken else half, "b": half}


@pytest.fixture(autouse=True)
def halves_operator():
    sepops.register(HalvesOperator)
    yield
    sepops.registry._REGISTRY.pop(HalvesOperator.name, None)


@pytest.fixture
def track(tmp_path, rng):
    path = tmp_path / "in" / "t.wav"
    path.parent.mkdir()
    save_audio(str(path), 0.1 * rng.standard_normal((1, 4000)).astype(np.float32), 8000)
    return Track("t", str(path))


def test_the_unit_module_does_not_import_beam():
    code = "import sys, pipelines.track, pipelines.decode, pipelines.sink, pipelines.units, pipelines.records; print('apache_beam' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip() == "False"


def test_a_separated_unit_is_complete_and_a_changed_one_is_not(track, tmp_path):
    out = str(tmp_path / "out")
    job = job_config_from_dict({"operators": ["pipeline_unit_halves"]})
    (spec,) = job.operators
    unit = Unit.of(track, spec, job)
    assert (unit.track_id, unit.label, unit.config_digest) == ("t", spec.label, job.unit_digest(spec))
    operator = get_operator(spec.operator, **spec.params)
    assert not is_complete(unit, job, out, operator)

    audio, sr, _ = decode_track(track.source_uri, job)
    records = separate_unit(unit, job, out, operator, Analysis(audio, sr), run_id="r1", version="v")
    assert [(r.stem, r.status, r.run_id) for r in records] == [("a", "ok", "r1"), ("b", "ok", "r1")]
    assert [r["stem"] for r in read_part(f"{out}/_sepflow/parts/{spec.label}/t.parquet").to_pylist()] == ["a", "b"]
    assert is_complete(unit, job, out, operator)

    changed = job_config_from_dict({"operators": ["pipeline_unit_halves"], "audio": {"format": "wav"}})
    assert not is_complete(Unit.of(track, changed.operators[0], changed), changed, out, operator)


def test_a_failed_unit_writes_one_error_row_and_a_dead_letter(track, tmp_path):
    out = str(tmp_path / "out")
    job = job_config_from_dict({"operators": [{"operator": "pipeline_unit_halves", "params": {"broken": True}}]})
    (spec,) = job.operators
    unit = Unit.of(track, spec, job)
    audio, sr, _ = decode_track(track.source_uri, job)
    operator = get_operator(spec.operator, **spec.params)
    (record,) = separate_unit(unit, job, out, operator, Analysis(audio, sr), run_id="r1", version="v")
    assert (record.status, record.error_type) == ("error", "invalid_output")
    letter = json.loads((tmp_path / "out" / "dead_letter" / spec.label / "t.json").read_text())
    assert (letter["error_type"], letter["error_message"]) == ("invalid_output", record.error_message)
    assert "UnitFailed" in letter["traceback"]
    assert not is_complete(unit, job, out, operator)


def test_decode_errors_and_an_unwritten_part(track, tmp_path, monkeypatch):
    job = job_config_from_dict({"operators": ["pipeline_unit_halves"], "job": {"min_duration_s": 1.0}})
    with pytest.raises(UnitFailed) as failed:
        decode_track(track.source_uri, job)  # 0.5 s
    assert (failed.value.error_type, failed.value.traceback_text()) == ("too_short", "")

    job = job_config_from_dict({"operators": ["pipeline_unit_halves"]})
    (spec,) = job.operators
    audio, sr, _ = decode_track(track.source_uri, job)

    def no_storage(uri, records):
        raise OSError("disk full")

    monkeypatch.setattr(unit_module, "write_part", no_storage)
    operator = get_operator(spec.operator, **spec.params)
    with pytest.raises(PartNotWritten):
        separate_unit(Unit.of(track, spec, job), job, str(tmp_path / "out"), operator, Analysis(audio, sr), run_id="r1", version="v")
    assert not (tmp_path / "out" / "dead_letter").exists()


def test_a_silent_stem_beside_an_audible_one_is_flagged_in_its_row(track, tmp_path):
    out = str(tmp_path / "out")
    job = job_config_from_dict({"operators": [{"operator": "pipeline_unit_halves", "params": {"silent_b": True}}]})
    (spec,) = job.operators
    audio, sr, _ = decode_track(track.source_uri, job)
    operator = get_operator(spec.operator, **spec.params)
    a, b = separate_unit(Unit.of(track, spec, job), job, out, operator, Analysis(audio, sr), run_id="r1", version="v")
    assert (a.stem, a.status, a.warning) == ("a", "ok", None)
    assert (b.stem, b.status, b.stem_rms_db) == ("b", "ok", -120.0)
    assert b.warning.startswith("silent stem: -120 dBFS RMS")
    rows = read_part(f"{out}/_sepflow/parts/{spec.label}/t.parquet").to_pylist()
    assert [r["warning"] is not None for r in rows] == [False, True]


def test_a_silent_input_is_flagged_on_every_row_of_its_track(tmp_path):
    """A silent track is separated (its stems are silent) and every row says why."""
    from pipelines.run import run_job
    from pipelines.tables import read_metadata
    from sepops import save_audio

    inputs = tmp_path / "in"
    inputs.mkdir()
    save_audio(str(inputs / "silence.flac"), np.zeros((2, 22050), np.float32), 22050)
    job = job_config_from_dict({"operators": [{"operator": "hpss"}]})
    summary = run_job(job, [str(inputs)], str(tmp_path / "out"), progress=False)
    assert (summary.tracks_ok, summary.tracks_error) == (1, 0)
    rows = read_metadata(str(tmp_path / "out")).to_pylist()
    assert sorted(r["stem"] for r in rows) == ["harmonic", "percussive"]
    assert all(r["status"] == "ok" and r["warning"].startswith("silent input: every stem is at or below -90 dBFS")
               for r in rows)
