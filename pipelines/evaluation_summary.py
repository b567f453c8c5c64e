"""The summary of an evaluation table: its statistics, its tables (text and Markdown), and its
JSON record beside the table.

``sepflow evaluate`` prints :func:`summary_text` (or :func:`summary_markdown`) and writes the
record ``<output>/evaluation_summary/summary-<evaluation_id>.json`` (:func:`write_summary_record`;
:func:`read_summary_record` reads the latest). :func:`metric_stat` and :func:`format_db` are the
rule of every table of sepflow for a statistic over tracks and its figure.
"""
from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime

import fsspec
import numpy as np
import pyarrow as pa

from sepops.audio import write_bytes_atomic

from .io import join_uri
from .tables import EVALUATION_SUMMARY_DIR, STATUS_OK

__all__ = [
    "SUMMARY_COLUMNS",
    "earlier_summaries",
    "format_db",
    "metric_stat",
    "read_summary_record",
    "summarize",
    "summary_markdown",
    "summary_record",
    "summary_text",
    "summary_uri",
    "write_summary_record",
]

#: The evaluation table's columns :func:`summarize` reads.
SUMMARY_COLUMNS = ["label", "operator", "stem", "reference_stem", "is_oracle", "status", "sdr",
                   "sdr_frames_median", "sir", "sar", "si_sdr"]
#: Distinct error messages a summary record lists.
FIRST_ERRORS = 20


def summarize(table: pa.Table) -> list[dict]:
    """The summary of an evaluation table.

    Parameters
    ----------
    table : pyarrow.Table
        Rows of ``EVALUATION_SCHEMA`` (at least the columns used here).

    Returns
    -------
    list of dict
        Per (label, operator, stem) of the ok rows: ``tracks``, ``reference_stems`` (reference
        stem -> tracks matched to it), ``sdr_mean``, ``sdr_median``, ``sdr_frames_median`` (the
        median over tracks of each track's median over 1 s frames), ``sir_mean``, ``sar_mean``,
        ``si_sdr_mean`` (dB; non-finite values left out). Blind operators first, then oracles;
        each by label and stem.
    """
    columns = table.select(SUMMARY_COLUMNS).to_pydict()
    groups: dict[tuple, dict[str, list]] = {}
    for i, status in enumerate(columns["status"]):
        if status != STATUS_OK:
            continue
        key = (bool(columns["is_oracle"][i]), columns["label"][i], columns["operator"][i], columns["stem"][i])
        values = groups.setdefault(
            key, {m: [] for m in ("reference_stem", "sdr", "sdr_frames_median", "sir", "sar", "si_sdr")}
        )
        for m in values:
            values[m].append(columns[m][i])

    def stat(values, fn):
        return metric_stat(values, fn)

    summary = []
    for (is_oracle, label, operator, stem), v in sorted(groups.items()):
        # Best-assignment stems (ICA's source_1) may match different references per track.
        matched = dict(sorted(Counter(v["reference_stem"]).items()))
        summary.append({
            "label": label, "operator": operator, "stem": stem, "is_oracle": is_oracle, "tracks": len(v["sdr"]),
            "reference_stems": matched,
            "sdr_mean": stat(v["sdr"], np.mean), "sdr_median": stat(v["sdr"], np.median),
            "sdr_frames_median": stat(v["sdr_frames_median"], np.median),
            "sir_mean": stat(v["sir"], np.mean), "sar_mean": stat(v["sar"], np.mean),
            "si_sdr_mean": stat(v["si_sdr"], np.mean),
        })
    return summary


def metric_stat(values: Iterable[float | None], fn=np.mean) -> float | None:
    """A statistic over tracks of one metric, as every table of sepflow shows it: missing
    values (None, NaN) are left out, infinite ones stay in, and a result that is not finite
    is None, shown as "-" (:func:`format_db`).

    The ``mix`` oracle's SAR is the case: the mixture as its own estimate has no artifacts,
    so its SAR is unbounded, +inf on tracks where the projection leaves nothing and 140-150 dB
    of rounding noise on others; one infinite track makes the mean "-" rather than the mean of
    the others. ``sepflow report``'s table follows the same rule (pandas' mean skips NaN and
    keeps inf).
    """
    kept = np.asarray([v for v in values if v is not None and not np.isnan(v)], dtype=np.float64)
    if not kept.size:
        return None
    result = float(fn(kept))
    return result if np.isfinite(result) else None


def format_db(value: float | None) -> str:
    """A dB figure of a table: two decimals, or "-" where there is none (or it is not finite)."""
    return "-" if value is None or not np.isfinite(value) else f"{value:.2f}"


_SUMMARY_HEADER = ["label", "operator", "stem", "reference stem", "tracks", "SDR mean", "SDR median",
                   "SDR 1 s frames (median)", "SIR mean", "SAR mean", "SI-SDR mean"]
_TEXT_COLUMNS = 4


def _summary_cells(row: dict) -> list[str]:
    db = format_db
    label = f"{row['label']} (oracle)" if row["is_oracle"] and row["label"] != "mix" else row["label"]
    if row["label"] == "mix":
        label = "mix (mixture as estimate)"
    matched = row["reference_stems"]
    reference = next(iter(matched)) if len(matched) == 1 else ", ".join(f"{k} ({n})" for k, n in matched.items())
    return [label, row["operator"], row["stem"], reference, str(row["tracks"]), db(row["sdr_mean"]), db(row["sdr_median"]),
            db(row["sdr_frames_median"]), db(row["sir_mean"]), db(row["sar_mean"]), db(row["si_sdr_mean"])]


def summary_markdown(summary: list[dict]) -> str:
    """The summary as a Markdown table (dB; SDR/SIR/SAR are BSS Eval v3)."""
    lines = ["| " + " | ".join(_SUMMARY_HEADER) + " |",
             "|" + "---|" * _TEXT_COLUMNS + "---:|" * (len(_SUMMARY_HEADER) - _TEXT_COLUMNS)]
    lines += ["| " + " | ".join(_summary_cells(r)) + " |" for r in summary]
    return "\n".join(lines)


def summary_text(summary: list[dict]) -> str:
    """The summary as an aligned plain-text table."""
    rows = [_SUMMARY_HEADER] + [_summary_cells(r) for r in summary]
    widths = [max(len(r[i]) for r in rows) for i in range(len(_SUMMARY_HEADER))]
    return "\n".join(
        "  ".join(c.ljust(w) if i < _TEXT_COLUMNS else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths))) for r in rows
    )



# --- the record beside the table ------------------------------------------------------------
def summary_uri(output: str, evaluation_id: str) -> str:
    """Where an evaluation's record goes: beside the table, not in it (``evaluation/`` holds
    only Parquet, so it reads as a dataset)."""
    return join_uri(output, EVALUATION_SUMMARY_DIR, f"summary-{evaluation_id}.json")


def summary_record(evaluation_id: str, *, estimates: Sequence[str], references: str, oracles: Sequence[str],
                   beam_args: Sequence[str], rows: int, errors: Sequence[str], summary: list[dict]) -> dict:
    """The JSON record of an evaluation: what it scored, how, its counts, its first distinct
    errors and its :func:`summarize` table (``errors``: the error rows' messages)."""
    return {
        "evaluation_id": evaluation_id, "created_at": datetime.now(UTC).isoformat(), "estimates": list(estimates),
        "references": references, "oracles": list(oracles), "beam_args": list(beam_args),
        "rows": rows, "errors": len(errors), "first_errors": sorted(set(errors))[:FIRST_ERRORS],
        "summary": summary,
    }


def write_summary_record(output: str, record: dict) -> str:
    """Write ``record`` atomically to :func:`summary_uri`; return its URI."""
    uri = summary_uri(output, record["evaluation_id"])
    write_bytes_atomic(uri, json.dumps(record, indent=1, ensure_ascii=False).encode("utf-8"))
    return uri


def _summary_paths(output: str) -> tuple[fsspec.AbstractFileSystem, list[str]]:
    fs, path = fsspec.core.url_to_fs(join_uri(output, EVALUATION_SUMMARY_DIR))
    try:
        return fs, sorted(p for p in fs.ls(path, detail=False) if p.endswith(".json"))
    except FileNotFoundError:
        return fs, []


def earlier_summaries(output: str, keep: str) -> list[str]:
    """The records of ``output`` other than ``keep`` (paths on its file system), which go
    once the new one is written."""
    _, keep_path = fsspec.core.url_to_fs(keep)
    return [p for p in _summary_paths(output)[1] if p != keep_path]


def read_summary_record(output: str) -> dict | None:
    """The latest evaluation's record of ``output`` (ids sort by time), or ``None``."""
    fs, paths = _summary_paths(output)
    return json.loads(fs.cat_file(paths[-1])) if paths else None
