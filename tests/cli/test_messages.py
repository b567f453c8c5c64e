"""What people see at the end of a command says what happened (issue 18): the runner as the user
chose it; an all-skipped re-run says so instead of "0.0x real time"; an input that matched
nothing ends in its error alone; `evaluate` prints the errors, not an empty table, when every
row is an error; a statistic over an infinite metric (the `mix` oracle's SAR) reads "-" in the
terminal, as in the report."""
from __future__ import annotations

import io
import json
import math
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import soundfile as sf

from pipelines.cli import main
from pipelines.driver import ProgressLine, describe_runner, pipeline_options
from pipelines.errors import EXIT_USAGE
from pipelines.evaluation_summary import (
    format_db,
    metric_stat,
    summarize,
    summary_markdown,
    summary_text,
)
from pipelines.run import RunSummary

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "loop_mono.flac"


@pytest.mark.parametrize(
    ("beam_args", "described"),
    [
        ([], "DirectRunner (in_memory, 1 worker)"),
        (["--runner=DirectRunner", "--direct_num_workers=2", "--direct_running_mode=multi_processing"],
         "DirectRunner (multi_processing, 2 workers)"),
        (["--runner=FnApiRunner", "--direct_num_workers=3", "--direct_running_mode=multi_threading"],
         "FnApiRunner (multi_threading, 3 workers)"),
        (["--direct_num_workers=4"], "DirectRunner (in_memory, 1 worker)"),  # in_memory runs one
        (["--runner=DaskRunner", "--dask_client_address=tcp://scheduler:8786"], "DaskRunner (tcp://scheduler:8786)"),
        (["--runner=DataflowRunner", "--project=p"], "DataflowRunner"),
    ],
)
def test_the_summary_names_the_runner_the_user_chose(beam_args, described):
    assert describe_runner(pipeline_options(beam_args, 1)) == described


def _summary(**counts) -> RunSummary:
    base = {"run_id": "r", "output": "/out", "runner": "FnApiRunner", "tracks_ok": 0, "tracks_error": 0,
            "tracks_skipped": 0, "units_ok": 0, "units_error": 0, "units_skipped": 0, "stems_written": 0,
            "audio_s": 0.0, "wall_s": 2.0}
    return RunSummary(**{**base, **counts})


def test_the_speed_row_says_what_a_run_that_separated_nothing_did():
    assert _summary(tracks_ok=2, units_ok=2, audio_s=24.0, wall_s=2.0).speed() == "12.0x real time"
    assert _summary(tracks_skipped=3, units_skipped=3).speed() == "all 3 tracks skipped (already complete)"
    assert _summary(tracks_skipped=1, units_skipped=1).speed() == "all 1 track skipped (already complete)"
    assert _summary(tracks_error=2, units_error=2).speed() == "- (no audio separated)"
    table = _summary(tracks_skipped=3, runner_chosen="DirectRunner (multi_processing, 2 workers)").table()
    assert "| speed | all 3 tracks skipped (already complete) |" in table
    assert "| runner | DirectRunner (multi_processing, 2 workers) |" in table and "0.0x" not in table


def test_a_re_run_that_skips_everything_says_so(tmp_path, capsys):
    argv = ["run", "--operator", "hpss", "-i", str(EXAMPLE), "-o", str(tmp_path / "out"), "--no-progress"]
    assert main(argv) == 0
    first = capsys.readouterr().err
    assert "x real time |" in first and "| runner | DirectRunner (in_memory, 1 worker) |" in first
    assert main(argv) == 0
    again = capsys.readouterr().err
    assert "| speed | all 1 track skipped (already complete) |" in again and "real time" not in again


def test_an_empty_input_folder_ends_in_its_error_alone(tmp_path, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    code = main(["run", "--operator", "hpss", "-i", str(empty), "-o", str(tmp_path / "out")])  # progress on
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert code == EXIT_USAGE, lines
    assert len(lines) == 1 and lines[0].startswith("sepflow run: ") and str(empty) in lines[0], lines
    assert not (tmp_path / "out").exists()


class _Terminal(io.StringIO):
    def isatty(self):
        return True


@pytest.mark.parametrize("stream_class", [io.StringIO, _Terminal], ids=["pipe", "terminal"])
def test_a_progress_line_that_counted_nothing_leaves_nothing(stream_class, tmp_path):
    stream = stream_class()
    with ProgressLine(str(tmp_path), "run-1", stream, 0.05):
        time.sleep(0.3)
    text = stream.getvalue()
    assert "\n" not in text
    assert text.rsplit("\r", 1)[-1] in ("", "\033[K")  # a terminal's waiting line is erased


def test_a_progress_line_that_counted_prints_its_counts(tmp_path):
    from pipelines.driver import job_dir

    progress = Path(job_dir(str(tmp_path), "run-1")) / "progress"
    progress.mkdir(parents=True)
    (progress / "w1.json").write_text(json.dumps({"ok": 2, "error": 1, "skipped": 0}))
    stream = io.StringIO()
    with ProgressLine(str(tmp_path), "run-1", stream, 10.0):
        pass
    assert stream.getvalue().startswith("[sepflow] 3 (track, operator) done: 2 ok, 1 error, 0 skipped")


def _run_with_missing_stems(run: Path, references: Path) -> None:
    """A published run whose two stems are gone, and references its track pairs with."""
    from pipelines.tables import STEM_METADATA_SCHEMA

    (references / "loop" / "stems").mkdir(parents=True)
    for stem in ("harmonic", "percussive"):
        sf.write(references / "loop" / "stems" / f"{stem}.wav", np.zeros((22050, 1)) + 0.01, 22050)
    rows = [
        {"track_id": "loop", "source_uri": str(EXAMPLE), "operator": "hpss", "label": "hpss", "operator_params": "{}",
         "status": "ok", "config_digest": "x", "run_id": "r", "sepflow_version": "0",
         "created_at": datetime.now(UTC), "stem": stem, "stem_uri": str(run / "gone" / f"{stem}.flac")}
        for stem in ("harmonic", "percussive")
    ]
    (run / "metadata").mkdir(parents=True)
    pq.write_table(pa.Table.from_pylist(rows, schema=STEM_METADATA_SCHEMA), run / "metadata" / "stems-r-part-00000.parquet")


def test_evaluate_prints_the_errors_when_no_row_was_scored(tmp_path, capsys):
    run, references = tmp_path / "run", tmp_path / "refs"
    _run_with_missing_stems(run, references)
    code = main(["evaluate", "--estimates", str(run), "--references", str(references), "--no-progress"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    out = captured.out.splitlines()
    assert "SDR mean" not in captured.out  # no table of headers only
    assert out[0] == "no scores: all 2 rows are errors:", out
    assert len(out) >= 2 and all(line.startswith("  ") and "gone" in line for line in out[1:]), out
    assert "2 rows, 2 errors" in captured.err and "[sepflow] error:" not in captured.err  # not printed twice


def _evaluation(rows: list[tuple]) -> pa.Table:
    names = ["label", "operator", "stem", "reference_stem", "is_oracle", "status", "sdr", "sdr_frames_median",
             "sir", "sar", "si_sdr"]
    return pa.Table.from_pylist([dict(zip(names, r)) for r in rows])


def test_an_infinite_metric_reads_dash_in_the_terminal_as_in_the_report():

    inf = math.inf
    table = _evaluation([
        ("mix", "mix", "lead", "lead", True, "ok", -0.9, -1.2, -0.9, inf, -1.0),
        ("mix", "mix", "lead", "lead", True, "ok", -1.1, -1.0, -1.1, 146.0, -1.2),
        ("hpss", "hpss", "lead", "lead", False, "ok", 4.0, 4.5, 9.0, 6.0, 3.5),
        ("hpss", "hpss", "lead", "lead", False, "ok", 6.0, 5.5, 11.0, None, 5.5),
    ])
    summary = {row["label"]: row for row in summarize(table)}
    assert summary["mix"]["sar_mean"] is None and summary["mix"]["sdr_mean"] == pytest.approx(-1.0)
    assert summary["hpss"]["sar_mean"] == 6.0  # a missing value is left out, as pandas does
    json.dumps(summarize(table), allow_nan=False)  # the summary JSON stays standard JSON
    # The report's rule (pandas' mean, then "-" where not finite) gives the same cells.
    frame = table.to_pandas()
    for label, want in (("mix", "-"), ("hpss", "6.00")):
        assert format_db(frame[frame["label"] == label]["sar"].mean()) == want == format_db(summary[label]["sar_mean"])
    mix_row = next(line for line in summary_text(summarize(table)).splitlines() if line.startswith("mix"))
    assert "146" not in mix_row and " -  " in mix_row
    assert "| mix (mixture as estimate) | mix | lead | lead | 2 | -1.00 | -1.00 | -1.10 | -1.00 | - | -1.10 |" in (
        summary_markdown(summarize(table))
    )


def test_metric_stat():
    assert metric_stat([1.0, None, float("nan"), 3.0]) == 2.0
    assert metric_stat([1.0, math.inf]) is None and metric_stat([]) is None and metric_stat([None]) is None
    assert metric_stat([1.0, 2.0, math.inf], np.median) == 2.0  # a median past one infinite track is a figure
