"""What a run of the catalog job writes beside its tables, under ``<output>/_sepflow/runs/<run_id>/``:
its metadata (and features) shards with their summaries, what each input matched, and the
summary the driver reads; and the step that publishes the shards.

The pipeline writes all of it (:class:`pipelines.transforms.WriteMetadata`); the driver reads
the summary and the input reports, then :func:`publish` moves the shards into
``<output>/metadata/`` and ``<output>/features/`` (:mod:`pipelines.tables`).
"""
from __future__ import annotations

import json
import os
import re

import fsspec

from sepops.audio import write_bytes_atomic

from .driver import job_dir, remove_files
from .io import join_uri
from .tables import (
    FEATURES_DIR,
    METADATA_DIR,
    STATUS_ERROR,
    STATUS_OK,
    STEM_FEATURES_SCHEMA,
    STEM_METADATA_SCHEMA,
    publish_shards,
    track_status,
    write_shard_table,
)

__all__ = [
    "SUMMARY_ERRORS",
    "empty_summary",
    "merge_summaries",
    "publish",
    "read_input_reports",
    "read_summary",
    "remove_orphaned_temp_files",
    "write_input_report",
    "write_shard",
    "write_summary",
]


#: Errors a summary lists by name (it counts them all).
SUMMARY_ERRORS = 100
#: The order of the rows in a shard of the metadata and features tables.
_ORDER = [("track_id", "ascending"), ("label", "ascending"), ("stem", "ascending")]


def empty_summary() -> dict:
    return {
        "units_ok": 0, "units_error": 0, "units_skipped": 0, "tracks_ok": 0, "tracks_error": 0,
        "tracks_skipped": 0, "stems_written": 0, "audio_s": 0.0, "rows": 0, "shards": 0, "errors_total": 0,
        "errors": [],
    }


def merge_summaries(a: dict, b: dict) -> dict:
    """Two summaries (of disjoint sets of tracks) as one; the errors listed stay bounded."""
    out = {k: a[k] + b[k] for k in a if k != "errors"}
    out["errors"] = sorted(a["errors"] + b["errors"], key=lambda e: (e["track_id"], e["label"]))[:SUMMARY_ERRORS]
    return out


def write_shard(output: str, run_id: str, shard: int, results: list[dict]) -> dict:
    """Write the rows of ``results`` (unit results of ``pipelines.track.TrackWork``,
    all tracks of one shard) as one Parquet file, atomically, staged under the run; return
    the shard's summary. A unit that a runner ran twice (a retry) counts once, its last result."""
    units = {(r["track_id"], r["label"]): r for r in results}
    rows = [row for r in units.values() for row in r["rows"]]
    staged = job_dir(output, run_id)
    write_shard_table(join_uri(staged, METADATA_DIR), shard, rows, STEM_METADATA_SCHEMA, _ORDER)
    features = [row for r in units.values() for row in r.get("features") or ()]
    if features:  # the features table beside it (runs that compute no feature have none)
        write_shard_table(join_uri(staged, FEATURES_DIR), shard, features, STEM_FEATURES_SCHEMA, _ORDER)
    summary = empty_summary()
    by_track: dict[str, set[str]] = {}
    for (track_id, _), r in units.items():
        summary["units_" + r["status"]] += 1
        by_track.setdefault(track_id, set()).add(r["status"])
    for statuses in by_track.values():
        summary["tracks_" + track_status(statuses)] += 1
    durations: dict[str, float] = {}
    for row in rows:
        if row["status"] == STATUS_OK:
            summary["stems_written"] += 1
            if row["duration_s"] is not None:
                durations[row["track_id"]] = row["duration_s"]
        elif row["status"] == STATUS_ERROR:
            summary["errors_total"] += 1
            summary["errors"].append({k: row[k] or "" for k in ("track_id", "label", "error_type", "error_message")})
    summary["errors"] = sorted(summary["errors"], key=lambda e: (e["track_id"], e["label"]))[:SUMMARY_ERRORS]
    summary["audio_s"] = float(sum(durations.values()))
    summary["rows"] = len(rows)
    summary["shards"] = 1
    return summary


def write_input_report(output: str, run_id: str, index: int, shard: int, report: dict) -> None:
    """What one shard of one input's listing matched (``matched``) or why not (``error``)."""
    uri = join_uri(job_dir(output, run_id), "inputs", f"{index:05d}-{shard:05d}.json")
    write_bytes_atomic(uri, json.dumps(report).encode("utf-8"))


def read_input_reports(output: str, run_id: str) -> dict[int, dict]:
    """Per input (by position): ``spec``, ``matched`` (files, summed over its shards) and the
    ``errors`` met listing it. One listing of the run's reports: a few per input."""
    fs, path = fsspec.core.url_to_fs(join_uri(job_dir(output, run_id), "inputs"))
    fs.invalidate_cache()
    try:
        paths = sorted(fs.ls(path, detail=False))
    except FileNotFoundError:
        return {}
    out: dict[int, dict] = {}
    for p in paths:
        report = json.loads(fs.cat_file(p))
        entry = out.setdefault(int(p.rsplit("/", 1)[-1].split("-")[0]), {"spec": report["spec"], "matched": 0, "errors": []})
        entry["matched"] += report["matched"]
        if report["error"] and report["error"] not in entry["errors"]:
            entry["errors"].append(report["error"])
    return out


def write_summary(output: str, run_id: str, summary: dict) -> None:
    write_bytes_atomic(join_uri(job_dir(output, run_id), "summary.json"), json.dumps(summary).encode("utf-8"))


def read_summary(output: str, run_id: str) -> dict | None:
    """The summary the run's pipeline wrote, or ``None`` when it wrote none."""
    fs, path = fsspec.core.url_to_fs(join_uri(job_dir(output, run_id), "summary.json"))
    try:
        return json.loads(fs.cat_file(path))
    except FileNotFoundError:
        return None


def publish(output: str, run_id: str) -> int:
    """Move the run's staged shards into ``<output>/metadata/`` (and ``<output>/features/``)
    and remove earlier runs' files there: the driver's only metadata work, listings of the
    shards (bounded by ``job.metadata_shards``), never of the catalog. Returns the number of
    metadata files published."""
    published = _publish_table(output, run_id, METADATA_DIR, "stems")
    _publish_table(output, run_id, FEATURES_DIR, "features", create=False)
    return published


def _publish_table(output: str, run_id: str, table_dir: str, prefix: str, create: bool = True) -> int:
    """One table's staged shards -> ``<output>/<table_dir>/<prefix>-<run_id>-part-<shard>.parquet``."""
    published, earlier = publish_shards(
        join_uri(job_dir(output, run_id), table_dir), join_uri(output, table_dir), f"{prefix}-{run_id}", create=create
    )
    remove_files(output, earlier)  # new files first, then the old ones go: readers never lack a table
    return len(published)


# sepops.audio.write_bytes_atomic writes local files as ".<name>.<uuid hex>.tmp" and renames.
_TEMP_FILE = re.compile(r"^\..+\.[0-9a-f]{32}\.tmp$")


def remove_orphaned_temp_files(output: str) -> int:
    """Delete temporary files that killed writers left in a local output folder (a worker
    killed mid-write, whose work the runner redid elsewhere, or a killed earlier run).

    The last step of the pipeline, on a worker, once every unit is written (the driver never
    walks the output). Object stores never hold such files (uploads are single requests).
    Assumes one run per output at a time, as the skip/overwrite logic does anyway. Returns
    how many were removed.
    """
    if "://" in output or not os.path.isdir(output):
        return 0
    removed = 0
    for folder, _, names in os.walk(output):
        for name in names:
            if _TEMP_FILE.match(name):
                os.remove(os.path.join(folder, name))
                removed += 1
    return removed
