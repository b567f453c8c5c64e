"""Only `sepflow run` imports Apache Beam: `train`, `export-onnx`, `operators` and `report` start
without it, and so does sepops, the separation library."""
from __future__ import annotations

import subprocess
import sys

import pytest

CLI = """
import sys
from pipelines.cli import main
try:
    code = main({argv!r})
except SystemExit as exit_:
    code = exit_.code
print("exit", code, "beam", "apache_beam" in sys.modules)
"""


def _last_line(code: str) -> str:
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip().splitlines()[-1]


@pytest.mark.parametrize(
    "argv",
    [["export-onnx", "--help"], ["train", "unet", "--help"], ["operators"], ["report", "--help"]],
    ids=" ".join,
)
def test_commands_other_than_run_do_not_import_beam(argv):
    assert _last_line(CLI.format(argv=argv)) == "exit 0 beam False"


def test_run_imports_beam():
    """The check above can see Beam: `run` does import it."""
    assert _last_line(CLI.format(argv=["run", "--help"])) == "exit 0 beam True"


def test_sepops_does_not_import_beam():
    code = "import sys, sepops; assert sepops.list_operators(); print('apache_beam' in sys.modules)"
    assert _last_line(code) == "False"
