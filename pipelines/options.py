"""``SepflowOptions``: the catalog job's own flags, as Beam pipeline options.

The same definitions serve ``sepflow run`` (argparse) and ``PipelineOptions(...).view_as(
SepflowOptions)``; every other flag on the command line is a Beam pipeline option
(``--runner``, ``--direct_num_workers``, ``--dask_client_address``, ``--project`` ...).

``split_beam_args`` reads the rest with every registered Beam option (the DaskRunner's too) and
leaves over what no option knows: ``sepflow`` refuses those (a misspelled flag must not pass
as an ignored Beam option), and ``runner_problem`` refuses a ``--runner`` no runner answers to.
"""
from __future__ import annotations

import argparse
import difflib
import importlib.util

from apache_beam.options.pipeline_options import PipelineOptions, _BeamArgumentParser

from .errors import BeamOptionError

__all__ = ["RUNNERS", "BeamOptionError", "SepflowOptions", "beam_option_parser", "runner_problem", "split_beam_args"]

#: The runners ``--runner`` may name, as the message of a wrong one lists them (DirectRunner,
#: the default, is Beam's in-process FnApiRunner; a runner class's full module path works too).
RUNNERS = ("DirectRunner", "DaskRunner", "DataflowRunner", "FlinkRunner", "SparkRunner", "PortableRunner", "PrismRunner")



class _OptionParser(_BeamArgumentParser):
    def error(self, message):  # one line for the caller, not Beam's whole usage and exit
        raise BeamOptionError(message)


class SepflowOptions(PipelineOptions):
    """The catalog job's own flags: what to run on what (``--config``, ``--input``, ``--output``,
    ``--operator``, ``--set``) and how stems are written (``--format``, ``--bit-depth``,
    ``--overwrite``, ``--no-progress``)."""

    @classmethod
    def _add_argparse_args(cls, parser):
        _add_job_arguments(parser)
        _add_writing_arguments(parser)


def _add_job_arguments(parser) -> None:
    """What the job runs, on what, and where it writes."""
    parser.add_argument(
        "--config",
        default=None,
        help="YAML job file (operators, stft, audio, job, features), e.g. configs/hpss.yaml",
    )
    parser.add_argument(
        "-i",
        "--input",
        dest="inputs",
        action="append",
        default=None,
        help="tracks to separate: a glob (quote it; '**' recurses), a folder, a file, or a "
        "manifest .csv/.parquet with a 'uri' column; any fsspec URI (s3://, gs://). Repeatable.",
    )
    parser.add_argument(
        "-o",
        "--output",
        default=None,
        help="where stems/, metadata/, features/ and dead_letter/ go (a folder or an s3:// / gs:// prefix)",
    )
    parser.add_argument(
        "--operator",
        dest="operators",
        action="append",
        default=None,
        help="run only this operator (a label of the config, or any registered operator with its "
        "default parameters). Repeatable.",
    )
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=None,
        metavar="KEY=VALUE",
        help="override one config value: audio.format=wav, job.max_duration_s=600, "
        "stft.n_fft=4096, or <operator label>.<param>=<value> (hpss.kernel_size=31). Repeatable.",
    )


def _add_writing_arguments(parser) -> None:
    """How stems are written, and what the terminal shows."""
    parser.add_argument(
        "--format",
        dest="audio_format",
        choices=("flac", "wav", "mp3", "opus"),
        default=None,
        help="stem file format (audio.format): flac and wav are exact, mp3 and opus lossy previews "
        "(default: the config's, flac)",
    )
    parser.add_argument(
        "--bit-depth",
        dest="bit_depth",
        choices=("16", "24", "32"),
        default=None,
        help="bits per sample of flac/wav stems (audio.subtype: 16 and 24 integer, 32 float, wav only; "
        "default 16)",
    )
    parser.add_argument(
        "--overwrite",
        action="store_true",
        default=False,
        help="redo tracks whose outputs are already complete (default: skip them)",
    )
    parser.add_argument(
        "--no-progress",
        "--no_progress",
        dest="progress",
        action="store_false",
        default=True,
        help="do not print the live progress line on stderr",
    )


def beam_option_parser() -> argparse.ArgumentParser:
    """A parser of every registered Beam pipeline option (``PipelineOptions`` subclasses: the
    runners', Dataflow's, Flink's, Spark's, Dask's ...), without sepflow's own flags."""
    try:  # DaskOptions (--dask_client_address ...) register when the DaskRunner is imported
        import apache_beam.runners.dask.dask_runner  # noqa: F401
    except ImportError:  # dask not installed: its options are unknown, as its runner
        pass
    parser = _OptionParser(allow_abbrev=False, add_help=False)
    classes: dict[str, type] = {}
    for cls in PipelineOptions.__subclasses__():  # as PipelineOptions.get_all_options does
        if not cls.__module__.startswith("pipelines."):
            classes.setdefault(str(cls), cls)
    for cls in classes.values():
        cls._add_argparse_args(parser)
    return parser


def split_beam_args(args: list[str]) -> tuple[argparse.Namespace, list[str], list[str]]:
    """``args`` read as Beam options: (their values, what no option knows, every option's
    spelling). Raises ``BeamOptionError`` for a value an option refuses."""
    parser = beam_option_parser()
    known, left = parser.parse_known_args(list(args))
    return known, left, [s for action in parser._actions for s in action.option_strings]


def runner_problem(runner) -> str | None:
    """Why ``--runner`` names no runner sepflow can build (one line with the suggestion and the
    runners), or None when it does or is not given."""
    if not runner or not isinstance(runner, str):
        return None
    from apache_beam.runners.runner import _RUNNER_MAP

    from .driver import IN_PROCESS_RUNNERS, RUNNER_PATHS

    name = runner.rsplit(".", 1)[-1].lower()
    if "." in runner:
        if _importable(runner.rsplit(".", 1)[0]):
            return None
        return f"--runner {runner}: no module {runner.rsplit('.', 1)[0]} to import it from"
    if name in IN_PROCESS_RUNNERS or name in RUNNER_PATHS or name in _RUNNER_MAP or name + "runner" in _RUNNER_MAP:
        return None
    by_lower = {r.lower(): r for r in RUNNERS}
    close = difflib.get_close_matches(name, list(by_lower), n=1) or difflib.get_close_matches(
        name + "runner", list(by_lower), n=1
    )
    hint = f" (did you mean {by_lower[close[0]]}?)" if close else ""
    return (f"--runner {runner}: unknown runner{hint}; choose from DirectRunner (the default, in-process), "
            f"{', '.join(RUNNERS[1:])}, or a runner class's full module path")


def _importable(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False
