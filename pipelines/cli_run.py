"""``sepflow run``: its flags (``SepflowOptions`` and two of its own) and its handler."""
from __future__ import annotations

import argparse
import sys

from .cli_common import require_flags
from .errors import EXIT_OK, EXIT_TRACK_ERRORS, EXIT_USAGE, UsageError

__all__ = ["DESCRIPTION", "add_arguments", "format_overrides", "main"]

DESCRIPTION = """\
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

_SUBTYPES = {"16": "PCM_16", "24": "PCM_24", "32": "FLOAT"}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The flags of ``sepflow run`` (``SepflowOptions``'; unknown ones are Beam pipeline options)."""
    from .options import SepflowOptions

    SepflowOptions._add_argparse_args(parser)  # Beam's hook, the one definition of the flags
    parser.add_argument(
        "--strict",
        action="store_true",
        help=f"exit with status {EXIT_TRACK_ERRORS} when any track failed (default: 0 once the job finished)",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log Beam's and sepflow's progress messages")


def main(args: argparse.Namespace, beam_args: list[str]) -> int:
    """Run ``sepflow run``; return the exit status (0 ok, 2 usage error, 3 failed tracks with --strict)."""
    from .config import load_job_config
    from .run import run_job

    try:
        require_flags("run", [("--input", args.inputs), ("--output", args.output),
                              ("--config (or --operator)", args.config is not None or args.operators)])
        overrides = format_overrides(args) + list(args.overrides or [])
        job = load_job_config(args.config, operators=args.operators, overrides=overrides)
        summary = run_job(
            job,
            args.inputs,
            args.output,
            beam_args,
            overwrite=True if args.overwrite else None,
            progress=args.progress,
        )
    except UsageError as exc:  # a missing flag, the config (ConfigError) or the inputs (InputError)
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


def format_overrides(args: argparse.Namespace) -> list[tuple[str, str]]:
    """``--format`` / ``--bit-depth`` as the config values they set, each with the flag it
    was typed as (``AudioSettings`` checks the combination; its error names the flag)."""
    out = []
    if args.audio_format:
        out.append((f"audio.format={args.audio_format}", f"--format {args.audio_format}"))
    if args.bit_depth:
        out.append((f"audio.subtype={_SUBTYPES[args.bit_depth]}", f"--bit-depth {args.bit_depth}"))
    return out
