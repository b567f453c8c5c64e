"""``sepflow report``: its flags and its handler (the page itself: :mod:`pipelines.report`)."""
from __future__ import annotations

import argparse
import sys
import time

from .cli_common import require_flags
from .errors import EXIT_OK, EXIT_USAGE, UsageError

__all__ = ["DESCRIPTION", "add_arguments", "check_arguments", "main"]

DESCRIPTION = """\
Write one self-contained HTML page about a run: no server and no network needed to view it.

It shows a table of contents, the job's summary (tracks ok / error / skipped, audio hours,
wall time, x real time), the error rows, the evaluation when there is one (per operator and
stem the SDR/SIR/SAR/SI-SDR table and a box plot of SDR across tracks), and for a few tracks,
each in a collapsible section, per operator under a heading with its name: spectrograms of
the mixture and its stems on a log frequency axis (Hz), the stems' masks and activity
segments, with audio players.

examples (paths relative to the checkout):
  sepflow report --run out/ -o out/report.html
  sepflow evaluate --estimates out/ --references ../shared/data/manifest.json --oracles ibm,irm,mix
  sepflow report --run out/ -o out/report.html --tracks 5        # now with the SDR section
  sepflow report --run s3://bucket/stems -o report.html --track Artist/Album/01_Intro
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the ``sepflow report`` flags to ``parser``."""
    parser.description = DESCRIPTION
    parser.add_argument("--run", metavar="URI", help="the output folder of a sepflow run (local path or fsspec URL)")
    parser.add_argument(
        "--evaluation",
        metavar="URI",
        help="the table written by sepflow evaluate (default: <run>/evaluation if it exists)",
    )
    parser.add_argument("-o", "--out", dest="out", metavar="FILE", help="the HTML file to write, e.g. report.html")
    parser.add_argument("--tracks", type=int, default=3, metavar="N",
                        help="how many tracks to draw, chosen deterministically (default 3)")
    parser.add_argument("--track", action="append", default=[], metavar="ID",
                        help="draw this track (repeatable; replaces the --tracks sample)")
    parser.add_argument(
        "--audio",
        choices=("auto", "link", "inline"),
        default="auto",
        help="players link to the stem files (local runs) or carry inline FLAC excerpts; "
        "auto links when run and report are local (default auto)",
    )
    parser.add_argument("--excerpt-s", type=float, default=10.0, metavar="S",
                        help="seconds of audio in each inline player (default 10)")


def main(args: argparse.Namespace, _beam_args: list[str] = ()) -> int:
    """Run ``sepflow report`` (the handler's signature: it takes no Beam options); return 0,
    or 2 with one line on stderr for a usage error."""
    from .report import (
        AudioOptions,
        build_report,
        default_evaluation_uri,
        load_evaluation,
        read_run,
        write_report,
    )
    from .report_html import display_uri

    try:
        check_arguments(args)
        started = time.perf_counter()
        run = read_run(args.run)
        evaluation_uri = args.evaluation or default_evaluation_uri(args.run)
        evaluation = load_evaluation(evaluation_uri) if evaluation_uri else None
        html_page = build_report(
            run,
            evaluation,
            evaluation_uri=evaluation_uri,
            sample_size=args.tracks,
            track_ids=args.track,
            audio=AudioOptions(args.audio, args.excerpt_s, args.out),
        )
        write_report(args.out, html_page)
    except UsageError as exc:  # a flag, or a run the report cannot be drawn from (ReportError)
        print(f"sepflow report: {exc}", file=sys.stderr)
        return EXIT_USAGE
    print(f"sepflow report: wrote {display_uri(args.out)} ({len(html_page) / 1e6:.1f} MB, "
          f"{time.perf_counter() - started:.1f} s)", file=sys.stderr)
    return EXIT_OK


def check_arguments(args: argparse.Namespace) -> None:
    """Raise ``UsageError`` for a missing flag or a value out of range."""
    require_flags("report", [("--run", args.run), ("--out", args.out)])
    if args.tracks < 0:
        raise UsageError(f"--tracks must be 0 or more, not {args.tracks}")
    if not args.excerpt_s > 0:
        raise UsageError(f"--excerpt-s must be positive, not {args.excerpt_s}")
