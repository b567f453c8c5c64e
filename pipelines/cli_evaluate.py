"""``sepflow evaluate``: its flags and its handler (the job is :mod:`pipelines.evaluate`'s)."""
from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING

from .cli_common import require_flags
from .errors import EXIT_OK, EXIT_TRACK_ERRORS, EXIT_USAGE, UsageError
from .evaluation_summary import summary_markdown, summary_text
from .io import join_uri
from .scoring import ORACLES, parse_oracles
from .tables import EVALUATION_DIR

if TYPE_CHECKING:
    from .evaluate import EvaluationResult

__all__ = ["DESCRIPTION", "add_arguments", "main"]

DESCRIPTION = """\
Score the stems of one or more `sepflow run` outputs against reference stems, as a Beam job.

Every separated track is paired with a reference track by its track id: the longest prefix
folder of the id that is a reference track (loop_1101/mixture -> loop_1101), or the id itself.
Stems are matched by name when all of an operator's stem names are reference stems; otherwise
(ICA's source_*, REPET's background/foreground, unsupervised NMF's repeating/non_repeating)
by the best assignment: the permutation with the highest mean SDR over the manifest's first
group of that size (a loop's accompaniment/lead), or, without a manifest, over every subset
of the track's reference stems of that size.

Scores per (track, operator, stem): BSS Eval v3 SDR/SIR/SAR over the whole signal and their
medians over 1 s frames (silent frames excluded), and SI-SDR. Estimates and references that
differ in channel count are both downmixed to mono; rates are matched with soxr.

Oracles (--oracles ibm,irm,mix): per reference track and per reference group its operators were
matched to, the ideal binary and ratio masks (the true stems' magnitudes, 2048-point STFT) applied
to the mixture the runs separated (one with the references' channel count first), and `mix`, the
mixture itself as every stem's estimate (the floor). Their rows have is_oracle = true.

References (--references):
  <folder>/<track>/stems/<stem>.flac   the validation set's layout (mixture*.flac are not stems)
  <folder>/<track>/<stem>.wav          musdb's layout (any audio extension)
  <folder>/manifest.json               a manifest of pieces[].files.stems, with stem groups
                                       `stems` (assignment's candidates) and `hpss_stems`

Output (default: the first --estimates):
  <output>/evaluation/evaluation-<id>-part-*.parquet   one row per (track, operator, stem)
  <output>/evaluation_summary/summary-<id>.json        the summary table printed at the end
Re-running replaces the previous evaluation's files there.

Any other flag must be a Beam pipeline option (a misspelled one stops the command, exit 2); the
default runner is the in-process FnApiRunner (--runner=DirectRunner), as for `sepflow run`.

example (from the checkout, with the validation set in ../shared/data):
  sepflow run --config configs/hpss.yaml --input '../shared/data/loop_*/mixture.flac' --output out/hpss
  sepflow evaluate --estimates out/hpss --references ../shared/data/manifest.json --oracles ibm,irm,mix
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The flags of ``sepflow evaluate`` (unknown ones are Beam pipeline options)."""
    parser.description = DESCRIPTION
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.add_argument("--estimates", action="append", default=[], metavar="RUN",
                        help="the --output of a sepflow run (repeat for several runs; their labels should differ)")
    parser.add_argument("--references", metavar="FOLDER_OR_MANIFEST",
                        help="reference stems: a folder (<track>/stems/<stem>.flac or <track>/<stem>.wav) "
                             "or a manifest.json")
    parser.add_argument("--oracles", default="", metavar="NAMES",
                        help=f"comma-separated baselines to add: {', '.join(ORACLES)} (ideal binary / ratio "
                             "mask from the true stems; the mixture itself as every stem)")
    parser.add_argument("-o", "--output", metavar="URI",
                        help="where evaluation/ is written (default: the first --estimates)")
    parser.add_argument("--markdown", action="store_true", help="print the summary as a Markdown table")
    parser.add_argument("--shards", type=int, default=1, help="Parquet files of the table (default 1)")
    parser.add_argument("--no-progress", "--no_progress", dest="progress", action="store_false",
                        help="do not print the live progress line on stderr")
    parser.add_argument("--strict", action="store_true",
                        help=f"exit with status {EXIT_TRACK_ERRORS} when any row is an error")
    parser.add_argument("-v", "--verbose", action="store_true", help="log Beam's and sepflow's progress messages")


def main(args: argparse.Namespace, beam_args: list[str]) -> int:
    """Run ``sepflow evaluate``; return the exit status (0 ok, 2 usage error, 3 errors with --strict)."""
    from .evaluate import evaluate  # Beam, imported only when the command runs

    try:
        require_flags("evaluate", [("--estimates", args.estimates), ("--references", args.references)])
        result = evaluate(
            args.estimates, args.references, oracles=parse_oracles(args.oracles), output=args.output,
            beam_args=beam_args, shards=args.shards, progress=args.progress,
        )
    except UsageError as exc:  # a missing flag, an unknown oracle, the references or runs (InputError)
        print(f"sepflow evaluate: {exc}", file=sys.stderr)
        return EXIT_USAGE
    _print_result(result, args.markdown)
    if args.strict and result.errors:
        return EXIT_TRACK_ERRORS
    return EXIT_OK


def _print_result(result: EvaluationResult, markdown: bool) -> None:
    """The summary table on stdout, or, when no row was scored, the errors in its place (a
    table of headers only says nothing); the counts and the first errors on stderr."""
    shown = 10
    if result.summary:
        print(summary_markdown(result.summary) if markdown else summary_text(result.summary))
    else:
        print(f"no scores: all {result.rows} rows are errors:" if result.rows
              else "no scores: the runs have no separated stems to evaluate")
        for message in result.error_messages[:shown]:
            print(f"  {message}")
    print(f"[sepflow] evaluation {result.evaluation_id}: {result.rows} rows, {result.errors} errors, "
          f"{result.wall_s:.1f} s -> {join_uri(result.output, EVALUATION_DIR)}", file=sys.stderr)
    if result.summary:
        for message in result.error_messages[:shown]:
            print(f"[sepflow] error: {message}", file=sys.stderr)
    if len(result.error_messages) > shown:
        print(f"[sepflow] ... {len(result.error_messages) - shown} more distinct errors in the table's "
              "error_message column", file=sys.stderr)
