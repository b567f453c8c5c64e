"""The metadata table: one row per (track, operator, stem), or one error row per (track, operator).

Workers write one small Parquet *part* per (track, operator) to
``<output>/_sepflow/parts/<label>/<track_id>.parquet`` after that unit's stems are written.
The part is the unit's completeness marker: written last, atomically, under a name derived
from the unit alone, so a re-run or a restarted run overwrites it instead of adding rows.

The parts are the log. The published table is written by the pipeline itself: every unit's
rows go to one of ``job.metadata_shards`` shard files by their track id (:func:`write_shard`,
staged under ``<output>/_sepflow/runs/<run_id>/``), with a small summary beside them; after
the pipeline the driver only moves the shards to
``<output>/metadata/stems-<run_id>-part-<shard>.parquet`` and removes earlier runs' files
(:func:`publish`), so ``<output>/metadata/`` reads as one table without duplicates
(pyarrow.dataset, pandas, DuckDB ``read_parquet('<output>/metadata/*.parquet')``), and the
driver never reads a part.
"""
from __future__ import annotations

import io
import json
import logging
import zlib
from dataclasses import dataclass, fields
from datetime import UTC, datetime

import fsspec
import pyarrow as pa
import pyarrow.parquet as pq

from sepops.audio import write_bytes_atomic

from .io import join_uri

__all__ = [
    "STATUS_ERROR",
    "STATUS_OK",
    "STATUS_SKIPPED",
    "STEM_METADATA_SCHEMA",
    "StemRecord",
    "dead_letter_uri",
    "empty_summary",
    "merge_summaries",
    "parquet_dataset",
    "part_uri",
    "publish",
    "publish_shards",
    "read_input_reports",
    "read_metadata",
    "read_parquet_part",
    "read_part",
    "read_summary",
    "read_table_folder",
    "record_dict",
    "records_to_table",
    "schema_field",
    "shard_of",
    "table_bytes",
    "write_input_report",
    "write_part",
    "write_progress",
    "write_shard",
    "write_summary",
]

_LOG = logging.getLogger(__name__)

STATUS_OK = "ok"
STATUS_ERROR = "error"
STATUS_SKIPPED = "skipped"

PARTS_DIR = "_sepflow/parts"
METADATA_DIR = "metadata"
DEAD_LETTER_DIR = "dead_letter"


def schema_field(name: str, type_: pa.DataType, doc: str, nullable: bool = True) -> pa.Field:
    """A column of a published table, with its meaning as the field's ``description``."""
    return pa.field(name, type_, nullable=nullable, metadata={"description": doc})


#: The schema of ``<output>/metadata/`` (documented in docs/pipeline.md).
STEM_METADATA_SCHEMA = pa.schema(
    [
        schema_field("track_id", pa.string(), "input path relative to the input root, no extension, made safe", False),
        schema_field("source_uri", pa.string(), "URI of the input file", False),
        schema_field("operator", pa.string(), "registered sepops operator name", False),
        schema_field("label", pa.string(), "the operator's label in the job (its stems' folder in multi-operator jobs)", False),
        schema_field("operator_params", pa.string(), "all operator parameters, JSON", False),
        schema_field("stem", pa.string(), "stem name; null on error rows"),
        schema_field("stem_uri", pa.string(), "URI of the stem file; null on error rows"),
        schema_field("sample_rate", pa.int32(), "stem sample rate, Hz"),
        schema_field("channels", pa.int32(), "stem channel count"),
        schema_field("duration_s", pa.float64(), "stem duration, seconds"),
        schema_field("stem_rms_db", pa.float64(), "RMS level, dBFS, floored at -120"),
        schema_field("stem_peak_db", pa.float64(), "peak level, dBFS, floored at -120"),
        schema_field("energy_share", pa.float64(), "stem energy / energy of all this operator's stems; null if all silent"),
        schema_field("status", pa.string(), "ok | error | skipped", False),
        schema_field("error_type", pa.string(), "short cause on error rows (empty, unsupported, too_long, ...)"),
        schema_field("error_message", pa.string(), "human-readable cause on error rows"),
        schema_field("warning", pa.string(), "on ok rows: what looks wrong with the stem (silent while the others are not)"),
        schema_field("processing_s", pa.float64(), "seconds to separate and write this (track, operator)"),
        schema_field("config_digest", pa.string(), "fingerprint of operator + params + audio settings", False),
        schema_field("run_id", pa.string(), "the run that wrote the row", False),
        schema_field("sepflow_version", pa.string(), "sepflow version that wrote the row", False),
        schema_field("created_at", pa.timestamp("ms", tz="UTC"), "when the row was written", False),
        # The source file's own tags and stream facts (sepops.tags): null where it has none.
        schema_field("source_artist", pa.string(), "artist tag of the source file"),
        schema_field("source_title", pa.string(), "title tag of the source file"),
        schema_field("source_album", pa.string(), "album tag of the source file"),
        schema_field("source_track_number", pa.int32(), "track number tag of the source file"),
        schema_field("source_isrc", pa.string(), "ISRC tag of the source file, 12 characters, no dashes"),
        schema_field("source_duration_s", pa.float64(), "duration of the source file from its header, seconds"),
        schema_field("source_codec", pa.string(), "codec of the source file (aac, alac, mp3, flac, opus, vorbis, pcm, wma ...)"),
        schema_field("source_bit_rate", pa.int64(), "bit rate of the source file from its header, bits per second"),
        schema_field("track_id_collision", pa.string(),
               "the id the input's name gave when other inputs gave it too (case-insensitively); "
               "track_id then ends in a suffix from the URI"),
    ]
)


@dataclass
class StemRecord:
    """One metadata row (field order and types: ``STEM_METADATA_SCHEMA``)."""

    track_id: str
    source_uri: str
    operator: str
    label: str
    operator_params: str
    status: str
    config_digest: str
    run_id: str
    sepflow_version: str
    created_at: datetime
    stem: str | None = None
    stem_uri: str | None = None
    sample_rate: int | None = None
    channels: int | None = None
    duration_s: float | None = None
    stem_rms_db: float | None = None
    stem_peak_db: float | None = None
    energy_share: float | None = None
    error_type: str | None = None
    error_message: str | None = None
    warning: str | None = None
    processing_s: float | None = None
    source_artist: str | None = None
    source_title: str | None = None
    source_album: str | None = None
    source_track_number: int | None = None
    source_isrc: str | None = None
    source_duration_s: float | None = None
    source_codec: str | None = None
    source_bit_rate: int | None = None
    track_id_collision: str | None = None


assert {f.name for f in fields(StemRecord)} == set(STEM_METADATA_SCHEMA.names)


def utc_now() -> datetime:
    return datetime.now(UTC)


def part_uri(output: str, label: str, track_id: str) -> str:
    return join_uri(output, PARTS_DIR, label, f"{track_id}.parquet")


def dead_letter_uri(output: str, label: str, track_id: str) -> str:
    return join_uri(output, DEAD_LETTER_DIR, label, f"{track_id}.json")


def record_dict(record: StemRecord) -> dict:
    """A row as a dict (``dataclasses.asdict`` deep-copies every value: 10x slower)."""
    return dict(record.__dict__)


def records_to_table(records: list[StemRecord]) -> pa.Table:
    return pa.Table.from_pylist([record_dict(r) for r in records], schema=STEM_METADATA_SCHEMA)


def table_bytes(table: pa.Table, compression: str = "zstd") -> bytes:
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink, compression=compression)
    return sink.getvalue().to_pybytes()


def write_part(uri: str, records: list[StemRecord]) -> None:
    """Write one unit's rows atomically (readers see the old part or the new one, never half).
    Uncompressed: a part holds a few rows, which compression does not shrink, and zstd
    doubled the time of this per-unit write."""
    write_bytes_atomic(uri, table_bytes(records_to_table(records), compression="none"))


def read_part(uri: str) -> pa.Table | None:
    """The unit's rows, or ``None`` when there is no (readable) part."""
    return read_parquet_part(uri, STEM_METADATA_SCHEMA)


def read_parquet_part(uri: str, schema: pa.Schema) -> pa.Table | None:
    """One unit's Parquet part read as ``schema`` (columns it lacks are null), or ``None``
    when there is none or it is damaged (the unit is then redone)."""
    fs, path = fsspec.core.url_to_fs(uri)
    try:
        data = fs.cat_file(path)
    except FileNotFoundError:
        return None
    try:
        return pq.read_table(io.BytesIO(data), schema=schema)
    except Exception:  # noqa: BLE001 - a damaged part means "not complete": redo the unit
        _LOG.warning("unreadable part %s; the unit will be redone", uri)
        return None


#: Where a run stages its metadata shards and writes its summary, under the output.
RUNS_DIR = "_sepflow/runs"
#: Errors a summary lists by name (it counts them all).
SUMMARY_ERRORS = 100


def run_dir(output: str, run_id: str) -> str:
    return join_uri(output, RUNS_DIR, run_id)


def shard_of(track_id: str, shards: int) -> int:
    """The metadata shard of a track (every unit of a track in one shard, stable across runs)."""
    return zlib.crc32(track_id.encode("utf-8")) % max(1, shards)


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
    """Write the rows of ``results`` (unit results of ``pipelines.transforms.SeparateTrackFn``,
    all tracks of one shard) as one Parquet file, atomically, staged under the run; return
    the shard's summary. A unit that a runner ran twice (a retry) counts once, its last result."""
    from .features import FEATURES_DIR, features_table

    units = {(r["track_id"], r["label"]): r for r in results}
    rows = [row for r in units.values() for row in r["rows"]]
    order = [("track_id", "ascending"), ("label", "ascending"), ("stem", "ascending")]
    table = pa.Table.from_pylist(rows, schema=STEM_METADATA_SCHEMA).sort_by(order)
    write_bytes_atomic(join_uri(run_dir(output, run_id), METADATA_DIR, f"part-{shard:05d}.parquet"), table_bytes(table))
    features = [row for r in units.values() for row in r.get("features") or ()]
    if features:  # the features table beside it (runs that compute no feature have none)
        write_bytes_atomic(
            join_uri(run_dir(output, run_id), FEATURES_DIR, f"part-{shard:05d}.parquet"),
            table_bytes(features_table(features).sort_by(order)),
        )
    summary = empty_summary()
    by_track: dict[str, set[str]] = {}
    for (track_id, _), r in units.items():
        summary["units_" + r["status"]] += 1
        by_track.setdefault(track_id, set()).add(r["status"])
    for statuses in by_track.values():
        kind = "error" if STATUS_ERROR in statuses else "skipped" if statuses == {STATUS_SKIPPED} else "ok"
        summary["tracks_" + kind] += 1
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
    uri = join_uri(run_dir(output, run_id), "inputs", f"{index:05d}-{shard:05d}.json")
    write_bytes_atomic(uri, json.dumps(report).encode("utf-8"))


def read_input_reports(output: str, run_id: str) -> dict[int, dict]:
    """Per input (by position): ``spec``, ``matched`` (files, summed over its shards) and the
    ``errors`` met listing it. One listing of the run's reports: a few per input."""
    fs, path = fsspec.core.url_to_fs(join_uri(run_dir(output, run_id), "inputs"))
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


def write_progress(output: str, run_id: str, writer: str, counts: dict[str, int]) -> None:
    """One worker's running counts of units done (``ok``, ``error``, ``skipped``)."""
    uri = join_uri(run_dir(output, run_id), "progress", f"{writer}.json")
    write_bytes_atomic(uri, json.dumps(counts).encode("utf-8"))


def write_summary(output: str, run_id: str, summary: dict) -> None:
    write_bytes_atomic(join_uri(run_dir(output, run_id), "summary.json"), json.dumps(summary).encode("utf-8"))


def read_summary(output: str, run_id: str) -> dict | None:
    """The summary the run's pipeline wrote, or ``None`` when it wrote none."""
    fs, path = fsspec.core.url_to_fs(join_uri(run_dir(output, run_id), "summary.json"))
    try:
        return json.loads(fs.cat_file(path))
    except FileNotFoundError:
        return None


def publish(output: str, run_id: str) -> int:
    """Move the run's staged shards into ``<output>/metadata/`` (and ``<output>/features/``)
    and remove earlier runs' files there: the driver's only metadata work, listings of the
    shards (bounded by ``job.metadata_shards``), never of the catalog. Returns the number of
    metadata files published."""
    from .features import FEATURES_DIR

    published = _publish_table(output, run_id, METADATA_DIR, "stems")
    _publish_table(output, run_id, FEATURES_DIR, "features", create=False)
    return published


def _publish_table(output: str, run_id: str, table_dir: str, prefix: str, create: bool = True) -> int:
    """One table's staged shards -> ``<output>/<table_dir>/<prefix>-<run_id>-part-<shard>.parquet``."""
    published, earlier = publish_shards(
        join_uri(run_dir(output, run_id), table_dir), join_uri(output, table_dir), f"{prefix}-{run_id}", create=create
    )
    # New files first, then the old ones go: readers never lack a table.
    fs, _ = fsspec.core.url_to_fs(output)
    for path in earlier:
        fs.rm_file(path)
    return len(published)


def publish_shards(
    staged_dir: str, target_dir: str, prefix: str, *, create: bool = True, old_suffixes: tuple[str, ...] = (".parquet",)
) -> tuple[list[str], list[str]]:
    """Move the Parquet shards of ``staged_dir`` into ``target_dir`` as ``<prefix>-<name>``.

    Returns
    -------
    published, earlier : list of str
        The moved files, and the files with ``old_suffixes`` that were in ``target_dir``
        before: the caller removes those once the new table is complete, so readers never
        lack one. Without shards or earlier files, and without ``create``, no folder is made.
    """
    fs, staged_path = fsspec.core.url_to_fs(staged_dir)
    _, target_path = fsspec.core.url_to_fs(target_dir)
    fs.invalidate_cache()
    try:
        staged = sorted(p for p in fs.ls(staged_path, detail=False) if p.endswith(".parquet"))
    except FileNotFoundError:
        staged = []
    try:
        earlier = [p for p in fs.ls(target_path, detail=False) if p.endswith(old_suffixes)]
    except FileNotFoundError:
        earlier = []
    if not (staged or earlier or create):  # a job without features leaves no empty folder
        return [], []
    fs.makedirs(target_path, exist_ok=True)
    published = []
    for path in staged:
        target = f"{target_path}/{prefix}-{path.rsplit('/', 1)[-1]}"
        fs.mv(path, target)
        published.append(target)
    return published, [p for p in earlier if p not in published]


def parquet_dataset(uri: str, schema: pa.Schema | None = None):
    """The Parquet files directly in folder ``uri`` (any fsspec URI) as one
    ``pyarrow.dataset.Dataset``, or ``None`` when the folder does not exist or holds none."""
    import pyarrow.dataset as ds
    from pyarrow.fs import FSSpecHandler, PyFileSystem

    fs, path = fsspec.core.url_to_fs(uri)
    fs.invalidate_cache()
    try:
        paths = sorted(p for p in fs.ls(path, detail=False) if p.endswith(".parquet"))
    except FileNotFoundError:
        return None
    if not paths:
        return None
    return ds.dataset(paths, format="parquet", schema=schema, filesystem=PyFileSystem(FSSpecHandler(fs)))


def read_table_folder(uri: str, schema: pa.Schema | None = None) -> pa.Table:
    """A published table (a folder of Parquet shards) as one table, as a downstream reader
    would read it; empty when the folder holds no shard.

    Raises
    ------
    FileNotFoundError
        When the folder does not exist.
    """
    dataset = parquet_dataset(uri, schema)
    if dataset is not None:
        return dataset.to_table()
    fs, path = fsspec.core.url_to_fs(uri)
    if not fs.isdir(path):
        raise FileNotFoundError(f"no published table at {uri}")
    return schema.empty_table() if schema is not None else pa.table({})


def read_metadata(output: str) -> pa.Table:
    """The published metadata of ``output`` as one table (as a downstream reader would)."""
    return read_table_folder(join_uri(output, METADATA_DIR))


def dead_letter_json(record: StemRecord, traceback_text: str) -> bytes:
    return json.dumps(
        {
            "track_id": record.track_id,
            "source_uri": record.source_uri,
            "operator": record.operator,
            "label": record.label,
            "error_type": record.error_type,
            "error_message": record.error_message,
            "traceback": traceback_text,
            "run_id": record.run_id,
            "created_at": record.created_at.isoformat(),
        },
        ensure_ascii=False,
        indent=1,
    ).encode("utf-8")
