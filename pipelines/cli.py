"""The ``sepflow`` command.

Subcommands are registered in ``SUBCOMMANDS`` as ``name -> Subcommand(help, add_arguments,
handler)``; adding one (``train``, ``export-onnx``) is one function pair and one entry::

    SUBCOMMANDS["train"] = Subcommand("train a U-Net", add_train_arguments, train_handler)

A handler gets the parsed ``argparse.Namespace`` and the Beam pipeline options on the command
line (``run`` and ``evaluate``; empty for the others) and returns the exit status. An argument
that neither the command nor (for those two) any Beam option knows stops every command with
one line, ``sepflow run: unknown argument --fromat (did you mean --format?)``, and exit status
2. Only commands marked ``needs_beam`` (``run``, ``evaluate``) import Apache Beam.
"""
from __future__ import annotations

import argparse
import dataclasses
import difflib
import json
import logging
import os
import re
import sys
import textwrap
import typing
from collections.abc import Callable, Sequence
from typing import NamedTuple

__all__ = ["SUBCOMMANDS", "Subcommand", "main"]

from .errors import EXIT_FAILED, EXIT_OK, EXIT_TRACK_ERRORS, EXIT_USAGE, UsageError  # noqa: F401 - re-exported


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


# --- run ------------------------------------------------------------------------------------
RUN_DESCRIPTION = """\
Separate every track of a catalog into stems and write Parquet metadata.

Output layout:
  <output>/stems/<track_id>/<stem>.<ext>  a config with one operator
  <output>/stems/<track_id>/<label>/<stem>.<ext>  a config with several (also with --operator)
  <output>/metadata/*.parquet             one row per (track, operator, stem) or error
  <output>/features/*.parquet             per-stem features (activity, onsets, LUFS ...; config `features:`)
  <output>/dead_letter/<label>/<track_id>.json   failed tracks, with the cause
  <output>/_sepflow/                      per-unit parts and run records (bookkeeping)

Any other flag must be a Beam pipeline option (a misspelled one stops the job, exit 2). Runners:
  (default)                the in-process runner (Beam's FnApiRunner)
  --runner=DirectRunner --direct_num_workers=4 --direct_running_mode=multi_processing
  --runner=DaskRunner --dask_client_address=tcp://scheduler:8786
  --runner=DataflowRunner --project=P --region=R --temp_location=gs://B/tmp --setup_file=./setup.py

examples:
  sepflow run --config configs/hpss.yaml --input 'music/**/*.flac' --output out/
  sepflow run --config configs/unet.yaml -i song.mp3 -o out/ --format wav --bit-depth 24
  sepflow run --config configs/unet.yaml -i vocals/ -o out/ --set features.pitch=true
  sepflow run --config configs/multi.yaml --input s3://catalog/tracks/ --output s3://catalog/stems \\
      --set audio.format=wav --set hpss.kernel_size=17
"""


def _add_run_arguments(parser: argparse.ArgumentParser) -> None:
    from .options import SepflowOptions

    SepflowOptions._add_argparse_args(parser)
    parser.add_argument(
        "--strict",
        action="store_true",
        help=f"exit with status {EXIT_TRACK_ERRORS} when any track failed (default: 0 once the job finished)",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log Beam's and sepflow's progress messages")


def _run(args: argparse.Namespace, beam_args: list[str]) -> int:
    from .config import ConfigError, load_job_config
    from .io import InputError
    from .run import run_job

    missing = [flag for flag, value in (("--input", args.inputs), ("--output", args.output)) if not value]
    if args.config is None and not args.operators:
        missing.append("--config (or --operator)")
    if missing:
        print(f"sepflow run: missing {', '.join(missing)}; see sepflow run --help", file=sys.stderr)
        return EXIT_USAGE
    try:
        overrides = _format_overrides(args) + list(args.overrides or [])
        job = load_job_config(args.config, operators=args.operators, overrides=overrides)
        summary = run_job(
            job,
            args.inputs,
            args.output,
            beam_args,
            overwrite=True if args.overwrite else None,
            progress=args.progress,
        )
    except (ConfigError, InputError) as exc:
        print(f"sepflow run: {exc}", file=sys.stderr)
        return EXIT_USAGE
    if not args.progress:  # the summary was not printed yet
        print(summary.table(), file=sys.stderr)
    if summary.inputs_unmatched:  # the other inputs ran; a scheduled job must not look clean
        for message in summary.inputs_unmatched:
            print(f"sepflow run: {message}", file=sys.stderr)
        return EXIT_USAGE
    if args.strict and summary.tracks_error:
        return EXIT_TRACK_ERRORS
    return EXIT_OK


_SUBTYPES = {"16": "PCM_16", "24": "PCM_24", "32": "FLOAT"}


def _format_overrides(args: argparse.Namespace) -> list[tuple[str, str]]:
    """``--format`` / ``--bit-depth`` as the config values they set, each with the flag it
    was typed as (``AudioSettings`` checks the combination; its error names the flag)."""
    out = []
    if args.audio_format:
        out.append((f"audio.format={args.audio_format}", f"--format {args.audio_format}"))
    if args.bit_depth:
        out.append((f"audio.subtype={_SUBTYPES[args.bit_depth]}", f"--bit-depth {args.bit_depth}"))
    return out


# --- operators ----------------------------------------------------------------------------
def _add_operators_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("name", nargs="?", help="show one operator only")
    parser.add_argument("--json", action="store_true", help="print JSON instead of text")


def _type_name(tp) -> str:
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin is typing.Literal:
        return " | ".join(map(str, args))
    if origin is typing.Union or str(origin) == "<class 'types.UnionType'>":
        return " | ".join("null" if a is type(None) else _type_name(a) for a in args)
    if origin in (tuple, list):
        return f"list of {_type_name(args[0])}" if args else "list"
    return getattr(tp, "__name__", str(tp)).replace("typing.", "")


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


def _first_paragraph(doc: str | None) -> str:
    """A docstring's first paragraph as one line (never cut mid-sentence)."""
    lines = []
    for line in (doc or "").strip().splitlines():
        if not line.strip():
            break
        lines.append(line.strip())
    return " ".join(lines)


def _parameter_docs(config_cls: type) -> dict[str, str]:
    """``name : text`` entries of a config class's docstring (and its bases'), by parameter;
    an entry naming several (``min_period_s, max_period_s : ...``) serves each."""
    docs: dict[str, str] = {}
    for cls in reversed(config_cls.__mro__):
        current: list[str] | None = None
        for line in (cls.__doc__ or "").splitlines():
            stripped = line.strip()
            entry = re.match(r"^([a-z_][a-z0-9_]*(?:, [a-z_][a-z0-9_]*)*) : (.*)$", stripped)
            if entry and line.startswith("    ") and not line.startswith("     "):
                current = [entry.group(2)]
                for name in entry.group(1).split(", "):
                    docs[name] = current  # shared list: continuation lines reach every name
            elif current is not None and stripped and line.startswith("        "):
                current.append(stripped)
            else:
                current = None
    return {name: _plain(" ".join(parts)) for name, parts in docs.items()}


def _plain(text: str) -> str:
    """reST markup read as plain text: ``x`` and :func:`x` -> x."""
    return re.sub(r":\w+:`~?([^`]+)`", r"\1", text).replace("``", "")


def _stem_names(cls) -> str:
    """What the operator's stems are called, in words."""
    if cls.needs_references:
        return "the names of the true stems it is given"
    described = getattr(cls, "stems_description", None)
    if described:
        return described
    try:
        return ", ".join(cls().stem_names) or "(named when fitted)"
    except Exception:  # noqa: BLE001 - a default that cannot be built here (a model missing)
        return "(see the parameters)"


def _operators(args: argparse.Namespace, _: list[str]) -> int:
    from sepops import OperatorConfigError, list_operators, resources
    from sepops.registry import operator_class

    names = [args.name] if args.name else list_operators()
    described = []
    for name in names:
        try:
            cls = operator_class(name)
        except OperatorConfigError as exc:
            print(f"sepflow operators: {exc}", file=sys.stderr)
            return EXIT_USAGE
        hints = typing.get_type_hints(cls.Config)
        helps = _parameter_docs(cls.Config)
        automatic = getattr(cls.Config, "automatic_stft", False)
        params = []
        for f in dataclasses.fields(cls.Config):
            default = f.default if f.default is not dataclasses.MISSING else None
            if f.default_factory is not dataclasses.MISSING:  # type: ignore[misc]
                default = f.default_factory()  # type: ignore[misc]
            text = helps.get(f.name, "")
            if f.name in ("n_fft", "hop_length") and not automatic:
                text += " 0 is not allowed here (it means automatic only for nmf)."
            params.append({"name": f.name, "type": _type_name(hints[f.name]), "default": default, "help": text.strip()})
        described.append({
            "name": name, "doc": _plain(_first_paragraph(cls.__doc__)), "needs_references": cls.needs_references,
            "stems": _stem_names(cls), "params": params,
        })
    shipped = {kind: resources.shipped(kind) for kind in resources.KINDS}
    for d in described:  # what a parameter of it may name
        d["shipped"] = {
            "nmf": {"dictionary": shipped["nmf_dictionary"]}, "unet": {"model": shipped["unet_model"]},
        }.get(d["name"], {})
    if args.json:
        print(json.dumps(described, indent=1, default=str))
        return EXIT_OK
    width = 88
    for d in described:
        note = "  (oracle: needs the true stems, not for catalogs)" if d["needs_references"] else ""
        print(f"{d['name']}{note}")
        if d["doc"]:
            print(textwrap.indent(textwrap.fill(d["doc"], width - 4), "    "))
        print(textwrap.indent(textwrap.fill(f"stems: {d['stems']}", width - 4), "    "))
        print("    parameters:")
        for p in d["params"]:
            head = f"{p['name']} ({p['type']}, default {p['default']!r})"
            print(textwrap.fill(
                f"{head}: {p['help']}" if p["help"] else head, width, initial_indent="      ", subsequent_indent="          "
            ))
        print()
    if not args.name or args.name in ("nmf", "unet"):
        print("shipped resources (a parameter may also name a path or URI of your own):")
        print(f"    nmf dictionary= {', '.join(shipped['nmf_dictionary'])}")
        print(f"    unet model=     {', '.join(shipped['unet_model'])}")
    return EXIT_OK


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


# --- evaluate / report: their own modules -----------------------------------------------------
def _add_evaluate_arguments(parser: argparse.ArgumentParser) -> None:
    from .evaluate import add_arguments

    add_arguments(parser)


def _evaluate(args: argparse.Namespace, beam_args: list[str]) -> int:
    from .evaluate import main as evaluate_main

    return evaluate_main(args, beam_args)


def _add_report_arguments(parser: argparse.ArgumentParser) -> None:
    from .report import add_arguments

    add_arguments(parser)


def _report(args: argparse.Namespace, _: list[str]) -> int:
    from .report import main as report_main

    return report_main(args)


SUBCOMMANDS: dict[str, Subcommand] = {
    "run": Subcommand(
        "separate a catalog (folder, bucket, manifest) with Beam",
        _add_run_arguments,
        _run,
        passes_unknown_args=True,
        description=RUN_DESCRIPTION,
        needs_beam=True,
    ),
    "evaluate": Subcommand(
        "score a run's stems against reference stems (BSS Eval SDR/SIR/SAR, SI-SDR) with Beam",
        _add_evaluate_arguments,
        _evaluate,
        passes_unknown_args=True,
        needs_beam=True,
    ),
    "report": Subcommand("write one self-contained HTML page about a run (and its evaluation)", _add_report_arguments, _report),
    "operators": Subcommand("list the separation operators and their parameters", _add_operators_arguments, _operators),
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
        beam_args = _beam_args(_subparser(parser, args.command), unknown, command.passes_unknown_args)
    except UsageError as exc:
        print(f"sepflow {args.command}: {exc}", file=sys.stderr)
        return EXIT_USAGE
    verbose = getattr(args, "verbose", False)
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    if verbose:
        logging.getLogger("sepflow").setLevel(logging.INFO)
        os.environ["SEPFLOW_VERBOSE"] = "1"  # Beam's worker processes log their start-up too
    return command.handler(args, beam_args)


def _subparser(parser: argparse.ArgumentParser, name: str) -> argparse.ArgumentParser:
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


def _beam_args(subparser: argparse.ArgumentParser, unknown: list[str], beam: bool) -> list[str]:
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
        from .options import BeamOptionError, runner_problem, split_beam_args

        try:
            known, left, beam_flags = split_beam_args(unknown)
        except BeamOptionError as exc:
            raise UsageError(str(exc)) from None
        if not left:
            problem = runner_problem(known.runner)
            if problem:
                raise UsageError(problem)
            return list(unknown)
        unknown = left
    bad = next((a for a in unknown if a.startswith("-")), unknown[0])
    name = bad.split("=", 1)[0] if bad.startswith("--") else bad
    own = _option_strings(subparser)
    hint = ""
    if name in own:  # typed before the subcommand: `sepflow -v run`
        hint = f" before the subcommand (give it after: {subparser.prog} {name})"
    elif name.startswith("-"):  # sepflow's own flags first: they are the ones usually meant
        close = difflib.get_close_matches(name, own, n=1) or difflib.get_close_matches(name, beam_flags, n=1, cutoff=0.75)
        hint = f" (did you mean {close[0]}?)" if close else ""
    raise UsageError(f"unknown argument {name}{hint}")


if __name__ == "__main__":
    sys.exit(main())
