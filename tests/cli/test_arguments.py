"""Every subcommand refuses an argument that neither it nor a Beam pipeline option knows, in one
line with exit status 2 and the closest flag; Beam's own options still reach the runner; a
runner that does not exist is named with the real list; the same flag is spelled the same way
everywhere (``--no-progress``, ``-o``); argparse's usage errors show the subcommand's usage;
``--help`` examples name no machine's paths (issue 18)."""
from __future__ import annotations

import re
from pathlib import Path

import pytest

from pipelines.cli import SUBCOMMANDS, build_parser, main, subparser
from pipelines.errors import EXIT_USAGE

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "loop_mono.flac"
RUN = ["run", "--operator", "hpss", "-i", str(EXAMPLE), "-o", "out-never-written"]
EVALUATE = ["evaluate", "--estimates", "out-never-read", "--references", "refs-never-read"]


@pytest.fixture()
def handled(monkeypatch):
    """Replace every handler: records (command, args, beam_args) of the calls that got through."""
    calls = []
    for name, command in SUBCOMMANDS.items():
        def handler(args, beam_args, name=name):
            calls.append((name, args, list(beam_args)))
            return 0

        monkeypatch.setitem(SUBCOMMANDS, name, command._replace(handler=handler))
    return calls


def _err_lines(capsys) -> list[str]:
    return [line for line in capsys.readouterr().err.splitlines() if line.strip()]


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        ([*RUN, "--fromat", "wav"], "sepflow run: unknown argument --fromat (did you mean --format?)"),
        ([*RUN, "--bitdepth=24"], "sepflow run: unknown argument --bitdepth (did you mean --bit-depth?)"),
        ([*RUN, "--runner=DirectRunner", "--direct_num_workrs=2"],
         "sepflow run: unknown argument --direct_num_workrs (did you mean --direct_num_workers?)"),
        ([*RUN, "stray"], "sepflow run: unknown argument stray"),
        (["-v", *RUN], "sepflow run: unknown argument -v before the subcommand (give it after: sepflow run -v)"),
        ([*EVALUATE, "--orcles", "ibm"], "sepflow evaluate: unknown argument --orcles (did you mean --oracles?)"),
        ([*EVALUATE, "--format", "wav"], "sepflow evaluate: unknown argument --format"),  # run's flag, not evaluate's
        (["report", "--run", "r", "-o", "p.html", "--trakcs", "3"],
         "sepflow report: unknown argument --trakcs (did you mean --tracks?)"),
        (["report", "--run", "r", "-o", "p.html", "--runner=DirectRunner"], "sepflow report: unknown argument --runner (did you mean --run?)"),
        (["operators", "--jsn"], "sepflow operators: unknown argument --jsn (did you mean --json?)"),
        (["export-onnx", "m", "-o", "m.onnx", "--opst", "17"],
         "sepflow export-onnx: unknown argument --opst (did you mean --opset?)"),
        (["train", "unet", "--data", "d", "--stems", "a,b", "-o", "m", "--epcohs", "3"],
         "sepflow train: unknown argument --epcohs (did you mean --epochs?)"),
    ],
    ids=lambda v: " ".join(v) if isinstance(v, list) else "",
)
def test_an_unknown_argument_stops_every_subcommand_in_one_line(argv, message, handled, capsys):
    assert main(argv) == EXIT_USAGE
    assert _err_lines(capsys) == [message]
    assert handled == []


@pytest.mark.parametrize(
    "beam_args",
    [
        ["--runner=DirectRunner", "--direct_num_workers=2", "--direct_running_mode=multi_processing"],
        ["--runner", "DirectRunner", "--direct_num_workers", "2", "--direct_running_mode", "multi_threading"],
        ["--runner=DaskRunner", "--dask_client_address=tcp://scheduler:8786", "--dask_npartitions=8"],
        ["--runner=apache_beam.runners.dask.dask_runner.DaskRunner", "--dask_client_address", "tcp://h:8786"],
        ["--runner=DataflowRunner", "--project=p", "--region=europe-west1", "--temp_location=gs://b/tmp",
         "--setup_file=./setup.py", "--num_workers=4", "--machine_type=n2-standard-4"],
        ["--runner=FlinkRunner", "--flink_master=localhost:8081", "--environment_type=LOOPBACK"],
        ["--runner=SparkRunner", "--spark_master_url=spark://host:7077"],
        ["--runner=Dataflow", "--project", "p"],  # Beam's short name
        ["--default_sdk_harness_log_level=INFO", "--save_main_session"],
    ],
    ids=lambda v: v[0],
)
@pytest.mark.parametrize("command", [RUN, EVALUATE], ids=["run", "evaluate"])
def test_beam_options_still_reach_the_runner(command, beam_args, handled, capsys):
    assert main([*command, *beam_args]) == 0, capsys.readouterr().err
    assert handled[0][2] == beam_args


@pytest.mark.parametrize("runner", ["DaskRuner", "Dask", "Dirct"])
@pytest.mark.parametrize("command", [RUN, EVALUATE], ids=["run", "evaluate"])
def test_a_runner_that_does_not_exist_is_named_with_the_real_list(command, runner, handled, capsys):
    assert main([*command, f"--runner={runner}"]) == EXIT_USAGE
    lines = _err_lines(capsys)
    assert len(lines) == 1 and lines[0].startswith(f"sepflow {command[0]}: --runner {runner}: unknown runner"), lines
    for name in ("DirectRunner", "DaskRunner", "DataflowRunner", "FlinkRunner", "SparkRunner"):
        assert name in lines[0]
    suggested = "DirectRunner" if runner == "Dirct" else "DaskRunner"
    assert f"(did you mean {suggested}?)" in lines[0]
    assert handled == []


def test_a_beam_option_with_a_bad_value_is_one_line(handled, capsys):
    assert main([*RUN, "--direct_num_workers=two"]) == EXIT_USAGE
    assert _err_lines(capsys) == ["sepflow run: argument --direct_num_workers: invalid int value: 'two'"]
    assert handled == []


def test_the_command_line_runs_of_the_real_runner_refuse_a_typo_before_beam(tmp_path, capsys):
    """No handler replaced: the real `sepflow run` stops before it writes anything."""
    out = tmp_path / "out"
    assert main(["run", "--operator", "hpss", "-i", str(EXAMPLE), "-o", str(out), "--fromat", "wav"]) == EXIT_USAGE
    assert _err_lines(capsys) == ["sepflow run: unknown argument --fromat (did you mean --format?)"]
    assert not out.exists()


@pytest.mark.parametrize("command", [RUN, EVALUATE], ids=["run", "evaluate"])
@pytest.mark.parametrize("flag", ["--no-progress", "--no_progress"])
def test_no_progress_is_spelled_both_ways_by_run_and_evaluate(command, flag, handled):
    assert main([*command, flag]) == 0
    assert handled[0][1].progress is False and handled[0][2] == []
    assert main(command) == 0
    assert handled[1][1].progress is True


def test_a_run_with_the_dashed_no_progress_prints_no_progress_line(tmp_path, capsys):
    code = main(["run", "--operator", "hpss", "-i", str(EXAMPLE), "-o", str(tmp_path / "out"), "--no-progress"])
    err = capsys.readouterr().err
    assert code == 0, err
    assert "[sepflow]" not in err and "| sepflow run " in err  # the summary, no progress line


@pytest.mark.parametrize(
    ("path", "dest"),
    [(["run"], "output"), (["evaluate"], "output"), (["report"], "out"), (["export-onnx"], "out"),
     (["train", "unet"], "out")],
    ids=" ".join,
)
def test_every_subcommand_with_an_output_takes_o(path, dest):
    parser = build_parser([path[0]])
    for name in path:
        parser = subparser(parser, name)
    action = parser._option_string_actions["-o"]
    assert action.dest == dest and any(s.startswith("--out") for s in action.option_strings)


@pytest.mark.parametrize(
    "argv",
    [["run", "--format", "aiff"], ["evaluate", "--shards", "many"], ["report", "--tracks", "some"],
     ["operators", "--json=yes"], ["export-onnx"], ["train", "unet", "--epochs", "x"]],
    ids=" ".join,
)
def test_a_usage_error_prints_the_subcommands_own_usage(argv, handled, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(argv)
    assert exit_.value.code == EXIT_USAGE
    err = capsys.readouterr().err
    assert err.startswith(f"usage: sepflow {' '.join(argv[:2] if argv[0] == 'train' else argv[:1])} "), err
    assert handled == []


def _helps(parser, prog=""):
    """(prog, --help text) of every subcommand, nested ones (`train unet`) too."""
    for action in parser._actions:
        if hasattr(action, "choices") and isinstance(action.choices, dict):
            for name, sub in action.choices.items():
                yield f"{prog} {name}".strip(), sub.format_help()
                yield from _helps(sub, f"{prog} {name}")


def test_help_examples_name_paths_relative_to_the_checkout():
    helps = dict(_helps(build_parser()))
    assert {"run", "evaluate", "report", "operators", "train", "train unet", "export-onnx"} <= set(helps)
    for prog, text in helps.items():
        absolute = re.findall(r"(?:^|[\s'\"=])(/[A-Za-z][^\s'\"]*)", text, re.MULTILINE)
        assert absolute == [], (prog, absolute)
    assert "../shared/data/manifest.json" in helps["evaluate"]
