"""``sepflow report``: one self-contained HTML page about a run (and its evaluation).

The page needs no server and no network: its CSS and its one small script are inline, its
images are base64 PNGs, and its audio players either link to the stem files by relative
paths (local runs) or carry short FLAC excerpts inline (remote runs, or ``--audio inline``).

What it shows, each section read from the run's own tables (:mod:`pipelines.tables`), after a
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
:mod:`pipelines.report_html` (the page's shell) and :mod:`pipelines.report_sections`; the
command's flags are :mod:`pipelines.cli_report`'s. Apache Beam is not imported: the report
reads Parquet with pyarrow through fsspec.

Example::

    sepflow report --run out/ -o out/report.html
    sepflow report --run s3://catalog/stems --evaluation s3://catalog/stems/evaluation -o r.html
"""
from __future__ import annotations

import fsspec

from .report_data import (
    EVALUATION_COLUMNS,
    METADATA_COLUMNS,
    ReportError,
    RunData,
    choose_tracks,
    default_evaluation_uri,
    load_evaluation,
    read_excerpt,
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
    "build_report",
    "choose_tracks",
    "default_evaluation_uri",
    "errors_section",
    "evaluation_section",
    "load_evaluation",
    "masks_of",
    "read_excerpt",
    "read_run",
    "sdr_box_plot",
    "sdr_table",
    "summary_section",
    "track_figure",
    "track_section",
    "tracks_section",
    "write_report",
]


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
    evaluation : pyarrow.Table, optional
        From :func:`load_evaluation`; ``None`` when the run was not evaluated.
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
