"""What a new user gets wrong ends in one line and exit status 2, before the job starts, naming
where the bad value came from (a flag, a config file, a resource that does not exist: an NMF
dictionary, a U-Net model, with the shipped names); the CLI speaks Spleeter/Demucs users'
flags; runs are quiet."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import soundfile as sf

from pipelines.cli import build_parser, main
from pipelines.errors import EXIT_USAGE

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "loop_mono.flac"


def _run(argv: list[str], capsys) -> tuple[int, list[str]]:
    code = main(argv)
    err = capsys.readouterr().err
    return code, [line for line in err.splitlines() if line.strip()]


def _one_line_exit_2(code: int, lines: list[str], *needles: str) -> None:
    assert code == EXIT_USAGE, lines
    assert len(lines) == 1 and lines[0].startswith("sepflow run: "), lines
    assert all(n in lines[0] for n in needles), lines


def test_an_output_that_is_a_file_is_refused(tmp_path, capsys):
    existing = tmp_path / "out.flac"
    existing.write_bytes(b"not a folder")
    code, lines = _run(["run", "--operator", "hpss", "-i", str(EXAMPLE), "-o", str(existing)], capsys)
    _one_line_exit_2(code, lines, "is a file")
    assert existing.read_bytes() == b"not a folder"


@pytest.mark.parametrize(
    ("argv", "needles"),
    [
        (["--config", "configs/hpss.yaml", "--operator", "hpsss"], ["--operator hpsss: unknown operator 'hpsss'"]),
        (["--config", "configs/hpss.yaml", "--set", "hpss.margin=abc"], ["--set hpss.margin=abc: ", "'margin'"]),
        (["--config", "configs/hpss.yaml", "--set", "audio.formt=wav"], ["--set audio.formt=wav: unknown key"]),
        (["--config", "configs/hpss.yaml", "--set", "job.block_s=0"], ["--set job.block_s=0: "]),
        (["--config", "configs/unet.yaml", "--set", "unet.model=vocals"], ["--set unet.model=vocals: ", "shipped"]),
        (["--config", "configs/nmf.yaml", "--set", "nmf.dictionary=foo"], ["--set nmf.dictionary=foo: ", "shipped"]),
        (["--config", "configs/hpss.yaml", "--format", "flac", "--bit-depth", "32"], ["--bit-depth 32", "wav"]),
        (["--config", "configs/hpss.yaml", "--format", "mp3", "--bit-depth", "24"], ["--bit-depth 24"]),
    ],
)
def test_a_bad_flag_is_blamed_on_the_flag_in_one_line(argv, needles, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(ROOT)
    out = tmp_path / "out"
    code, lines = _run(["run", *argv, "-i", str(EXAMPLE), "-o", str(out)], capsys)
    _one_line_exit_2(code, lines, *needles)
    assert "configs/" not in lines[0].split(":")[0]  # not blamed on the YAML file
    assert not out.exists()


def test_the_yaml_file_is_blamed_for_its_own_mistakes(tmp_path, capsys):
    config = tmp_path / "bad.yaml"
    config.write_text("operators:\n  - operator: hpss\n    params: {margin: abc}\n")
    code, lines = _run(["run", "--config", str(config), "-i", str(EXAMPLE), "-o", str(tmp_path / "out")], capsys)
    _one_line_exit_2(code, lines, f"{config}: operators[0].params", "'margin'")


def test_cuda_on_a_machine_without_it_is_refused_before_the_job(tmp_path, capsys):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA: asking for it is no mistake here")
    out = tmp_path / "out"
    code, lines = _run(
        ["run", "--config", str(ROOT / "configs" / "unet.yaml"), "--set", "unet.device=cuda",
         "-i", str(EXAMPLE), "-o", str(out)], capsys,
    )
    _one_line_exit_2(code, lines, "'cuda'", "no CUDA device")
    assert not out.exists()


def test_an_unreachable_dask_scheduler_is_refused_in_seconds(tmp_path, capsys):
    import socket
    import time

    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    started = time.monotonic()
    code, lines = _run(
        ["run", "--operator", "hpss", "-i", str(EXAMPLE), "-o", str(tmp_path / "out"),
         "--runner=DaskRunner", f"--dask_client_address=tcp://127.0.0.1:{port}"], capsys,
    )
    _one_line_exit_2(code, lines, f"--dask_client_address tcp://127.0.0.1:{port}", "no Dask scheduler")
    assert time.monotonic() - started < 15
    assert not (tmp_path / "out").exists()


def test_short_flags_format_and_bit_depth(tmp_path, capsys):
    out = tmp_path / "out"
    code = main(["run", "--operator", "hpss", "-i", str(EXAMPLE), "-o", str(out), "--format", "wav",
                 "--bit-depth", "24", "--no_progress"])
    assert code == 0, capsys.readouterr().err
    stems = sorted((out / "stems").rglob("*.wav"))
    assert len(stems) == 2 and all(sf.info(str(p)).subtype == "PCM_24" for p in stems)


def test_an_unreadable_file_is_described_by_its_uri_and_cause_only(tmp_path):
    from pipelines.config import job_config_from_dict
    from pipelines.run import run_job
    from pipelines.tables import read_metadata

    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "garbage.wav").write_bytes(b"RIFF\x10\x00\x00\x00WAVEjunk" + os.urandom(200))
    (folder / "cut.flac").write_bytes(EXAMPLE.read_bytes()[:3000])
    run_job(job_config_from_dict({"operators": ["hpss"]}), [str(folder)], str(tmp_path / "out"), progress=False)
    rows = read_metadata(str(tmp_path / "out")).to_pylist()
    assert {r["status"] for r in rows} == {"error"}
    for r in rows:
        assert "object at" not in r["error_message"] and "0x" not in r["error_message"], r["error_message"]


def test_a_multi_process_run_prints_only_its_summary(tmp_path):
    sepflow = Path(sys.executable).with_name("sepflow")
    if not sepflow.exists():
        pytest.skip("the sepflow console script is not installed")
    done = subprocess.run(
        [str(sepflow), "run", "--operator", "hpss", "-i", str(EXAMPLE), "-o", str(tmp_path / "out"), "--no_progress",
         "--runner=DirectRunner", "--direct_num_workers=2", "--direct_running_mode=multi_processing"],
        check=False, capture_output=True, text=True, timeout=300,
    )
    assert done.returncode == 0, done.stderr
    noise = [line for line in done.stderr.splitlines() if line.strip() and not line.startswith("|")]
    assert noise == [], noise[:10]
    # The summary names the runner as chosen, not Beam's class behind it (issue 18).
    assert "| runner | DirectRunner (multi_processing, 2 workers) |" in done.stderr, done.stderr


def test_operators_lists_stems_parameters_and_shipped_resources(capsys):
    assert main(["operators"]) == 0
    text = capsys.readouterr().out
    assert "stems: harmonic, percussive" in text and "stems: accompaniment, lead" in text
    assert "shipped resources" in text and "loops_accompaniment_lead" in text and "chorales_satb" in text
    assert "0 is not allowed here" in text and "(0: automatic" in text  # what 0 means for n_fft
    assert main(["operators", "--json"]) == 0
    import json

    described = json.loads(capsys.readouterr().out)
    assert {op["name"]: op["shipped"] for op in described}["unet"]["model"] == ["chorales_satb", "loops_accompaniment_lead"]
    for op in described:
        assert op["doc"].endswith("."), op["doc"]  # whole sentences, never cut
        undocumented = [p["name"] for p in op["params"] if not p["help"]]
        assert undocumented == [], (op["name"], undocumented)


def test_train_unet_help_documents_every_option():
    parser = build_parser(["train"])
    train = next(a for a in parser._subparsers._group_actions[0].choices["train"]._actions
                 if hasattr(a, "choices") and isinstance(a.choices, dict))
    unet = train.choices["unet"]
    undocumented = [a.option_strings for a in unet._actions if a.option_strings and not a.help]
    assert undocumented == []


def test_in_ci_a_missing_validation_set_fails_instead_of_skipping(tmp_path):
    env = dict(os.environ, CI="true", SEPFLOW_DATA=str(tmp_path / "no-data"))
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/sepops/test_hpss.py", "-k", "quality"],
        cwd=ROOT, env=env, check=False, capture_output=True, text=True, timeout=300,
    )
    assert done.returncode != 0, done.stdout[-2000:]
    assert "validation set not found" in done.stdout and "CI=true" in done.stdout
    env["CI"] = ""
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/sepops/test_hpss.py", "-k", "quality"],
        cwd=ROOT, env=env, check=False, capture_output=True, text=True, timeout=300,
    )
    assert done.returncode == 0 and "skipped" in done.stdout, done.stdout[-2000:]


# --- missing resources ----------------------------------------
SHIPPED = ("chorales_satb", "loops_accompaniment_lead")


@pytest.mark.parametrize(("operator", "key"), [("nmf", "dictionary"), ("unet", "model")])
def test_a_missing_resource_stops_the_job_before_it_starts(operator, key, tmp_path, capsys, monkeypatch):
    def no_pipeline(*args, **kwargs):
        raise AssertionError("run_job was called: the pipeline would have started")

    monkeypatch.setattr("pipelines.run.run_job", no_pipeline)
    out = tmp_path / "out"
    code = main(
        ["run", "--operator", operator, "--set", f"{operator}.{key}=nope",
         "--input", str(EXAMPLE), "--output", str(out)]
    )
    err = capsys.readouterr().err
    assert code == EXIT_USAGE, err
    # The bad value came from the command line: the message names the flag (issue 12).
    assert f"--set {operator}.{key}=nope: operator '{operator}' parameter '{key}'" in err
    assert "'nope' not found" in err and all(name in err for name in SHIPPED), err
    assert not out.exists()


def test_the_sepflow_command_exits_2_on_a_missing_dictionary(tmp_path):
    sepflow = shutil.which("sepflow") or str(Path(sys.executable).with_name("sepflow"))
    if not os.path.exists(sepflow):
        pytest.skip("the sepflow console script is not installed")
    config = Path(__file__).resolve().parents[2] / "configs" / "nmf.yaml"
    out = tmp_path / "out"
    done = subprocess.run(
        [sepflow, "run", "--config", str(config), "--set", "nmf.dictionary=nope",
         "--input", str(EXAMPLE), "--output", str(out)],
        check=False, capture_output=True, text=True, timeout=120,
    )
    assert done.returncode == EXIT_USAGE, done.stderr
    assert "parameter 'dictionary'" in done.stderr and all(name in done.stderr for name in SHIPPED), done.stderr
    assert not out.exists()
