"""The shipped configs/*.yaml hold only what each job chooses: a value equal to the code's
default is there on purpose (``DELIBERATE``, with the reason) or not at all, so the files
cannot drift into restating defaults that then go stale."""
from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import yaml

from pipelines.config import (
    AudioSettings,
    JobSettings,
    StftSettings,
    job_config_from_dict,
    load_job_config,
)
from sepops.registry import operator_class

CONFIGS = sorted((Path(__file__).resolve().parents[2] / "configs").glob("*.yaml"))
SECTIONS = {"audio": AudioSettings, "stft": StftSettings, "job": JobSettings}

#: (section or operator name, key) -> why a file may write that key at its default value.
DELIBERATE = {
    ("audio", "format"): "every file shows the output format, so flac | wav is one edit away",
    ("unet", "model"): "which shipped model a U-Net job uses is the point of its file",
    ("unet", "device"): "commented in configs/unet.yaml: CUDA when available, else CPU",
    ("unet", "wiener_iterations"): "commented in configs/unet.yaml: the post-filter's switch",
}

#: What each file chooses; everything else is the code's default. The JobConfig each file
#: gives is this one's (the files were rewritten without restated defaults: same to_dict()).
PCM_16 = {"subtype": "PCM_16"}
CHOSEN = {
    "hpss.yaml": {"operators": ["hpss"], "audio": PCM_16},
    "ica.yaml": {"operators": ["ica"], "audio": PCM_16},
    "nmf.yaml": {"operators": ["nmf"], "audio": PCM_16},
    "repet.yaml": {"operators": ["repet"], "audio": PCM_16},
    "repet_sim.yaml": {"operators": ["repet_sim"], "audio": PCM_16},
    "multi.yaml": {
        "operators": ["hpss", "repet", "repet_sim", "nmf"],
        "stft": {"n_fft": 4096, "hop_length": 512, "window": "hann"},
        "audio": PCM_16,
    },
    "unet.yaml": {"operators": ["unet"]},
    "unet_satb.yaml": {
        "operators": [{"operator": "unet", "label": "unet_satb", "params": {"model": "chorales_satb"}}]
    },
    "evaluate_loops.yaml": {
        "operators": [
            "hpss", "repet", "repet_sim", "nmf",
            {"operator": "nmf", "label": "nmf_supervised", "params": {"dictionary": "loops_accompaniment_lead"}},
            {"operator": "unet", "label": "unet", "params": {"model": "loops_accompaniment_lead"}},
        ],
        "audio": PCM_16,
    },
    "evaluate_chorales.yaml": {
        "operators": [
            {"operator": "nmf", "label": "nmf_supervised_satb", "params": {"dictionary": "chorales_satb"}},
            {"operator": "unet", "label": "unet_satb", "params": {"model": "chorales_satb"}},
        ],
        "audio": PCM_16,
    },
}


def _defaults(config_cls: type) -> dict:
    out = {}
    for f in dataclasses.fields(config_cls):
        if f.default is not dataclasses.MISSING:
            out[f.name] = f.default
        elif f.default_factory is not dataclasses.MISSING:
            out[f.name] = f.default_factory()
    return out


def _plain(value):
    return [_plain(v) for v in value] if isinstance(value, (list, tuple)) else value


def _written_values(raw: dict):
    """(owner, key, value, code default) for every operator parameter and section value."""
    for entry in raw.get("operators") or []:
        if isinstance(entry, dict):
            defaults = _defaults(operator_class(entry["operator"]).Config)
            for key, value in (entry.get("params") or {}).items():
                yield entry["operator"], key, value, defaults[key]
    for section, cls in SECTIONS.items():
        defaults = _defaults(cls)
        for key, value in (raw.get(section) or {}).items():
            yield section, key, value, defaults[key]


def test_every_shipped_config_is_covered():
    assert sorted(p.name for p in CONFIGS) == sorted(CHOSEN)


@pytest.mark.parametrize("path", CONFIGS, ids=[p.name for p in CONFIGS])
def test_configs_write_no_default_but_deliberate_ones(path):
    raw = yaml.safe_load(path.read_text())
    restated = [
        f"{owner}.{key}: {value!r}"
        for owner, key, value, default in _written_values(raw)
        if _plain(value) == _plain(default) and (owner, key) not in DELIBERATE
    ]
    assert not restated, f"{path.name} restates code defaults {restated}: remove them, or add a reason to DELIBERATE"


@pytest.mark.parametrize("path", CONFIGS, ids=[p.name for p in CONFIGS])
def test_configs_give_the_job_they_chose(path):
    job = load_job_config(str(path))
    assert job.to_dict() == job_config_from_dict(CHOSEN[path.name]).to_dict()
    assert job.job == JobSettings()


def test_the_choices_that_matter():
    multi = load_job_config(str(CONFIGS[0].with_name("multi.yaml")))
    # One STFT for all four, repet's own 5120/1280 and nmf's 0 (automatic) included.
    assert {(s.label, s.params["n_fft"], s.params["hop_length"]) for s in multi.operators} == {
        (name, 4096, 512) for name in ("hpss", "repet", "repet_sim", "nmf")
    }
    assert multi.stems_by_label
    hpss = load_job_config(str(CONFIGS[0].with_name("hpss.yaml")))
    assert (hpss.audio.format, hpss.audio.subtype) == ("flac", "PCM_16")
    assert hpss.operators[0].params["n_fft"] == 2048 and hpss.operators[0].params["harmonic_stride"] == 2
    satb = load_job_config(str(CONFIGS[0].with_name("unet_satb.yaml")))
    assert satb.operators[0].params["model"] == "chorales_satb" and satb.audio.subtype is None
