"""The sections of the ``sepflow report`` page: job summary, errors, evaluation and the sampled
tracks (one collapsible section per track, a heading per operator above its figure)."""
from __future__ import annotations

import base64
import io
import os
import urllib.parse
from collections import Counter
from dataclasses import dataclass

import fsspec
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from .evaluation_summary import format_db, metric_stat
from .report_data import RunData, read_excerpt
from .report_figures import DB_RANGE, sdr_box_plot, track_figure
from .report_html import (
    display_text,
    display_uri,
    esc,
    figure,
    operator_anchor,
    table,
    track_anchor,
)
from .tables import STATUS_ERROR, STATUS_OK, STATUS_SKIPPED, track_status

#: Error rows listed on the page; the total is always given.
MAX_ERRORS_LISTED = 200
#: Seconds of each sampled track that its figures show (bounds the report's time and size).
SPECTROGRAM_S = 30.0
METRICS = (("sdr", "SDR"), ("sir", "SIR"), ("sar", "SAR"), ("si_sdr", "SI-SDR"))


# --- summary and errors ------------------------------------------------------------------------
def _counts_from_metadata(metadata: pa.Table) -> dict:
    """Track counts when there is no run record, by the run summary's rule (``track_status``)."""
    statuses: dict[str, set[str]] = {}
    for track_id, status in zip(metadata["track_id"].to_pylist(), metadata["status"].to_pylist()):
        statuses.setdefault(track_id, set()).add(status)
    tracks = Counter(track_status(s) for s in statuses.values())
    ok = metadata.filter(pc.equal(metadata["status"], STATUS_OK))
    durations = dict(zip(ok["track_id"].to_pylist(), ok["duration_s"].to_pylist()))
    return {
        "tracks_ok": tracks[STATUS_OK],
        "tracks_error": tracks[STATUS_ERROR],
        "tracks_skipped": tracks[STATUS_SKIPPED],
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
        ("real_time", "speed", f"{audio_s / wall_s:.1f}× real time" if wall_s and audio_s else "- (no audio separated)"),
        # The runner as the user chose it (DirectRunner, 2 workers), not Beam's class for it.
        ("runner", "runner", summary.get("runner_chosen") or summary.get("runner", "-")),
        ("operators", "operators", ", ".join(labels) or "-"),
        ("inputs", "inputs", ", ".join(display_uri(i) for i in record.get("inputs", [])) or "-"),
        ("sepflow_version", "sepflow version", record.get("sepflow_version", "-")),
    ]
    body = "".join(f'<tr data-key="{key}"><th>{esc(name)}</th><td>{esc(value)}</td></tr>' for key, name, value in rows)
    source = "the run record" if run.record else "the metadata table (no run record found: counted from its rows)"
    return f'<h2 id="summary">Job summary</h2><table class="kv">{body}</table><p class="note">From {source}.</p>'


def errors_section(metadata: pa.Table) -> str:
    """The metadata's error rows, the first ``MAX_ERRORS_LISTED`` by track and label."""
    errors = metadata.filter(pc.equal(metadata["status"], STATUS_ERROR))
    title = '<h2 id="errors">Errors</h2>'
    if not errors.num_rows:
        return title + '<p data-errors-total="0">No track failed.</p>'
    shown = errors.sort_by([("track_id", "ascending"), ("label", "ascending")]).slice(0, MAX_ERRORS_LISTED).to_pylist()
    table_html = table(
        ["track", "operator", "error", "message"],
        [[esc(r["track_id"]), esc(r["label"]), esc(r["error_type"]), esc(display_text(r["error_message"]))]
         for r in shown],
    )
    total = errors.num_rows
    count = f"{total} error rows" + (f", the first {len(shown)} listed" if len(shown) < total else "")
    return f'{title}<p data-errors-total="{total}">{count}; each has its cause in dead_letter/.</p>{table_html}'


# --- evaluation ---------------------------------------------------------------------------------
def sdr_table(evaluation: pa.Table) -> list[dict]:
    """Mean and median of each metric (``<metric>_mean``, ``<metric>_median``; None where not
    finite, :func:`metric_stat`) and the ``tracks`` per (label, operator, stem, is_oracle) of
    the ok rows; blind operators first, then oracles, each by label and stem."""
    columns = evaluation.to_pydict()
    operators = columns.get("operator", [None] * evaluation.num_rows)  # tables of old evaluations lack it
    groups: dict[tuple, list[int]] = {}
    for i, status in enumerate(columns["status"]):
        if status == STATUS_OK:
            key = (columns["is_oracle"][i], columns["label"][i], columns["stem"][i], operators[i])
            groups.setdefault(key, []).append(i)
    rows = []
    for (is_oracle, label, stem, op), index in sorted(groups.items(), key=lambda kv: _nulls_last(kv[0])):
        row = {"label": label, "stem": stem, "is_oracle": is_oracle, "operator": op,
               "tracks": len({columns["track_id"][i] for i in index} - {None})}
        for m, _ in METRICS:
            values = [columns[m][i] for i in index]
            row[f"{m}_mean"], row[f"{m}_median"] = metric_stat(values, np.mean), metric_stat(values, np.median)
        rows.append(row)
    return rows


def _nulls_last(key: tuple) -> tuple:
    return tuple((v is None, v if v is not None else "") for v in key)


def evaluation_section(evaluation: pa.Table | None, evaluation_uri: str | None) -> str:
    """The SDR table and box plot, or a note saying how to get them."""
    title = '<h2 id="evaluation">Evaluation</h2>'
    if evaluation is None:
        return title + '<p class="note" id="no-evaluation">no evaluation: run sepflow evaluate</p>'
    failed = sum(1 for status in evaluation["status"].to_pylist() if status != STATUS_OK)
    if failed == evaluation.num_rows:
        return title + f'<p class="error">All {failed} evaluation rows failed; see error_message in the table.</p>'
    headers = ["label", "stem", "tracks"] + [f"{name} {s}" for _, name in METRICS for s in ("mean", "median")]
    rows, classes = [], []
    for r in sdr_table(evaluation):
        stem = esc(r["stem"]) + (" <em>(oracle)</em>" if r["is_oracle"] else "")
        rows.append([esc(r["label"]), stem, str(r["tracks"])]
                    + [format_db(r[f"{m}_{s}"]) for m, _ in METRICS for s in ("mean", "median")])
        classes.append("oracle" if r["is_oracle"] else "")
    table_html = table(headers, rows, numeric=set(range(2, len(headers))), row_classes=classes)
    note = f" {failed} rows failed to evaluate and are left out." if failed else ""
    caption = "SDR across tracks per operator label and stem (box: quartiles, line: median, triangle: mean)."
    tracks = len(set(evaluation["track_id"].to_pylist()) - {None})
    return (
        f"{title}<p>From <code>{esc(display_uri(evaluation_uri))}</code>: BSS Eval SDR, SIR, SAR and SI-SDR in dB "
        f"over {tracks} tracks; oracle rows (scored with the true stems) in grey.{note}</p>"
        + table_html + figure(sdr_box_plot(evaluation), caption, "box plot of SDR per label and stem")
    )


# --- audio players -------------------------------------------------------------------------------
def _is_local(uri: str) -> bool:
    from sepops.audio import is_local

    return is_local(fsspec.core.url_to_fs(uri)[0])


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


def player(name: str, uri: str, audio: np.ndarray, sr: int, options: AudioOptions) -> str:
    """An <audio> player: a relative link to the file, or an inline FLAC excerpt."""
    if options.links(uri):
        src, note = _relative_link(uri, options.report_uri), ""
    else:
        src = _flac_data_uri(audio[:, : int(options.excerpt_s * sr)], sr)
        note = f" (first {min(options.excerpt_s, audio.shape[1] / sr):.0f} s)"
    return (f'<figure><figcaption>{esc(name)}{note}</figcaption>'
            f'<audio controls preload="metadata" src="{esc(src)}"></audio></figure>')


# --- sampled tracks -----------------------------------------------------------------------------
def _activity(activity: dict | None, track_id: str, label: str, stems: list[str]) -> dict[str, list] | None:
    """Each stem's activity segments (start_s, end_s) from the features rows, or ``None`` without a table."""
    if activity is None:
        return None
    return {stem: [(s["start_s"], s["end_s"]) for s in activity.get((track_id, label, stem), ())] for stem in stems}


def operator_heading(track_id: str, label: str, operator: str) -> str:
    """The heading above an operator's figure: its label, and its operator when that differs."""
    kind = f' <span class="op">operator {esc(operator)}</span>' if operator and operator != label else ""
    return f'<h4 id="{esc(operator_anchor(track_id, label))}">{esc(label)}{kind}</h4>'


def operator_section(track_id: str, label_rows: list[dict], mixture, mixture_sr: int, audio: AudioOptions,
                     activity: dict | None) -> str:
    """One operator (label) of a track: a heading naming it, its figure, its stems' players."""
    label, operator = label_rows[0]["label"], label_rows[0]["operator"]
    stems, sr, players = {}, None, []
    for r in label_rows:
        stems[r["stem"]], sr = read_excerpt(r["stem_uri"], SPECTROGRAM_S)
        players.append(player(f"{label}/{r['stem']}", r["stem_uri"], stems[r["stem"]], sr, audio))
    shown = min(SPECTROGRAM_S, mixture.shape[1] / mixture_sr)
    caption = (f"{esc(label)} ({esc(operator)}), first {shown:.0f} s: log-magnitude spectrograms on a log "
               f"frequency axis (Hz) in dB relative to the mixture's peak ({-DB_RANGE:.0f}..0), masks 0..1, and "
               + ("waveforms with the stems' activity segments shaded." if activity is not None
                  else "waveforms (no features table: no activity segments)."))
    png = track_figure(mixture, mixture_sr, stems, sr, _activity(activity, track_id, label, list(stems)))
    return (f'<section class="operator" data-label="{esc(label)}">{operator_heading(track_id, label, operator)}'
            + figure(png, caption, f"spectrograms and masks of {track_id}, {label}", ' data-frequency-axis="log"')
            + f'<div class="players">{"".join(players)}</div></section>')


@dataclass
class RenderedTrack:
    """One sampled track's section: its HTML and the labels that got a heading in it."""

    track_id: str
    html: str
    labels: list[str]


def _collapsible(track_id: str, body: str, labels: list[str] = ()) -> RenderedTrack:
    summary = f'<summary><h3 id="{esc(track_anchor(track_id))}">{esc(track_id)}</h3></summary>'
    return RenderedTrack(track_id, f'<details class="track" open data-track="{esc(track_id)}">{summary}{body}</details>',
                         list(labels))


def render_track(run: RunData, track_id: str, audio: AudioOptions, activity: dict | None = None) -> RenderedTrack:
    """One sampled track, collapsible: its source and mixture player, then per operator label
    a heading, the figure and the players (``activity``: from :meth:`RunData.activity_rows`;
    ``None`` when the run has no features table)."""
    rows = run.rows_of(track_id)
    ok = [r for r in rows if r["status"] == STATUS_OK and r["stem_uri"]]
    if not ok:
        causes = "; ".join(f"{r['label']}: {r['error_type']}" for r in rows if r["status"] == STATUS_ERROR)
        return _collapsible(track_id, f'<p class="note">No stems for this track ({esc(causes or "no ok rows")}).</p>')
    source_uri = ok[0]["source_uri"]
    try:
        mixture, mixture_sr = read_excerpt(source_uri, SPECTROGRAM_S)
    except Exception as exc:  # noqa: BLE001 - a moved or unreadable source must not stop the report
        message = f"Cannot read the mixture {display_uri(source_uri)}: {display_text(str(exc))}"
        return _collapsible(track_id, f'<p class="error">{esc(message)}</p>')
    parts = [f"<p>Source <code>{esc(display_uri(source_uri))}</code>.</p>",
             f'<div class="players">{player("mixture", source_uri, mixture, mixture_sr, audio)}</div>']
    labels = sorted({r["label"] for r in ok})
    for label in labels:
        label_rows = sorted((r for r in ok if r["label"] == label), key=lambda r: r["stem"])
        parts.append(operator_section(track_id, label_rows, mixture, mixture_sr, audio, activity))
    return _collapsible(track_id, "".join(parts), labels)


def track_section(run: RunData, track_id: str, audio: AudioOptions, activity: dict | None = None) -> str:
    """The HTML of :func:`render_track`."""
    return render_track(run, track_id, audio, activity).html


def render_tracks(run: RunData, track_ids: list[str], audio: AudioOptions,
                  activity: dict | None = None) -> list[RenderedTrack]:
    """:func:`render_track` of each track (no activity segments when the run has no features table)."""
    activity = activity if run.features_uri is not None else None
    return [render_track(run, t, audio, activity) for t in track_ids]


def tracks_section(run: RunData, track_ids: list[str], audio: AudioOptions, activity: dict | None = None,
                   rendered: list[RenderedTrack] | None = None) -> str:
    """The sampled tracks' figures and players (``rendered``: their :func:`render_tracks`, when done)."""
    title = '<h2 id="tracks">Tracks</h2>'
    if not track_ids:
        return title + '<p class="note">No track has stems to show (every track failed or none ran).</p>'
    rendered = render_tracks(run, track_ids, audio, activity) if rendered is None else rendered
    return title + "".join(track.html for track in rendered)
