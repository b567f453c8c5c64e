"""A job naming a resource that does not exist (an NMF dictionary, a U-Net model) stops on the
command line with status 2, naming the key and the shipped names, before any pipeline runs."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from pipelines.cli import main
from pipelines.errors import EXIT_USAGE

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "loop_mono.flac"
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
    config = Path(__file__).resolve().parents[1] / "configs" / "nmf.yaml"
    out = tmp_path / "out"
    done = subprocess.run(
        [sepflow, "run", "--config", str(config), "--set", "nmf.dictionary=nope",
         "--input", str(EXAMPLE), "--output", str(out)],
        check=False, capture_output=True, text=True, timeout=120,
    )
    assert done.returncode == EXIT_USAGE, done.stderr
    assert "parameter 'dictionary'" in done.stderr and all(name in done.stderr for name in SHIPPED), done.stderr
    assert not out.exists()
