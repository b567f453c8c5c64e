"""The tables sepflow publishes: their schemas, their folders, and how they are written,
published and read.

Every job writes its table the same way: workers stage Parquet shards under the job's
folder (``<output>/_sepflow/runs/<job_id>/<table>/part-<shard>.parquet``, each written
atomically); after the pipeline the driver moves them to ``<output>/<table>/<prefix>-<job_id>-part-<shard>.parquet``
(:func:`publish_shards`) and only then removes the earlier job's files, so a reader never
lacks a table and ``<output>/<table>/`` reads as one table without duplicates (pyarrow.dataset,
pandas, DuckDB ``read_parquet('<output>/metadata/*.parquet')``). :func:`read_table` is the
one reader of a published table.

========================  ==========================  =============================================
folder                    schema                      rows
========================  ==========================  =============================================
``metadata/``             ``STEM_METADATA_SCHEMA``    one per (track, operator, stem), or one error row
``features/``             ``STEM_FEATURES_SCHEMA``    one per ok stem, when the job computes features
``evaluation/``           ``EVALUATION_SCHEMA``       one per scored (track, operator, stem) or oracle
========================  ==========================  =============================================
"""
from __future__ import annotations

import io
import logging
import zlib

import fsspec
import pyarrow as pa
import pyarrow.parquet as pq

from sepops.audio import write_bytes_atomic

from .io import join_uri

__all__ = [
    "DEAD_LETTER_DIR",
    "EVALUATION_DIR",
    "EVALUATION_SCHEMA",
    "EVALUATION_SUMMARY_DIR",
    "FEATURES_DIR",
    "FEATURE_PARTS_DIR",
    "METADATA_DIR",
    "PARTS_DIR",
    "SCHEMAS",
    "STATUS_ERROR",
    "STATUS_OK",
    "STATUS_SKIPPED",
    "STEM_FEATURES_SCHEMA",
    "STEM_METADATA_SCHEMA",
    "parquet_dataset",
    "publish_shards",
    "read_evaluation",
    "read_features",
    "read_metadata",
    "read_rows",
    "read_table",
    "read_table_folder",
    "schema_field",
    "shard_of",
    "table_bytes",
    "track_status",
    "write_rows",
    "write_shard_table",
]

_LOG = logging.getLogger(__name__)

STATUS_OK = "ok"
STATUS_ERROR = "error"
STATUS_SKIPPED = "skipped"

METADATA_DIR = "metadata"
FEATURES_DIR = "features"
EVALUATION_DIR = "evaluation"
#: The summary of the latest evaluation, as JSON (outside evaluation/, which holds only Parquet).
EVALUATION_SUMMARY_DIR = "evaluation_summary"
DEAD_LETTER_DIR = "dead_letter"
#: Per-unit parts of the catalog job (its log: :mod:`pipelines.units`).
PARTS_DIR = "_sepflow/parts"
FEATURE_PARTS_DIR = "_sepflow/features"


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


_SEGMENT = pa.struct([pa.field("start_s", pa.float64()), pa.field("end_s", pa.float64())])

#: The schema of ``<output>/features/`` (documented in the README and docs/pipeline.md).
STEM_FEATURES_SCHEMA = pa.schema(
    [
        schema_field("track_id", pa.string(), "the track, as in the metadata table", False),
        schema_field("label", pa.string(), "the operator's label in the job", False),
        schema_field("operator", pa.string(), "registered sepops operator name", False),
        schema_field("stem", pa.string(), "stem name", False),
        schema_field("source_uri", pa.string(), "URI of the input file", False),
        schema_field("stem_uri", pa.string(), "URI of the stem file", False),
        schema_field("sample_rate", pa.int32(), "stem sample rate, Hz"),
        schema_field("duration_s", pa.float64(), "stem duration, seconds"),
        # activity (default on)
        schema_field("active_fraction", pa.float64(), "share of the track's duration in activity segments"),
        schema_field("activity_segments", pa.list_(_SEGMENT),
               "start/end seconds where the stem is audible (energy envelope above the threshold, min. length)"),
        # rhythm
        schema_field("onset_times_s", pa.list_(pa.float64()),
               "onset times, seconds: SuperFlux onset strength (librosa, lag 2, 3-band max filter) of the stem at "
               "22.05 kHz, 220-sample hop (9.98 ms), 1024-sample window; librosa's default peak picking, backtracked"),
        schema_field("tempo_bpm", pa.float64(), "global tempo, beats per minute (librosa.beat.beat_track); rhythm stems"),
        schema_field("beat_times_s", pa.list_(pa.float64()), "beat times, seconds; rhythm stems"),
        # pitch
        schema_field("f0_median_hz", pa.float64(), "median f0 over voiced frames, Hz (librosa.pyin); pitch stems"),
        schema_field("voiced_fraction", pa.float64(), "share of frames pyin calls voiced; pitch stems"),
        schema_field("f0_hop_s", pa.float64(), "time step of f0_hz, seconds"),
        schema_field("f0_hz", pa.list_(pa.float32()), "f0 contour, Hz, one value per f0_hop_s from 0 s; null = unvoiced"),
        schema_field("chroma_times_s", pa.list_(pa.float64()), "start of each chroma segment (0, then each beat), seconds"),
        schema_field("chroma_per_beat", pa.list_(pa.list_(pa.float32())),
               "12 chroma values (C, C#, ..., B; max 1) per segment between beats; harmonic stems"),
        # loudness (default on)
        schema_field("loudness_lufs", pa.float64(), "integrated loudness, LUFS (ITU-R BS.1770-4, pyloudnorm); null if silent"),
        schema_field("features_s", pa.float64(), "seconds spent computing this stem's features"),
        schema_field("feature_errors", pa.string(), "features that failed on this stem and why; null when none failed"),
        schema_field("features_digest", pa.string(), "fingerprint of the job's features settings", False),
        schema_field("run_id", pa.string(), "the run that computed the row", False),
        schema_field("created_at", pa.timestamp("ms", tz="UTC"), "when the row was written", False),
    ]
)



#: The schema of ``<output>/evaluation/*.parquet`` (``sepflow report`` reads these columns).
EVALUATION_SCHEMA = pa.schema(
    [
        schema_field("track_id", pa.string(), "the estimate's track id (for oracles: the track whose mixture was used)", False),
        schema_field("label", pa.string(), "the operator's label in its run; for oracles the oracle's name", False),
        schema_field("operator", pa.string(), "registered operator name; for oracles the oracle's name", False),
        schema_field("stem", pa.string(), "the estimate's stem name; for oracles the reference stem"),
        schema_field("reference_stem", pa.string(), "the reference stem the estimate was scored against"),
        schema_field("reference_track", pa.string(), "the reference track (piece) the track was paired with"),
        schema_field("matching", pa.string(), "name | best_assignment | oracle"),
        schema_field("is_oracle", pa.bool_(), "true for the ibm / irm / mix baselines", False),
        schema_field("estimate_uri", pa.string(), "URI of the estimated stem (oracles: of the mixture)"),
        schema_field("reference_uri", pa.string(), "URI of the reference stem"),
        schema_field("sdr", pa.float64(), "BSS Eval v3 SDR over the whole signal, dB"),
        schema_field("sir", pa.float64(), "BSS Eval v3 SIR over the whole signal, dB"),
        schema_field("sar", pa.float64(), "BSS Eval v3 SAR over the whole signal, dB"),
        schema_field("sdr_frames_median", pa.float64(), "median SDR over 1 s frames (silent frames excluded), dB"),
        schema_field("sir_frames_median", pa.float64(), "median SIR over 1 s frames (silent frames excluded), dB"),
        schema_field("sar_frames_median", pa.float64(), "median SAR over 1 s frames (silent frames excluded), dB"),
        schema_field("si_sdr", pa.float64(), "scale-invariant SDR over the whole signal, dB"),
        schema_field("frames", pa.int32(), "frames in the medians"),
        schema_field("duration_s", pa.float64(), "seconds scored (the shorter of estimate and reference)"),
        schema_field("status", pa.string(), "ok | error", False),
        schema_field("error_message", pa.string(), "the cause on error rows, naming the file"),
        schema_field("evaluation_id", pa.string(), "the evaluation that wrote the row", False),
        schema_field("created_at", pa.timestamp("ms", tz="UTC"), "when the row was written", False),
    ]
)


#: Each published table's schema, by its folder under the output.
SCHEMAS = {METADATA_DIR: STEM_METADATA_SCHEMA, FEATURES_DIR: STEM_FEATURES_SCHEMA, EVALUATION_DIR: EVALUATION_SCHEMA}


def track_status(statuses: set[str]) -> str:
    """A track's status from its units' (or rows'): ``error`` when any failed, ``skipped`` when
    all were skipped, else ``ok`` (the rule of the run's summary and of the report)."""
    if STATUS_ERROR in statuses:
        return STATUS_ERROR
    return STATUS_SKIPPED if statuses == {STATUS_SKIPPED} else STATUS_OK


def table_bytes(table: pa.Table, compression: str = "zstd") -> bytes:
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink, compression=compression)
    return sink.getvalue().to_pybytes()



def write_shard_table(staged_dir: str, shard: int, rows: list[dict], schema: pa.Schema,
                      order: list[tuple[str, str]]) -> str:
    """Write one shard of a job's table: ``rows`` sorted by ``order``, zstd, atomically, as
    ``<staged_dir>/part-<shard>.parquet`` (published later by :func:`publish_shards`)."""
    uri = join_uri(staged_dir, f"part-{shard:05d}.parquet")
    write_bytes_atomic(uri, table_bytes(pa.Table.from_pylist(rows, schema=schema).sort_by(order)))
    return uri


def write_rows(uri: str, rows: list[dict], schema: pa.Schema) -> None:
    """Write one unit's rows atomically (readers see the old part or the new one, never half).
    Uncompressed: a part holds a few rows, which compression does not shrink, and zstd
    doubled the time of this per-unit write."""
    write_bytes_atomic(uri, table_bytes(pa.Table.from_pylist(rows, schema=schema), compression="none"))


def read_rows(uri: str, schema: pa.Schema) -> pa.Table | None:
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



def shard_of(track_id: str, shards: int) -> int:
    """The metadata shard of a track (every unit of a track in one shard, stable across runs)."""
    return zlib.crc32(track_id.encode("utf-8")) % max(1, shards)



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



def read_table(output: str, name: str, columns: list[str] | None = None) -> pa.Table:
    """The published table ``name`` (a key of :data:`SCHEMAS`: ``metadata``, ``features``,
    ``evaluation``) of ``output``, as one table, as a downstream reader would read it.

    Raises
    ------
    FileNotFoundError
        When ``output`` has no such folder.
    """
    table = read_table_folder(join_uri(output, name), SCHEMAS[name])
    return table if columns is None else table.select(columns)


def read_metadata(output: str) -> pa.Table:
    """``read_table(output, "metadata")``."""
    return read_table(output, METADATA_DIR)


def read_features(output: str) -> pa.Table:
    """``read_table(output, "features")``."""
    return read_table(output, FEATURES_DIR)


def read_evaluation(output: str) -> pa.Table:
    """``read_table(output, "evaluation")``."""
    return read_table(output, EVALUATION_DIR)
