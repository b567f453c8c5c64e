"""The ``sepflow`` command.

Subcommands are registered in ``SUBCOMMANDS`` as ``name -> Subcommand(help, add_arguments,
handler)``; adding one (``train``, ``export-onnx``) is one function pair and one entry::

    SUBCOMMANDS["train"] = Subcommand("train a U-Net", add_train_arguments, train_handler)

A handler gets the parsed ``argparse.Namespace`` and the Beam pipeline options on the command
line (``run`` and ``evaluate``; empty for the others) and returns the exit status. An argument
that neither the command nor (for those two) any Beam option knows stops every command with
one line, ``sepflow run: unknown argument --fromat (did you mean --format?)``, and exit status
2. Only commands marked ``needs_beam`` (``run``, ``evaluate``) import Apache Beam.

Each command's flags and handler live in its own module: :mod:`pipelines.cli_run`,
:mod:`pipelines.cli_evaluate`, :mod:`pipelines.cli_report`, :mod:`pipelines.cli_operators`
(``train`` and ``export-onnx`` delegate to :mod:`sepops.unet`).
"""
from __future__ import annotations

import argparse
import difflib
import logging
import os
import sys
from collections.abc import Callable, Sequence
from typing import NamedTuple

from . import cli_operators, cli_report, cli_run
from .errors import EXIT_OK, EXIT_USAGE, UsageError

__all__ = ["SUBCOMMANDS", "Subcommand", "beam_args", "build_parser", "main", "subparser"]


class Subcommand(NamedTuple):
    help: str
    add_arguments: Callable[[argparse.ArgumentParser], None]
    handler: Callable[[argparse.Namespace, list[str]], int]
    #: True when flags the command does not define may be Beam pipeline options (checked
    #: against every registered one, then passed on to the handler); otherwise they are refused.
    passes_unknown_args: bool = False
    description: str = ""
    #: True when the command imports Apache Beam (seconds of start-up, a root-logger warning):
    #: ``main`` then imports it first, quietly. The others never import it.
    needs_beam: bool = False


# --- train / export-onnx: the U-Net, delegated to sepops.unet ---------------------------------
def _add_train_arguments(parser: argparse.ArgumentParser) -> None:
    from sepops.unet.train import add_arguments

    models = parser.add_subparsers(dest="model_kind", metavar="<model>", required=True)
    add_arguments(models.add_parser("unet", help="spectrogram U-Net (sepops.unet.train)"))


def _train(args: argparse.Namespace, _: list[str]) -> int:
    from sepops.unet.train import train

    train(args)
    return EXIT_OK


def _add_export_arguments(parser: argparse.ArgumentParser) -> None:
    from sepops.unet.export import add_arguments

    add_arguments(parser)


def _export_onnx(args: argparse.Namespace, _: list[str]) -> int:
    from sepops.unet.export import run

    return run(args)


# --- evaluate: imported only when it is the command (its scoring imports are heavy) ------------
def _add_evaluate_arguments(parser: argparse.ArgumentParser) -> None:
    from .cli_evaluate import add_arguments

    add_arguments(parser)


def _evaluate(args: argparse.Namespace, beam_args: list[str]) -> int:
    from .cli_evaluate import main as evaluate_main

    return evaluate_main(args, beam_args)


SUBCOMMANDS: dict[str, Subcommand] = {
    "run": Subcommand(
        "separate a catalog (folder, bucket, manifest) with Beam",
        cli_run.add_arguments,
        cli_run.main,
        passes_unknown_args=True,
        description=cli_run.DESCRIPTION,
        needs_beam=True,
    ),
    "evaluate": Subcommand(
        "score a run's stems against reference stems (BSS Eval SDR/SIR/SAR, SI-SDR) with Beam",
        _add_evaluate_arguments,
        _evaluate,
        passes_unknown_args=True,
        needs_beam=True,
    ),
    "report": Subcommand("write one self-contained HTML page about a run (and its evaluation)",
                         cli_report.add_arguments, cli_report.main),
    "operators": Subcommand("list the separation operators and their parameters",
                            cli_operators.add_arguments, cli_operators.main),
    "train": Subcommand("train a separation model: sepflow train unet --data DIR --stems a,b --out DIR", _add_train_arguments, _train),
    "export-onnx": Subcommand("export a trained U-Net to ONNX and check it with onnxruntime", _add_export_arguments, _export_onnx),
}

def build_parser(commands: Sequence[str] | None = None) -> argparse.ArgumentParser:
    """The ``sepflow`` parser; ``commands`` limits which subcommands get their arguments.

    Every subcommand is listed either way. Adding a subcommand's arguments may import heavy
    modules (``train`` imports torch, seconds of start-up), so ``main`` only adds those of
    the command being run.
    """
    parser = argparse.ArgumentParser(
        prog="sepflow",
        description="Music source separation for whole catalogs, as an Apache Beam batch pipeline.",
        epilog="`sepflow <command> --help` explains each command.",
    )
    from . import sepflow_version

    parser.add_argument("--version", action="version", version=f"sepflow {sepflow_version()}")
    sub = parser.add_subparsers(dest="command", metavar="<command>", required=True)
    for name, command in SUBCOMMANDS.items():
        p = sub.add_parser(
            name,
            help=command.help,
            description=command.description or command.help,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        if commands is None or name in commands:
            command.add_arguments(p)
            _short_output_flag(p)
    return parser


def _short_output_flag(parser: argparse.ArgumentParser) -> None:
    """``-o`` for the flag naming a command's output (``--output``, ``--out``) where the command
    does not define ``-o`` itself: every subcommand with an output takes it (``train unet`` too)."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                _short_output_flag(sub)
    output = next((a for a in parser._actions if {"--output", "--out"} & set(a.option_strings)), None)
    if output is not None and "-o" not in parser._option_string_actions:
        output.option_strings.insert(0, "-o")
        parser._option_string_actions["-o"] = output


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``sepflow`` command line ``argv`` (default ``sys.argv[1:]``); return the exit status."""
    from sepops.pretrained import one_malloc_arena

    one_malloc_arena()  # before Beam and torch start threads (models peak lower: see there)
    argv = list(sys.argv[1:] if argv is None else argv)
    # The first word that is not a flag is the subcommand (the top level has only flags).
    chosen = next((a for a in argv if not a.startswith("-")), None)
    if chosen in SUBCOMMANDS and SUBCOMMANDS[chosen].needs_beam:
        _import_beam_quietly()  # before the parser: run's arguments come from Beam's options
    parser = build_parser([chosen] if chosen else [])
    args, unknown = parser.parse_known_args(argv)
    command = SUBCOMMANDS[args.command]
    try:
        beam = beam_args(subparser(parser, args.command), unknown, command.passes_unknown_args)
    except UsageError as exc:
        print(f"sepflow {args.command}: {exc}", file=sys.stderr)
        return EXIT_USAGE
    verbose = getattr(args, "verbose", False)
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    if verbose:
        logging.getLogger("sepflow").setLevel(logging.INFO)
        os.environ["SEPFLOW_VERBOSE"] = "1"  # Beam's worker processes log their start-up too
    return command.handler(args, beam)


def subparser(parser: argparse.ArgumentParser, name: str) -> argparse.ArgumentParser:
    """The parser of subcommand ``name`` of the ``sepflow`` parser."""
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return action.choices[name]


def _option_strings(parser: argparse.ArgumentParser) -> list[str]:
    """Every flag of ``parser`` and of its subcommands (``train unet``)."""
    found = []
    for action in parser._actions:
        found += [s for s in action.option_strings if s.startswith("--") or len(s) == 2]
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                found += _option_strings(sub)
    return list(dict.fromkeys(found))


def beam_args(command_parser: argparse.ArgumentParser, unknown: list[str], beam: bool) -> list[str]:
    """The arguments sepflow's parser did not know, when all of them are Beam pipeline options
    of a command that takes them (``run``, ``evaluate``) naming a runner sepflow can use.

    Raises ``UsageError`` naming the first argument neither knows, with the closest flag:
    ``unknown argument --fromat (did you mean --format?)``. Beam itself would only warn
    ("Unparseable argument") and run without it.
    """
    if not unknown:
        return []
    beam_flags: list[str] = []
    if beam:
        from .options import runner_problem, split_beam_args

        known, left, beam_flags = split_beam_args(unknown)  # a value Beam refuses: BeamOptionError
        if not left:
            problem = runner_problem(known.runner)
            if problem:
                raise UsageError(problem)
            return list(unknown)
        unknown = left
    bad = next((a for a in unknown if a.startswith("-")), unknown[0])
    name = bad.split("=", 1)[0] if bad.startswith("--") else bad
    own = _option_strings(command_parser)
    hint = ""
    if name in own:  # typed before the subcommand: `sepflow -v run`
        hint = f" before the subcommand (give it after: {command_parser.prog} {name})"
    elif name.startswith("-"):  # sepflow's own flags first: they are the ones usually meant
        close = difflib.get_close_matches(name, own, n=1) or difflib.get_close_matches(name, beam_flags, n=1, cutoff=0.75)
        hint = f" (did you mean {close[0]}?)" if close else ""
    raise UsageError(f"unknown argument {name}{hint}")


def _import_beam_quietly() -> None:
    # apache_beam's GCP modules log a root-logger warning on import when the optional Google
    # client libraries are missing; that is noise unless you run on Dataflow.
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        import apache_beam  # noqa: F401
    finally:
        root.setLevel(level)


if __name__ == "__main__":
    sys.exit(main())
