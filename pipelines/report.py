"""``sepflow report``: one self-contained HTML page about a run (and its evaluation).

The page needs no server and no network: its CSS and its one small script are inline, its
images are base64 PNGs, and its audio players either link to the stem files by relative
paths (local runs) or carry short FLAC excerpts inline (remote runs, or ``--audio inline``).

What it shows, each section read from the run's own tables (``pipelines.metadata``), after a
table of contents that links to every section, track and operator:

- the job summary, from the run record ``<output>/_sepflow/runs/<run_id>.json`` of the run
  whose metadata is published (else the newest record, else counted from the metadata);
- the error rows of the metadata table (the first ``MAX_ERRORS_LISTED``, with the total);
- the evaluation (``sepflow evaluate``'s table): SDR, SIR, SAR and SI-SDR per operator label
  and stem, and a box plot of SDR across tracks;
- a few tracks, each a collapsible section: per operator, under a heading with its label,
  spectrograms of the mixture and stems on a log frequency axis in Hz, each stem's mask (its
  magnitude over the sum of the stems' magnitudes) and its activity segments from the
  features table. Figures are as wide as the page's content column.

Paths are shown normalised (``a/b/../c`` as ``a/c``). The work is split over
:mod:`pipelines.report_data` (reading), :mod:`pipelines.report_figures` (matplotlib),
:mod:`pipelines.report_html` (the page's shell) and :mod:`pipelines.report_sections`.
Apache Beam is not imported: the report reads Parquet with pyarrow through fsspec.

Example::

    sepflow report --run out/ -o out/report.html
    sepflow report --run s3://catalog/stems --evaluation s3://catalog/stems/evaluation -o r.html
"""
from __future__ import annotations

import argparse
import sys
import time

import fsspec

from .report_data import (
    EVALUATION_COLUMNS,
    METADATA_COLUMNS,
    ReportError,
    RunData,
    choose_tracks,
    default_evaluation_uri,
    read_evaluation,
    read_excerpt,
    read_parquet_folder,
    read_run,
)
from .report_figures import (
    DB_RANGE,
    ENVELOPE_POINTS,
    MAX_FRAMES,
    masks_of,
    sdr_box_plot,
    track_figure,
)
from .report_html import contents, display_uri, esc, page
from .report_sections import (
    MAX_ERRORS_LISTED,
    METRICS,
    SPECTROGRAM_S,
    AudioOptions,
    errors_section,
    evaluation_section,
    render_tracks,
    sdr_table,
    summary_section,
    track_section,
    tracks_section,
)

__all__ = [
    "DB_RANGE",
    "ENVELOPE_POINTS",
    "EVALUATION_COLUMNS",
    "MAX_ERRORS_LISTED",
    "MAX_FRAMES",
    "METADATA_COLUMNS",
    "METRICS",
    "SPECTROGRAM_S",
    "AudioOptions",
    "ReportError",
    "RunData",
    "add_arguments",
    "build_report",
    "choose_tracks",
    "default_evaluation_uri",
    "errors_section",
    "evaluation_section",
    "main",
    "masks_of",
    "read_evaluation",
    "read_excerpt",
    "read_parquet_folder",
    "read_run",
    "sdr_box_plot",
    "sdr_table",
    "summary_section",
    "track_figure",
    "track_section",
    "tracks_section",
    "write_report",
]

EXIT_OK = 0
EXIT_USAGE = 2

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


def main(args: argparse.Namespace) -> int:
    """Run ``sepflow report``; return 0, or 2 with one line on stderr for a usage error."""
    try:
        _check_arguments(args)
        started = time.perf_counter()
        run = read_run(args.run)
        evaluation_uri = args.evaluation or default_evaluation_uri(args.run)
        evaluation = read_evaluation(evaluation_uri) if evaluation_uri else None
        html_page = build_report(
            run,
            evaluation,
            evaluation_uri=evaluation_uri,
            sample_size=args.tracks,
            track_ids=args.track,
            audio=AudioOptions(args.audio, args.excerpt_s, args.out),
        )
        write_report(args.out, html_page)
    except ReportError as exc:
        print(f"sepflow report: {exc}", file=sys.stderr)
        return EXIT_USAGE
    print(f"sepflow report: wrote {display_uri(args.out)} ({len(html_page) / 1e6:.1f} MB, "
          f"{time.perf_counter() - started:.1f} s)", file=sys.stderr)
    return EXIT_OK


def _check_arguments(args: argparse.Namespace) -> None:
    missing = [flag for flag, value in (("--run", args.run), ("--out", args.out)) if not value]
    if missing:
        raise ReportError(f"missing {', '.join(missing)}; see sepflow report --help")
    if args.tracks < 0:
        raise ReportError(f"--tracks must be 0 or more, not {args.tracks}")
    if not args.excerpt_s > 0:
        raise ReportError(f"--excerpt-s must be positive, not {args.excerpt_s}")


def write_report(uri: str, text: str) -> None:
    """Write the page to ``uri`` (a path or fsspec URL), creating its folder, atomically."""
    from sepops.audio import write_bytes_atomic

    fs, path = fsspec.core.url_to_fs(uri)
    parent = path.rsplit("/", 1)[0] if "/" in path else ""
    if parent:
        fs.makedirs(parent, exist_ok=True)
    write_bytes_atomic(uri, text.encode("utf-8"))


def build_report(
    run: RunData,
    evaluation=None,
    *,
    evaluation_uri: str | None = None,
    sample_size: int = 3,
    track_ids: list[str] | tuple[str, ...] = (),
    audio: AudioOptions | None = None,
) -> str:
    """The report page of ``run`` as one HTML string.

    Parameters
    ----------
    run : RunData
        From :func:`read_run`.
    evaluation : pandas.DataFrame, optional
        From :func:`read_evaluation`; ``None`` when the run was not evaluated.
    evaluation_uri : str, optional
        Where the evaluation was read (shown on the page).
    sample_size : int
        Tracks to draw when ``track_ids`` is empty.
    track_ids : sequence of str
        Tracks to draw; each must be in the metadata table (else ``ReportError``).
    audio : AudioOptions, optional
        How the players get their audio (default: inline excerpts).
    """
    audio = audio or AudioOptions("inline", 10.0, None)
    chosen = choose_tracks(run.metadata, sample_size, track_ids)
    activity = run.activity_rows(chosen)
    run_id = (run.record or {}).get("run_id") or "(no run record)"
    header = (
        f"<h1>sepflow report</h1><p>Output <code>{esc(display_uri(run.output))}</code>, run <code>{esc(run_id)}</code>."
        + "".join(f' <span class="note">{esc(n)}.</span>' for n in run.notes)
        + "</p>"
    )
    tracks = render_tracks(run, chosen, audio, activity)
    sections = [
        header,
        contents([(track.track_id, track.labels) for track in tracks]),
        summary_section(run),
        errors_section(run.metadata),
        evaluation_section(evaluation, evaluation_uri),
        tracks_section(run, chosen, audio, activity, rendered=tracks),
    ]
    return page(f"sepflow report: {display_uri(run.output)}", sections)
