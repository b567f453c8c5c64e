"""The metadata table: one row per (track, operator, stem), or one error row per (track, operator).

Workers write one small Parquet *part* per (track, operator) to
``<output>/_sepflow/parts/<label>/<track_id>.parquet`` after that unit's stems are written.
The part is the unit's completeness marker: written last, atomically, under a name derived
from the unit alone, so a re-run or a restarted run overwrites it instead of adding rows.

After the pipeline the driver consolidates the parts of this run's units into
``<output>/metadata/stems-<run_id>.parquet`` and removes the files of earlier runs, so
``<output>/metadata/`` reads as one table without duplicates (pyarrow.dataset, pandas,
DuckDB ``read_parquet('<output>/metadata/*.parquet')``).
"""
from __future__ import annotations

import io
import json
import logging
from dataclasses import asdict, dataclass, fields
from datetime import UTC, datetime
from typing import TYPE_CHECKING

import fsspec
import pyarrow as pa
import pyarrow.parquet as pq

from sepops.audio import write_bytes_atomic

from .io import join_uri

if TYPE_CHECKING:  # pipelines.unit imports this module
    from .unit import Unit

__all__ = [
    "STATUS_ERROR",
    "STATUS_OK",
    "STATUS_SKIPPED",
    "STEM_METADATA_SCHEMA",
    "StemRecord",
    "consolidate",
    "dead_letter_uri",
    "part_uri",
    "read_metadata",
    "read_part",
    "records_to_table",
    "write_part",
]

_LOG = logging.getLogger(__name__)

STATUS_OK = "ok"
STATUS_ERROR = "error"
STATUS_SKIPPED = "skipped"

PARTS_DIR = "_sepflow/parts"
METADATA_DIR = "metadata"
DEAD_LETTER_DIR = "dead_letter"


def _field(name: str, type_: pa.DataType, doc: str, nullable: bool = True) -> pa.Field:
    return pa.field(name, type_, nullable=nullable, metadata={"description": doc})


#: The schema of ``<output>/metadata/`` (documented in docs/pipeline.md).
STEM_METADATA_SCHEMA = pa.schema(
    [
        _field("track_id", pa.string(), "input path relative to the input root, no extension, made safe", False),
        _field("source_uri", pa.string(), "URI of the input file", False),
        _field("operator", pa.string(), "registered sepops operator name", False),
        _field("label", pa.string(), "the operator's label in the job (its stems' folder in multi-operator jobs)", False),
        _field("operator_params", pa.string(), "all operator parameters, JSON", False),
        _field("stem", pa.string(), "stem name; null on error rows"),
        _field("stem_uri", pa.string(), "URI of the stem file; null on error rows"),
        _field("sample_rate", pa.int32(), "stem sample rate, Hz"),
        _field("channels", pa.int32(), "stem channel count"),
        _field("duration_s", pa.float64(), "stem duration, seconds"),
        _field("stem_rms_db", pa.float64(), "RMS level, dBFS, floored at -120"),
        _field("stem_peak_db", pa.float64(), "peak level, dBFS, floored at -120"),
        _field("energy_share", pa.float64(), "stem energy / energy of all this operator's stems; null if all silent"),
        _field("status", pa.string(), "ok | error | skipped", False),
        _field("error_type", pa.string(), "short cause on error rows (empty, unsupported, too_long, ...)"),
        _field("error_message", pa.string(), "human-readable cause on error rows"),
        _field("processing_s", pa.float64(), "seconds to separate and write this (track, operator)"),
        _field("config_digest", pa.string(), "fingerprint of operator + params + audio settings", False),
        _field("run_id", pa.string(), "the run that wrote the row", False),
        _field("sepflow_version", pa.string(), "sepflow version that wrote the row", False),
        _field("created_at", pa.timestamp("ms", tz="UTC"), "when the row was written", False),
        # The source file's own tags and stream facts (sepops.tags): null where it has none.
        _field("source_artist", pa.string(), "artist tag of the source file"),
        _field("source_title", pa.string(), "title tag of the source file"),
        _field("source_album", pa.string(), "album tag of the source file"),
        _field("source_track_number", pa.int32(), "track number tag of the source file"),
        _field("source_isrc", pa.string(), "ISRC tag of the source file, 12 characters, no dashes"),
        _field("source_duration_s", pa.float64(), "duration of the source file from its header, seconds"),
        _field("source_codec", pa.string(), "codec of the source file (aac, alac, mp3, flac, opus, vorbis, pcm, wma ...)"),
        _field("source_bit_rate", pa.int64(), "bit rate of the source file from its header, bits per second"),
        _field("track_id_collision", pa.string(),
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


def records_to_table(records: list[StemRecord]) -> pa.Table:
    return pa.Table.from_pylist([asdict(r) for r in records], schema=STEM_METADATA_SCHEMA)


def _table_bytes(table: pa.Table) -> bytes:
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink, compression="zstd")
    return sink.getvalue().to_pybytes()


def write_part(uri: str, records: list[StemRecord]) -> None:
    """Write one unit's rows atomically (readers see the old part or the new one, never half)."""
    write_bytes_atomic(uri, _table_bytes(records_to_table(records)))


def read_part(uri: str) -> pa.Table | None:
    """The unit's rows, or ``None`` when there is no (readable) part."""
    fs, path = fsspec.core.url_to_fs(uri)
    try:
        data = fs.cat_file(path)
    except FileNotFoundError:
        return None
    try:
        return pq.read_table(io.BytesIO(data), schema=STEM_METADATA_SCHEMA)
    except Exception:  # noqa: BLE001 - a damaged part means "not complete": redo the unit
        _LOG.warning("unreadable metadata part %s; the unit will be redone", uri)
        return None


def _read_parts(uris: list[str]) -> dict[str, pa.Table | None]:
    """Fetch many parts at once (fsspec fetches object-store keys concurrently)."""
    if not uris:
        return {}
    fs, _ = fsspec.core.url_to_fs(uris[0])
    paths = [fsspec.core.url_to_fs(u)[1] for u in uris]
    fetched = fs.cat(paths, on_error="return")
    if not isinstance(fetched, dict):  # a single path returns bytes
        fetched = {paths[0]: fetched}
    out = {}
    for uri, path in zip(uris, paths):
        data = fetched.get(path)
        if isinstance(data, (bytes, bytearray)):
            try:
                out[uri] = pq.read_table(io.BytesIO(data), schema=STEM_METADATA_SCHEMA)
                continue
            except Exception:  # noqa: BLE001
                _LOG.warning("unreadable metadata part %s", uri)
        out[uri] = None
    return out


def consolidate(output: str, units: list[Unit], run_id: str, sepflow_version: str) -> pa.Table:
    """Build the run's metadata table from the parts of its units and publish it.

    Parameters
    ----------
    units : list of Unit
        Every (track, operator) of this run.

    Rows written by an earlier run (the unit was complete and skipped) get status
    ``skipped`` and keep the facts of the run that wrote them. A unit without a part (which a
    finished pipeline should never leave) becomes an error row ``missing_result``.
    """
    uris = [part_uri(output, unit.label, unit.track_id) for unit in units]
    parts = _read_parts(uris)
    tables = []
    missing = []
    for uri, unit in zip(uris, units):
        table = parts.get(uri)
        if table is None or table.num_rows == 0:
            missing.append(unit)
            continue
        tables.append(table)
    if missing:
        _LOG.warning("%d (track, operator) units have no recorded result", len(missing))
        now = utc_now()
        tables.append(
            records_to_table(
                [
                    unit.record(
                        STATUS_ERROR, run_id=run_id, version=sepflow_version, created_at=now,
                        error_type="missing_result",
                        error_message="the pipeline finished without recording a result for this unit",
                    )
                    for unit in missing
                ]
            )
        )
    table = pa.concat_tables(tables) if tables else STEM_METADATA_SCHEMA.empty_table()
    # Units kept from an earlier run are this run's "skipped".
    import pyarrow.compute as pc

    earlier = pc.not_equal(table["run_id"], pa.scalar(run_id))
    status = pc.if_else(earlier, pa.scalar(STATUS_SKIPPED), table["status"])
    table = table.set_column(table.schema.get_field_index("status"), STEM_METADATA_SCHEMA.field("status"), status)
    table = table.sort_by([("track_id", "ascending"), ("label", "ascending"), ("stem", "ascending")])
    _publish(output, table, run_id)
    return table


def _publish(output: str, table: pa.Table, run_id: str) -> None:
    """Write the run's table, then remove earlier runs' files (so readers never lack a table)."""
    metadata_dir = join_uri(output, METADATA_DIR)
    target = join_uri(metadata_dir, f"stems-{run_id}.parquet")
    write_bytes_atomic(target, _table_bytes(table))
    fs, dir_path = fsspec.core.url_to_fs(metadata_dir)
    _, target_path = fsspec.core.url_to_fs(target)
    fs.invalidate_cache()
    for path in fs.find(dir_path):
        if path != target_path and path.endswith(".parquet"):
            fs.rm_file(path)


def read_metadata(output: str) -> pa.Table:
    """The published metadata of ``output`` as one table (as a downstream reader would)."""
    import pyarrow.dataset as ds
    from pyarrow.fs import FSSpecHandler, PyFileSystem

    fs, path = fsspec.core.url_to_fs(join_uri(output, METADATA_DIR))
    dataset = ds.dataset(path, format="parquet", filesystem=PyFileSystem(FSSpecHandler(fs)))
    return dataset.to_table()


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
