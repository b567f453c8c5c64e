"""Job configuration and the `sepflow` command line: validation happens before anything runs."""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

import sepops.registry
from pipelines.cli import main
from pipelines.config import ConfigError, job_config_from_dict, load_job_config
from pipelines.errors import EXIT_USAGE
from sepops import list_operators

ROOT = Path(__file__).resolve().parents[2]
CONFIGS = sorted((ROOT / "configs").glob("*.yaml"))


@dataclass(frozen=True)
class ToyConfig:
    gain: float = 0.5
    n_fft: int = 4096
    hop_length: int = 512
    window: str = "hann"


class ToyOperator(sepops.Operator):
    """A config-only operator for these tests (never run)."""

    name = "pipeline_config_toy"
    Config = ToyConfig
    stem_names = ["a", "b"]

    def separate(self, audio, sr, *, analysis=None):  # pragma: no cover - not run here
        return {"a": audio * self.config.gain, "b": audio * (1 - self.config.gain)}


@pytest.fixture(autouse=True)
def toy_operator():
    sepops.register(ToyOperator)
    yield "pipeline_config_toy"
    sepops.registry._REGISTRY.pop("pipeline_config_toy", None)


def config(**sections):
    return {"operators": [{"operator": "pipeline_config_toy"}], **sections}


@pytest.mark.parametrize("path", CONFIGS, ids=[p.name for p in CONFIGS])
def test_shipped_configs_are_valid(path):
    raw = yaml.safe_load(path.read_text())
    missing = [e["operator"] for e in raw["operators"] if e["operator"] not in list_operators()]
    if missing:
        pytest.skip(f"operator(s) {missing} not registered yet")
    job = load_job_config(str(path))
    assert job.operators and all(s.params for s in job.operators)


def test_defaults_and_stft_section_fill_operator_params():
    job = job_config_from_dict(config(stft={"n_fft": 1024, "hop_length": 256}))
    (spec,) = job.operators
    assert spec.label == "pipeline_config_toy"
    assert spec.params == {"gain": 0.5, "n_fft": 1024, "hop_length": 256, "window": "hann"}
    # Without an stft section operators keep their own defaults.
    assert job_config_from_dict(config()).operators[0].params["n_fft"] == 4096
    assert (job.audio.format, job.audio.subtype, job.audio.sample_rate) == ("flac", None, None)
    # An operator's own STFT parameter wins over the job-wide default.
    raw = config(stft={"n_fft": 1024})
    raw["operators"][0]["params"] = {"n_fft": 4096}
    assert job_config_from_dict(raw).operators[0].params["n_fft"] == 4096


@pytest.mark.parametrize(
    "raw, message",
    [
        ({"operators": ["pipeline_config_toy"], "audoi": {}}, r"unknown key 'audoi'.*valid top-level keys"),
        (config(audio={"formt": "wav"}), r"unknown key audio\.formt; valid keys in 'audio': format"),
        (config(audio={"format": "aiff"}), r"audio\.format.*'aiff'.*not one of"),  # mp3 became a stem format
        (config(audio={"format": "flac", "subtype": "FLOAT"}), r"FLOAT needs format wav"),
        (config(job={"max_duration_s": "long"}), r"job\.max_duration_s: 'long'"),
        (config(stft={"n_fft": 8, "hop_length": 4}), r"'stft'.*n_fft"),
        ({"operators": [{"operator": "no_such_op"}]}, r"operators\[0\]\.operator.*unknown operator 'no_such_op'.*valid operators"),
        ({"operators": [{"operator": "pipeline_config_toy", "params": {"gian": 1}}]}, r"operators\[0\]\.params.*unknown parameter\(s\) gian"),
        ({"operators": [{"operator": "pipeline_config_toy", "params": {"gain": "loud"}}]}, r"parameter 'gain'.*expected a number"),
        ({"operators": [{"operator": "pipeline_config_toy", "prams": {}}]}, r"unknown key operators\[0\]\.prams"),
        ({"operators": [{"operator": "irm"}]}, r"needs the true stems"),
        ({"operators": ["pipeline_config_toy", "pipeline_config_toy"]}, r"label\(s\) pipeline_config_toy used twice"),
        ({"operators": [{"operator": "pipeline_config_toy", "label": "../x"}]}, r"label '\.\./x'"),
        ({"operators": []}, r"no operators"),
    ],
)
def test_config_errors_name_the_key(raw, message):
    with pytest.raises(ConfigError, match=message):
        job_config_from_dict(raw)


def test_set_overrides_sections_and_operator_params():
    raw = {"operators": [{"operator": "pipeline_config_toy", "label": "toy1"}]}
    job = job_config_from_dict(
        raw, overrides=["audio.format=wav", "audio.subtype=FLOAT", "job.max_duration_s=60", "toy1.gain=0.25"]
    )
    assert (job.audio.format, job.audio.subtype, job.job.max_duration_s) == ("wav", "FLOAT", 60.0)
    assert job.operators[0].params["gain"] == 0.25
    with pytest.raises(ConfigError, match=r"unknown key 'toy2'.*toy1"):
        job_config_from_dict(raw, overrides=["toy2.gain=1"])
    with pytest.raises(ConfigError, match=r"expected key=value"):
        job_config_from_dict(raw, overrides=["audio.format"])
    with pytest.raises(ConfigError, match=r"parameter 'gain'.*expected a number"):
        job_config_from_dict(raw, overrides=["toy1.gain=loud"])


def test_operator_flag_selects_or_adds_operators():
    raw = {
        "operators": [
            {"operator": "pipeline_config_toy", "label": "soft", "params": {"gain": 0.1}},
            {"operator": "pipeline_config_toy", "label": "hard", "params": {"gain": 0.9}},
        ]
    }
    assert job_config_from_dict(raw).labels == ["soft", "hard"]
    only = job_config_from_dict(raw, operators=["hard"])
    assert only.labels == ["hard"] and only.operators[0].params["gain"] == 0.9
    with pytest.raises(ConfigError, match="unknown operator 'nope'"):
        job_config_from_dict(raw, operators=["nope"])


def _runs_with_defaults(name: str) -> bool:
    """Whether a catalog job can run operator ``name`` with no parameters (not an oracle, and
    no model file to name, as demucs and roformer need)."""
    cls = sepops.registry.operator_class(name)
    if cls.needs_references:
        return False
    try:
        cls.make_config()
    except sepops.OperatorConfigError:
        return False
    return True


def test_stem_layout_follows_the_operators_of_the_config_file(tmp_path):
    one = {"operators": [{"operator": "pipeline_config_toy", "label": "soft"}]}
    two = {
        "operators": [
            {"operator": "pipeline_config_toy", "label": "soft"},
            {"operator": "pipeline_config_toy", "label": "hard"},
        ]
    }
    # One operator: stems/<track_id>/<stem>; several: stems/<track_id>/<label>/<stem>.
    assert not job_config_from_dict(one).stems_by_label
    assert job_config_from_dict(two).stems_by_label
    assert job_config_from_dict(one).stem_layout == "stems/<track_id>/<stem>.flac"
    assert job_config_from_dict(two).stem_layout == "stems/<track_id>/<label>/<stem>.flac"
    # --operator on a multi-operator config keeps that config's layout (finds its outputs) ...
    only = job_config_from_dict(two, operators=["hard"])
    assert only.labels == ["hard"] and only.stems_by_label
    # ... and a job that runs several operators always separates them by label.
    other = next(n for n in list_operators() if n != "pipeline_config_toy" and _runs_with_defaults(n))
    assert job_config_from_dict(one, operators=["soft", other]).stems_by_label
    assert not job_config_from_dict({}, operators=["pipeline_config_toy"]).stems_by_label
    assert job_config_from_dict({}, operators=["pipeline_config_toy", other]).stems_by_label
    # The same through a file.
    path = tmp_path / "two.yaml"
    path.write_text(yaml.safe_dump(two))
    assert load_job_config(str(path), operators=["soft"]).stems_by_label
    path.write_text(yaml.safe_dump(one))
    assert not load_job_config(str(path)).stems_by_label


def test_digest_changes_with_parameters_and_output_format():
    a = job_config_from_dict(config())
    b = job_config_from_dict(config(), overrides=["pipeline_config_toy.gain=0.3"])
    c = job_config_from_dict(config(), overrides=["audio.format=wav"])
    digests = {j.unit_digest(j.operators[0]) for j in (a, b, c)}
    assert len(digests) == 3
    assert a.unit_digest(a.operators[0]) == job_config_from_dict(config()).unit_digest(a.operators[0])


def test_cli_rejects_bad_config_before_running(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("operators:\n  - operator: pipeline_config_toy\n    params: {gian: 1}\n")
    out = tmp_path / "out"
    code = main(["run", "--config", str(bad), "--input", str(tmp_path / "*.wav"), "--output", str(out)])
    assert code == EXIT_USAGE
    assert "unknown parameter(s) gian" in capsys.readouterr().err
    assert not out.exists()
    # Inputs are checked before the pipeline starts, too.
    good = tmp_path / "good.yaml"
    good.write_text("operators: [pipeline_config_toy]\n")
    code = main(["run", "--config", str(good), "--input", str(tmp_path / "none" / "*.wav"), "--output", str(out)])
    assert code == EXIT_USAGE
    assert "matched no files" in capsys.readouterr().err
    assert not out.exists()


def test_cli_adds_only_the_chosen_subcommands_arguments(monkeypatch, capsys):
    """`train`'s arguments import torch (seconds); `sepflow run` and `operators` must not pay that."""
    from pipelines import cli

    def boom(parser):
        raise AssertionError("train's arguments were built for another subcommand")

    monkeypatch.setitem(cli.SUBCOMMANDS, "train", cli.SUBCOMMANDS["train"]._replace(add_arguments=boom))
    assert main(["operators", "pipeline_config_toy"]) == 0
    assert "pipeline_config_toy" in capsys.readouterr().out
    with pytest.raises(SystemExit) as exit_:
        main(["--help"])
    assert exit_.value.code == 0 and "train" in capsys.readouterr().out
    with pytest.raises(AssertionError, match="train's arguments"):
        main(["train", "unet", "--help"])


def test_cli_help_and_operators(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["--help"])
    assert exit_.value.code == 0
    text = capsys.readouterr().out
    assert "run" in text and "operators" in text
    with pytest.raises(SystemExit):
        main(["run", "--help"])
    text = capsys.readouterr().out
    for needle in ("--config", "--input", "--output", "--operator", "--set", "--overwrite", "DaskRunner", "DataflowRunner", "stems/<track_id>"):
        assert needle in text
    assert main(["operators", "--json"]) == 0
    listed = {d["name"]: d for d in json.loads(capsys.readouterr().out)}
    assert set(listed) == set(list_operators())
    assert [p["name"] for p in listed["pipeline_config_toy"]["params"]] == ["gain", "n_fft", "hop_length", "window"]
