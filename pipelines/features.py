"""The features table: what transcription and lyrics jobs read next, one row per (track, operator, stem).

Each ok stem of a run gets one row in ``<output>/features/*.parquet`` (keyed by
``track_id``, ``label``, ``stem``, like the metadata table), computed by
:mod:`sepops.features` on the stem in memory before it is written, in the same unit (no
second decode). Which features are computed is the job's ``features:`` section
(:class:`sepops.features.FeatureSettings`); a feature that was not asked for, or does not
apply to the stem (tempo on a lead, f0 on drums), is null. Storage follows the metadata
table's: a per-unit part under ``<output>/_sepflow/features/<label>/<track_id>.parquet``
(written before the metadata part, the unit's completeness marker), shards staged under the
run, published by the driver to ``<output>/features/features-<run_id>-part-<shard>.parquet``.
"""
from __future__ import annotations

import pyarrow as pa

from .metadata import read_parquet_part, read_table_folder, schema_field, table_bytes

__all__ = [
    "FEATURES_DIR",
    "FEATURE_PARTS_DIR",
    "STEM_FEATURES_SCHEMA",
    "feature_part_uri",
    "feature_rows",
    "features_table",
    "read_feature_part",
    "read_features",
    "write_feature_part",
]

FEATURES_DIR = "features"
FEATURE_PARTS_DIR = "_sepflow/features"


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


def feature_part_uri(output: str, label: str, track_id: str) -> str:
    """Where one unit's feature rows are kept (beside its metadata part)."""
    from .io import join_uri

    return join_uri(output, FEATURE_PARTS_DIR, label, f"{track_id}.parquet")


def feature_rows(
    features: dict[str, dict], *, track_id: str, label: str, operator: str, source_uri: str,
    stem_uris: dict[str, str], sample_rate: int, digest: str, run_id: str, created_at,
) -> list[dict]:
    """One unit's rows of the features table, from :meth:`sepops.features.FeatureExtractor.finish`."""
    return [
        {
            "track_id": track_id, "label": label, "operator": operator, "stem": stem, "source_uri": source_uri,
            "stem_uri": stem_uris[stem], "sample_rate": int(sample_rate), **values,
            "features_digest": digest, "run_id": run_id, "created_at": created_at,
        }
        for stem, values in features.items()
    ]


def features_table(rows: list[dict]) -> pa.Table:
    return pa.Table.from_pylist(rows, schema=STEM_FEATURES_SCHEMA)


def write_feature_part(uri: str, rows: list[dict]) -> None:
    """Write one unit's feature rows atomically (uncompressed, as the metadata parts)."""
    from sepops.audio import write_bytes_atomic

    write_bytes_atomic(uri, table_bytes(features_table(rows), compression="none"))


def read_feature_part(uri: str) -> list[dict] | None:
    """One unit's feature rows, or ``None`` when there is no readable part."""
    table = read_parquet_part(uri, STEM_FEATURES_SCHEMA)
    return None if table is None else table.to_pylist()


def read_features(output: str) -> pa.Table:
    """The published features of ``output`` as one table (as a downstream reader would)."""
    from .io import join_uri

    return read_table_folder(join_uri(output, FEATURES_DIR), STEM_FEATURES_SCHEMA)
