"""``sepflow report``: one self-contained HTML page about a run (and its evaluation).

The page needs no server and no network: its CSS and its one small script are inline, its
images are base64 PNGs, and its audio players either link to the stem files by relative
paths (local runs) or carry short FLAC excerpts inline (remote runs, or ``--audio inline``).

What it shows, each section read from the run's own tables (``pipelines.metadata``):

- the job summary, from the run record ``<output>/_sepflow/runs/<run_id>.json`` of the run
  whose metadata is published (else the newest record, else counted from the metadata);
- the error rows of the metadata table (the first ``MAX_ERRORS_LISTED``, with the total);
- the evaluation (``sepflow evaluate``'s table): SDR, SIR, SAR and SI-SDR per operator label
  and stem, and a box plot of SDR across tracks;
- a few tracks: spectrograms of the mixture and stems, each stem's mask (its magnitude over
  the sum of the stems' magnitudes) and its activity segments from the features table.

Apache Beam is not imported: the report reads Parquet with pyarrow through fsspec.

Example::

    sepflow report --run out/ --out out/report.html
    sepflow report --run s3://catalog/stems --evaluation s3://catalog/stems/evaluation --out r.html
"""
from __future__ import annotations

import argparse
import base64
import hashlib
import html
import io
import json
import logging
import os
import re
import sys
import time
import urllib.parse
from dataclasses import dataclass, field

import fsspec
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from .io import join_uri
from .metadata import parquet_dataset

__all__ = ["ReportError", "add_arguments", "build_report", "main", "read_evaluation", "read_run", "write_report"]

_LOG = logging.getLogger("sepflow")

EXIT_OK = 0
EXIT_USAGE = 2

#: Error rows listed on the page; the total is always given.
MAX_ERRORS_LISTED = 200
#: Seconds of each sampled track that its figures show (bounds the report's time and size).
SPECTROGRAM_S = 30.0
#: Spectrogram frames drawn at most: longer excerpts get a larger hop (the image is ~900 px wide).
MAX_FRAMES = 900
#: Floor of the dB scale, relative to the mixture's peak.
DB_RANGE = 80.0
#: Points of the waveform envelope drawn per stem.
ENVELOPE_POINTS = 1500

EVALUATION_COLUMNS = ("track_id", "label", "stem", "is_oracle", "sdr", "sir", "sar", "si_sdr", "status")
METRICS = (("sdr", "SDR"), ("sir", "SIR"), ("sar", "SAR"), ("si_sdr", "SI-SDR"))
_PUBLISHED_NAME = re.compile(r"^stems-(?P<run_id>.+)-part-\d+\.parquet$")


class ReportError(ValueError):
    """A usage error: the run, the evaluation or a requested track is not what was expected."""


# --- the command ------------------------------------------------------------------------------
DESCRIPTION = """\
Write one self-contained HTML page about a run: no server and no network needed to view it.

It shows the job's summary (tracks ok / error / skipped, audio hours, wall time, x real time),
the error rows, the evaluation when there is one (per operator and stem the SDR/SIR/SAR/SI-SDR
table and a box plot of SDR across tracks), and for a few tracks the spectrograms of the
mixture and its stems, the stems' masks and activity segments, with audio players.

examples:
  sepflow report --run out/ --out out/report.html
  sepflow evaluate --estimates out/ --references ../shared/data/manifest.json --oracles ibm,irm,mix
  sepflow report --run out/ --out out/report.html --tracks 5        # now with the SDR section
  sepflow report --run s3://bucket/stems --out report.html --track Artist/Album/01_Intro
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
    parser.add_argument("--out", metavar="FILE", help="the HTML file to write, e.g. report.html")
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
        page = build_report(
            run,
            evaluation,
            evaluation_uri=evaluation_uri,
            sample_size=args.tracks,
            track_ids=args.track,
            audio=AudioOptions(args.audio, args.excerpt_s, args.out),
        )
        write_report(args.out, page)
    except ReportError as exc:
        print(f"sepflow report: {exc}", file=sys.stderr)
        return EXIT_USAGE
    print(f"sepflow report: wrote {args.out} ({len(page) / 1e6:.1f} MB, {time.perf_counter() - started:.1f} s)",
          file=sys.stderr)
    return EXIT_OK


def _check_arguments(args: argparse.Namespace) -> None:
    missing = [flag for flag, value in (("--run", args.run), ("--out", args.out)) if not value]
    if missing:
        raise ReportError(f"missing {', '.join(missing)}; see sepflow report --help")
    if args.tracks < 0:
        raise ReportError(f"--tracks must be 0 or more, not {args.tracks}")
    if not args.excerpt_s > 0:
        raise ReportError(f"--excerpt-s must be positive, not {args.excerpt_s}")


def write_report(uri: str, page: str) -> None:
    """Write the page to ``uri`` (a path or fsspec URL), creating its folder, atomically."""
    from sepops.audio import write_bytes_atomic

    fs, path = fsspec.core.url_to_fs(uri)
    parent = path.rsplit("/", 1)[0] if "/" in path else ""
    if parent:
        fs.makedirs(parent, exist_ok=True)
    write_bytes_atomic(uri, page.encode("utf-8"))


# --- reading the run ----------------------------------------------------------------------------
@dataclass
class RunData:
    """What the report reads of one sepflow output.

    Attributes
    ----------
    output : str
        The output folder, as given (no trailing slash).
    record : dict or None
        The run record (``run.py``'s ``_write_run_record``) of the published run.
    metadata : pyarrow.Table
        The metadata table, the columns the report uses (``METADATA_COLUMNS``); empty when none
        is published. Kept as a table: a catalog's million rows are filtered, never listed.
    features_uri : str or None
        The features table's folder; ``None`` when the run has none. Only the sampled tracks'
        rows are read from it (:meth:`activity_rows`).
    """

    output: str
    record: dict | None
    metadata: pa.Table
    features_uri: str | None = None
    notes: list[str] = field(default_factory=list)

    def rows_of(self, track_id: str) -> list[dict]:
        """The metadata rows of one track."""
        return self.metadata.filter(pc.equal(self.metadata["track_id"], track_id)).to_pylist()

    def activity_rows(self, track_ids: list[str]) -> dict[tuple[str, str, str], list]:
        """Activity segments by ``(track_id, label, stem)`` of the given tracks only."""
        if self.features_uri is None or not track_ids:
            return {}
        import pyarrow.dataset as ds

        table = parquet_dataset(self.features_uri).to_table(
            columns=["track_id", "label", "stem", "activity_segments"], filter=ds.field("track_id").isin(track_ids)
        )
        return {(r["track_id"], r["label"], r["stem"]): r["activity_segments"] or [] for r in table.to_pylist()}


#: The metadata columns the report reads.
METADATA_COLUMNS = (
    "track_id", "source_uri", "operator", "label", "stem", "stem_uri", "status", "error_type", "error_message",
    "duration_s",
)


def read_parquet_folder(uri: str, columns: list[str] | None = None) -> pa.Table | None:
    """The Parquet files of folder ``uri`` as one table (only ``columns``, when given), or
    ``None`` when the folder does not exist or holds none."""
    dataset = parquet_dataset(uri)
    return None if dataset is None else dataset.to_table(columns=columns)


def _published_run_id(output: str) -> str | None:
    """The run id in the names of the published metadata files (the newest, should there be several)."""
    dataset = parquet_dataset(join_uri(output, "metadata"))
    if dataset is None:
        return None
    ids = [m["run_id"] for p in dataset.files if (m := _PUBLISHED_NAME.match(p.rsplit("/", 1)[-1]))]
    return max(ids) if ids else None


def _run_record(output: str, run_id: str | None) -> dict | None:
    """The record of ``run_id``, else the newest record (run ids start with their UTC time)."""
    fs, path = fsspec.core.url_to_fs(join_uri(output, "_sepflow", "runs"))
    try:
        names = sorted(p.rsplit("/", 1)[-1] for p in fs.ls(path, detail=False) if p.endswith(".json"))
    except FileNotFoundError:
        return None
    if not names:
        return None
    chosen = f"{run_id}.json" if run_id and f"{run_id}.json" in names else names[-1]
    return json.loads(fs.cat_file(f"{path}/{chosen}"))


def read_run(output: str) -> RunData:
    """Read a sepflow output's run record, metadata and (optional) features table.

    Raises
    ------
    ReportError
        When ``output`` does not exist or is not a sepflow output.
    """
    output = output.rstrip("/")
    fs, path = fsspec.core.url_to_fs(output)
    if not fs.isdir(path):
        raise ReportError(f"--run {output} does not exist (or is not a folder)")
    if not fs.isdir(join_uri(path, "metadata")) and not fs.isdir(join_uri(path, "_sepflow", "runs")):
        raise ReportError(f"--run {output} is not a sepflow output: it has no metadata/ or _sepflow/runs/")
    from .metadata import STEM_METADATA_SCHEMA

    metadata = read_parquet_folder(join_uri(output, "metadata"), list(METADATA_COLUMNS))
    run = RunData(output, _run_record(output, _published_run_id(output)), metadata)
    if metadata is None:
        run.metadata = pa.table({c: pa.array([], STEM_METADATA_SCHEMA.field(c).type) for c in METADATA_COLUMNS})
        run.notes.append("no metadata table is published in this output")
    features_uri = join_uri(output, "features")
    if parquet_dataset(features_uri) is not None:
        run.features_uri = features_uri
    return run


def default_evaluation_uri(output: str) -> str | None:
    """``<output>/evaluation`` when that folder exists, else ``None``."""
    uri = join_uri(output.rstrip("/"), "evaluation")
    fs, path = fsspec.core.url_to_fs(uri)
    return uri if fs.isdir(path) else None


def read_evaluation(uri: str):
    """The evaluation table at ``uri`` as a pandas DataFrame.

    Raises
    ------
    ReportError
        When there is no Parquet table there, or it lacks the evaluation's columns.
    """
    table = read_parquet_folder(uri)
    if table is None:
        raise ReportError(f"--evaluation {uri} holds no Parquet table (write one with sepflow evaluate)")
    missing = [c for c in EVALUATION_COLUMNS if c not in table.column_names]
    if missing:
        raise ReportError(f"--evaluation {uri} is not an evaluation table: it lacks {', '.join(missing)}")
    return table.to_pandas()


# --- the page -----------------------------------------------------------------------------------
_CSS = """
body { font: 15px/1.45 system-ui, sans-serif; color: #222; max-width: 1180px; margin: 1.5em auto; padding: 0 1em; }
h1 { font-size: 1.6em; margin-bottom: .2em; } h2 { border-bottom: 1px solid #ccc; margin-top: 2em; }
table { border-collapse: collapse; margin: .6em 0; font-variant-numeric: tabular-nums; }
th, td { border: 1px solid #ddd; padding: .25em .6em; text-align: left; vertical-align: top; }
td.num { text-align: right; } tr.oracle td { color: #777; font-style: italic; }
.kv th { background: #f4f4f4; font-weight: 600; } thead th { background: #eee; }
figure { margin: 1em 0; } figcaption { color: #555; font-size: .9em; }
img { max-width: 100%; height: auto; } .note { color: #666; } .error { color: #a00; }
.players { display: flex; flex-wrap: wrap; gap: .4em 1.2em; } .players figure { margin: .2em 0; }
audio { width: 260px; } code { font-size: .92em; }
"""

# Records script errors and failed image/audio loads in <body data-errors>, and marks the page
# rendered: a headless browser's dumped DOM then shows whether the page worked.
_SCRIPT = """
(function () {
  var errors = [];
  function record(message) {
    errors.push(message);
    if (document.body) { document.body.setAttribute("data-errors", errors.join(" | ")); }
  }
  window.onerror = function (message, source, line) { record("script: " + message + " (line " + line + ")"); };
  window.addEventListener("error", function (event) {
    var el = event.target;
    if (el && el.tagName && /^(IMG|AUDIO|SOURCE|VIDEO)$/.test(el.tagName)) {
      record("failed to load " + el.tagName.toLowerCase() + " " + String(el.currentSrc || el.src || "").slice(0, 160));
    }
  }, true);
  document.addEventListener("DOMContentLoaded", function () {
    document.body.setAttribute("data-errors", errors.join(" | "));
    document.body.setAttribute("data-rendered", "1");
  });
})();
"""


def _esc(value) -> str:
    return html.escape("" if value is None else str(value), quote=True)


def _table(headers: list[str], rows: list[list[str]], *, numeric: set[int] = frozenset(), row_classes=None) -> str:
    """An HTML table; cells are HTML already (escape text with ``_esc``)."""
    head = "".join(f"<th>{h}</th>" for h in headers)
    body = []
    for i, row in enumerate(rows):
        cls = f' class="{row_classes[i]}"' if row_classes and row_classes[i] else ""
        cells = "".join(f'<td class="num">{c}</td>' if j in numeric else f"<td>{c}</td>" for j, c in enumerate(row))
        body.append(f"<tr{cls}>{cells}</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def _figure(png: bytes, caption: str, alt: str) -> str:
    data = base64.b64encode(png).decode("ascii")
    return f'<figure><img src="data:image/png;base64,{data}" alt="{_esc(alt)}"><figcaption>{caption}</figcaption></figure>'


def _png(fig) -> bytes:
    """The figure as a 256-colour PNG: spectrograms are noisy images that a full-colour PNG
    stores at ~500 KB each; the palette keeps them near a third of that, with no visible loss."""
    from PIL import Image

    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=72)
    image = Image.open(io.BytesIO(buffer.getvalue())).convert("RGB").quantize(256)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", optimize=True)
    return buffer.getvalue()


def _page(title: str, sections: list[str]) -> str:
    return (
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
        f"<title>{_esc(title)}</title><style>{_CSS}</style><script>{_SCRIPT}</script></head>"
        f"<body data-errors=\"\">{''.join(sections)}</body></html>\n"
    )


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
        f"<h1>sepflow report</h1><p>Output <code>{_esc(run.output)}</code>, run <code>{_esc(run_id)}</code>."
        + "".join(f' <span class="note">{_esc(n)}.</span>' for n in run.notes)
        + "</p>"
    )
    sections = [
        header,
        summary_section(run),
        errors_section(run.metadata),
        evaluation_section(evaluation, evaluation_uri),
        tracks_section(run, chosen, audio, activity),
    ]
    return _page(f"sepflow report: {run.output}", sections)


# --- summary and errors ------------------------------------------------------------------------
def _counts_from_metadata(table: pa.Table) -> dict:
    """Track counts when there is no run record: a track with any error row failed."""
    statuses: dict[str, set[str]] = {}
    for track_id, status in zip(table["track_id"].to_pylist(), table["status"].to_pylist()):
        statuses.setdefault(track_id, set()).add(status)
    ok = table.filter(pc.equal(table["status"], "ok"))
    durations = dict(zip(ok["track_id"].to_pylist(), ok["duration_s"].to_pylist()))
    return {
        "tracks_ok": sum(1 for s in statuses.values() if "error" not in s and s != {"skipped"}),
        "tracks_error": sum(1 for s in statuses.values() if "error" in s),
        "tracks_skipped": sum(1 for s in statuses.values() if s == {"skipped"}),
        "stems_written": ok.num_rows,
        "audio_s": float(sum(d for d in durations.values() if d is not None)),
    }


def summary_section(run: RunData) -> str:
    """The job summary as a key/value table (each row's ``data-key`` names the summary field)."""
    record = run.record or {}
    summary = record.get("summary") or _counts_from_metadata(run.metadata)
    audio_s, wall_s = summary.get("audio_s") or 0.0, summary.get("wall_s")
    labels = [op.get("label") or op.get("operator") for op in (record.get("config") or {}).get("operators", [])]
    rows = [
        ("tracks_ok", "tracks ok", summary.get("tracks_ok")),
        ("tracks_error", "tracks error", summary.get("tracks_error")),
        ("tracks_skipped", "tracks skipped (already complete)", summary.get("tracks_skipped")),
        ("stems_written", "stems written", summary.get("stems_written")),
        ("audio_h", "audio separated", f"{audio_s / 3600:.3f} h ({audio_s:.1f} s)"),
        ("wall_s", "wall time", f"{wall_s:.1f} s" if wall_s is not None else "-"),
        ("real_time", "speed", f"{audio_s / wall_s:.1f}× real time" if wall_s else "-"),
        ("runner", "runner", summary.get("runner", "-")),
        ("operators", "operators", ", ".join(labels) or "-"),
        ("inputs", "inputs", ", ".join(record.get("inputs", [])) or "-"),
        ("sepflow_version", "sepflow version", record.get("sepflow_version", "-")),
    ]
    body = "".join(f'<tr data-key="{key}"><th>{_esc(name)}</th><td>{_esc(value)}</td></tr>' for key, name, value in rows)
    source = "the run record" if run.record else "counted from the metadata table (no run record found)"
    return f'<h2 id="summary">Job summary</h2><table class="kv">{body}</table><p class="note">From {source}.</p>'


def errors_section(table: pa.Table) -> str:
    """The metadata's error rows, the first ``MAX_ERRORS_LISTED`` by track and label."""
    errors = table.filter(pc.equal(table["status"], "error"))
    title = '<h2 id="errors">Errors</h2>'
    if not errors.num_rows:
        return title + '<p data-errors-total="0">No track failed.</p>'
    shown = errors.sort_by([("track_id", "ascending"), ("label", "ascending")]).slice(0, MAX_ERRORS_LISTED).to_pylist()
    table_html = _table(
        ["track", "operator", "error", "message"],
        [[_esc(r["track_id"]), _esc(r["label"]), _esc(r["error_type"]), _esc(r["error_message"])] for r in shown],
    )
    total = errors.num_rows
    count = f"{total} error rows" + (f", the first {len(shown)} listed" if len(shown) < total else "")
    return f'{title}<p data-errors-total="{total}">{count}; each has its cause in dead_letter/.</p>{table_html}'


# --- evaluation ---------------------------------------------------------------------------------
def sdr_table(evaluation):
    """Mean and median of each metric per (label, operator, stem, is_oracle) over the ok rows."""
    ok = evaluation[evaluation["status"] == "ok"]
    keys = ["label", "stem", "is_oracle"] + (["operator"] if "operator" in ok.columns else [])
    grouped = ok.groupby(keys, dropna=False)
    stats = grouped[[m for m, _ in METRICS]].agg(["mean", "median"])
    stats.columns = [f"{m}_{s}" for m, s in stats.columns]
    stats["tracks"] = grouped["track_id"].nunique()
    return stats.reset_index().sort_values(["is_oracle", "label", "stem"])


def _fmt_db(value) -> str:
    return "-" if value is None or not np.isfinite(value) else f"{value:.2f}"


def sdr_box_plot(evaluation) -> bytes:
    """A box plot of SDR across tracks, one box per label/stem (oracles in grey), as PNG."""
    from matplotlib.figure import Figure

    ok = evaluation[(evaluation["status"] == "ok") & np.isfinite(evaluation["sdr"].astype(float))]
    groups = sorted(ok.groupby(["is_oracle", "label", "stem"]), key=lambda g: g[0])
    fig = Figure(figsize=(min(16.0, 2.5 + 0.9 * len(groups)), 3.6), layout="constrained")
    ax = fig.add_subplot()
    values = [g["sdr"].to_numpy(float) for _, g in groups]
    names = [f"{label}/{stem}" + (" (oracle)" if oracle else "") for (oracle, label, stem), _ in groups]
    boxes = ax.boxplot(values, patch_artist=True, showmeans=True)
    for patch, ((oracle, _, _), _) in zip(boxes["boxes"], groups):
        patch.set_facecolor("#cccccc" if oracle else "#9ecae1")
    ax.set_xticks(range(1, len(names) + 1), names, rotation=20, ha="right")
    ax.set_ylabel("SDR (dB)")
    ax.grid(axis="y", alpha=0.3)
    return _png(fig)


def evaluation_section(evaluation, evaluation_uri: str | None) -> str:
    """The SDR table and box plot, or a note saying how to get them."""
    title = '<h2 id="evaluation">Evaluation</h2>'
    if evaluation is None:
        return title + '<p class="note" id="no-evaluation">no evaluation: run sepflow evaluate</p>'
    failed = int((evaluation["status"] != "ok").sum())
    if failed == len(evaluation):
        return title + f'<p class="error">All {failed} evaluation rows failed; see error_message in the table.</p>'
    stats = sdr_table(evaluation)
    headers = ["label", "stem", "tracks"] + [f"{name} {s}" for _, name in METRICS for s in ("mean", "median")]
    rows, classes = [], []
    for r in stats.to_dict("records"):
        stem = _esc(r["stem"]) + (" <em>(oracle)</em>" if r["is_oracle"] else "")
        rows.append([_esc(r["label"]), stem, str(r["tracks"])]
                    + [_fmt_db(r[f"{m}_{s}"]) for m, _ in METRICS for s in ("mean", "median")])
        classes.append("oracle" if r["is_oracle"] else "")
    table = _table(headers, rows, numeric=set(range(2, len(headers))), row_classes=classes)
    note = f" {failed} rows failed to evaluate and are left out." if failed else ""
    caption = "SDR across tracks per operator label and stem (box: quartiles, line: median, triangle: mean)."
    return (
        f"{title}<p>From <code>{_esc(evaluation_uri)}</code>: BSS Eval SDR, SIR, SAR and SI-SDR in dB over "
        f"{evaluation['track_id'].nunique()} tracks; oracle rows (scored with the true stems) in grey.{note}</p>"
        + table + _figure(sdr_box_plot(evaluation), caption, "box plot of SDR per label and stem")
    )


# --- sampled tracks -----------------------------------------------------------------------------
def choose_tracks(table: pa.Table, sample_size: int, requested=()) -> list[str]:
    """The tracks to draw: ``requested`` (each must be in the metadata), else ``sample_size`` of
    the tracks with ok stems, in the order of a hash of their id (the same sample every time,
    spread over the catalog rather than its first names)."""
    if requested:
        known = set(pc.unique(table["track_id"]).to_pylist())
        unknown = [t for t in requested if t not in known]
        if unknown:
            raise ReportError(f"--track {unknown[0]} is not in the run's metadata")
        return list(dict.fromkeys(requested))
    ok = table.filter(pc.and_(pc.equal(table["status"], "ok"), pc.is_valid(table["stem_uri"])))
    ids = pc.unique(ok["track_id"]).to_pylist()
    return sorted(ids, key=lambda t: hashlib.sha1(t.encode("utf-8")).hexdigest())[:sample_size]


def _is_local(uri: str) -> bool:
    from sepops.audio import is_local

    return is_local(fsspec.core.url_to_fs(uri)[0])


def read_excerpt(uri: str, seconds: float) -> tuple[np.ndarray, int]:
    """The first ``seconds`` of an audio file, (channels, samples) float32, without decoding the
    rest where soundfile can read the format (else the whole file is decoded, then cut)."""
    import soundfile as sf

    from sepops.audio import load_audio

    try:
        with fsspec.open(uri, "rb") as f, sf.SoundFile(f) as sound:
            audio = sound.read(int(seconds * sound.samplerate), dtype="float32", always_2d=True)
            return np.ascontiguousarray(audio.T), sound.samplerate
    except (sf.LibsndfileError, RuntimeError, TypeError):
        audio, sr = load_audio(uri)  # ffmpeg formats (mp3, m4a ...)
        return audio[:, : int(seconds * sr)], sr


@dataclass
class AudioOptions:
    """How the players get their audio: ``mode`` auto|link|inline, ``excerpt_s`` seconds inline,
    ``report_uri`` where the page goes (links are relative to its folder)."""

    mode: str
    excerpt_s: float
    report_uri: str | None

    def links(self, uri: str) -> bool:
        """Whether ``uri`` can be a relative link: a local file, and a local report."""
        if self.mode == "inline" or not self.report_uri:
            return False
        return _is_local(uri) and _is_local(self.report_uri)


def _relative_link(uri: str, report_uri: str) -> str:
    target = fsspec.core.url_to_fs(uri)[1]
    folder = os.path.dirname(os.path.abspath(fsspec.core.url_to_fs(report_uri)[1]))
    return urllib.parse.quote(os.path.relpath(os.path.abspath(target), folder))


def _flac_data_uri(audio: np.ndarray, sr: int) -> str:
    import soundfile as sf

    buffer = io.BytesIO()
    # FLAC is lossless and about half a WAV's size; it holds integers only, hence the clip.
    sf.write(buffer, np.clip(audio.T, -1.0, 1.0), sr, format="FLAC", subtype="PCM_16")
    return "data:audio/flac;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def _player(name: str, uri: str, audio: np.ndarray, sr: int, options: AudioOptions) -> str:
    """An <audio> player: a relative link to the file, or an inline FLAC excerpt."""
    if options.links(uri):
        src, note = _relative_link(uri, options.report_uri), ""
    else:
        src = _flac_data_uri(audio[:, : int(options.excerpt_s * sr)], sr)
        note = f" (first {min(options.excerpt_s, audio.shape[1] / sr):.0f} s)"
    return (f'<figure><figcaption>{_esc(name)}{note}</figcaption>'
            f'<audio controls preload="metadata" src="{_esc(src)}"></audio></figure>')


def _stft_grid(samples: int, sr: int) -> tuple[int, int]:
    """``(n_fft, hop)`` for a display spectrogram of at most ``MAX_FRAMES`` frames."""
    n_fft = 2048 if sr > 32000 else 1024
    hop = max(n_fft // 4, -(-samples // MAX_FRAMES))
    return n_fft, min(hop, n_fft)


def magnitude(audio: np.ndarray, n_fft: int, hop: int) -> np.ndarray:
    """The magnitude spectrogram of the channels' mean, (bins, frames)."""
    from sepops.spectral import stft

    return np.abs(stft(audio.mean(axis=0), n_fft=n_fft, hop_length=hop)[0])


def masks_of(magnitudes: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Each stem's share of the stems' summed magnitude per bin, 0..1 (0 where all are silent)."""
    total = sum(magnitudes.values())
    safe = np.where(total > 0, total, 1.0)
    return {stem: np.where(total > 0, m / safe, 0.0) for stem, m in magnitudes.items()}


def _envelope(audio: np.ndarray, sr: int) -> tuple[np.ndarray, np.ndarray]:
    """Peak envelope of the channels' mean: times (s) and peak per point, at most ``ENVELOPE_POINTS``."""
    x = np.abs(audio.mean(axis=0))
    step = max(1, -(-x.size // ENVELOPE_POINTS))
    padded = np.pad(x, (0, -x.size % step)).reshape(-1, step).max(axis=1)
    return np.arange(padded.size) * step / sr, padded


def track_figure(mixture, mixture_sr, stems, stems_sr, activity) -> bytes:
    """One track and operator: rows mixture + stems; columns spectrogram (dB re the mixture's
    peak), mask (0..1) and waveform with the activity segments shaded. PNG bytes.

    Parameters
    ----------
    mixture : np.ndarray, (channels, samples)
    stems : dict of stem -> np.ndarray, (channels, samples), all at ``stems_sr``
    activity : dict of stem -> list of (start_s, end_s), or None without a features table
    """
    from matplotlib.figure import Figure

    n_fft, hop = _stft_grid(mixture.shape[1], mixture_sr)
    mix_mag = magnitude(mixture, n_fft, hop)
    ref = float(mix_mag.max()) or 1.0
    stem_fft, stem_hop = _stft_grid(max(a.shape[1] for a in stems.values()), stems_sr)
    stem_mags = {s: magnitude(a, stem_fft, stem_hop) for s, a in stems.items()}
    frames = min(m.shape[1] for m in stem_mags.values())
    stem_mags = {s: m[:, :frames] for s, m in stem_mags.items()}
    masks = masks_of(stem_mags)

    rows = 1 + len(stems)
    fig = Figure(figsize=(13.0, 1.75 * rows + 0.4), layout="constrained")
    axes = fig.subplots(rows, 3, squeeze=False, width_ratios=[1.15, 1.15, 1.0])

    def spectrogram(ax, mag, sr, hop_, title):
        db = 20 * np.log10(np.maximum(mag, ref * 10 ** (-DB_RANGE / 20)) / ref)
        extent = (0, mag.shape[1] * hop_ / sr, 0, sr / 2000)
        image = ax.imshow(db, origin="lower", aspect="auto", extent=extent, vmin=-DB_RANGE, vmax=0, cmap="magma")
        ax.set_title(title, fontsize=9, loc="left")
        ax.set_ylabel("kHz", fontsize=8)
        return image

    def waveform(ax, audio, sr, spans, title):
        t, peak = _envelope(audio, sr)
        ax.fill_between(t, -peak, peak, color="#3b6ea5", linewidth=0)
        for start, end in spans or ():
            ax.axvspan(start, end, color="#f5a623", alpha=0.3, linewidth=0)
        ax.set_xlim(0, audio.shape[1] / sr)
        ax.set_ylim(-1, 1)
        ax.set_title(title, fontsize=9, loc="left")

    db_image = spectrogram(axes[0, 0], mix_mag, mixture_sr, hop, "mixture: spectrogram (dB)")
    axes[0, 1].axis("off")
    axes[0, 1].text(0.5, 0.5, "masks: each stem's magnitude /\nthe sum of the stems' magnitudes",
                    ha="center", va="center", fontsize=9, color="#555", transform=axes[0, 1].transAxes)
    waveform(axes[0, 2], mixture, mixture_sr, None, "mixture: waveform")
    mask_image = None
    for row, stem in enumerate(stems, start=1):
        spectrogram(axes[row, 0], stem_mags[stem], stems_sr, stem_hop, f"{stem}: spectrogram (dB)")
        extent = (0, frames * stem_hop / stems_sr, 0, stems_sr / 2000)
        mask_image = axes[row, 1].imshow(masks[stem], origin="lower", aspect="auto", extent=extent,
                                         vmin=0, vmax=1, cmap="viridis")
        axes[row, 1].set_title(f"{stem}: mask", fontsize=9, loc="left")
        spans = None if activity is None else activity.get(stem, [])
        label = "waveform, activity shaded" if activity is not None else "waveform (no features table)"
        waveform(axes[row, 2], stems[stem], stems_sr, spans, f"{stem}: {label}")
    for ax in axes[-1]:
        ax.set_xlabel("s", fontsize=8)
    for ax in axes.flat:
        ax.tick_params(labelsize=7)
    fig.colorbar(db_image, ax=axes[:, 0], shrink=0.6, label="dB")
    if mask_image is not None:
        fig.colorbar(mask_image, ax=axes[1:, 1], shrink=0.6, label="mask")
    return _png(fig)


def _activity(activity: dict | None, track_id: str, label: str, stems: list[str]) -> dict[str, list] | None:
    """Each stem's activity segments (start_s, end_s) from the features rows, or ``None`` without a table."""
    if activity is None:
        return None
    return {stem: [(s["start_s"], s["end_s"]) for s in activity.get((track_id, label, stem), ())] for stem in stems}


def track_section(run: RunData, track_id: str, audio: AudioOptions, activity: dict | None = None) -> str:
    """One sampled track: per operator label, the figure and the players (``activity``: from
    :meth:`RunData.activity_rows`; ``None`` when the run has no features table)."""
    rows = run.rows_of(track_id)
    ok = [r for r in rows if r["status"] == "ok" and r["stem_uri"]]
    title = f'<h3 id="track-{_esc(track_id)}">{_esc(track_id)}</h3>'
    if not ok:
        causes = "; ".join(f"{r['label']}: {r['error_type']}" for r in rows if r["status"] == "error")
        return title + f'<p class="note">No stems for this track ({_esc(causes or "no ok rows")}).</p>'
    source_uri = ok[0]["source_uri"]
    parts = [title, f"<p>Source <code>{_esc(source_uri)}</code>.</p>"]
    try:
        mixture, mixture_sr = read_excerpt(source_uri, SPECTROGRAM_S)
    except Exception as exc:  # noqa: BLE001 - a moved or unreadable source must not stop the report
        return title + f'<p class="error">Cannot read the mixture {_esc(source_uri)}: {_esc(exc)}</p>'
    players = [_player("mixture", source_uri, mixture, mixture_sr, audio)]
    for label in sorted({r["label"] for r in ok}):
        label_rows = sorted((r for r in ok if r["label"] == label), key=lambda r: r["stem"])
        stems, sr = {}, None
        for r in label_rows:
            stems[r["stem"]], sr = read_excerpt(r["stem_uri"], SPECTROGRAM_S)
            players.append(_player(f"{label}/{r['stem']}", r["stem_uri"], stems[r["stem"]], sr, audio))
        shown = min(SPECTROGRAM_S, mixture.shape[1] / mixture_sr)
        caption = (f"{_esc(label)} ({_esc(label_rows[0]['operator'])}), first {shown:.0f} s: log-magnitude "
                   f"spectrograms in dB relative to the mixture's peak ({-DB_RANGE:.0f}..0), masks 0..1, and "
                   + ("waveforms with the stems' activity segments shaded." if activity is not None
                      else "waveforms (no features table: no activity segments)."))
        png = track_figure(mixture, mixture_sr, stems, sr, _activity(activity, track_id, label, list(stems)))
        parts.append(_figure(png, caption, f"spectrograms and masks of {track_id}, {label}"))
    parts.append(f'<div class="players">{"".join(players)}</div>')
    return "".join(parts)


def tracks_section(run: RunData, track_ids: list[str], audio: AudioOptions, activity: dict | None = None) -> str:
    """The sampled tracks' figures and players."""
    title = '<h2 id="tracks">Tracks</h2>'
    if not track_ids:
        return title + '<p class="note">No track has stems to show (every track failed or none ran).</p>'
    activity = activity if run.features_uri is not None else None
    return title + "".join(track_section(run, t, audio, activity) for t in track_ids)
