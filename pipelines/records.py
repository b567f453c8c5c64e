"""One (track, operator) of the catalog job -- a *unit* -- and its rows: what they hold and
where each unit keeps them.

Per unit, storage holds its stems, then its features part and its metadata part (the
completeness marker, written last), and a dead-letter file only while its latest attempt
failed::

    <output>/_sepflow/parts/<label>/<track_id>.parquet      metadata rows (STEM_METADATA_SCHEMA)
    <output>/_sepflow/features/<label>/<track_id>.parquet   feature rows (STEM_FEATURES_SCHEMA)
    <output>/dead_letter/<label>/<track_id>.json            the cause and its traceback

A part is written atomically under a name derived from the unit alone, so a re-run or a
restarted run overwrites it instead of adding rows. Nothing here imports Beam.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, fields
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import pyarrow as pa

from sepops.tags import TrackTags

from .io import Track, join_uri
from .tables import (
    DEAD_LETTER_DIR,
    FEATURE_PARTS_DIR,
    PARTS_DIR,
    STEM_FEATURES_SCHEMA,
    STEM_METADATA_SCHEMA,
    read_rows,
    write_rows,
)

if TYPE_CHECKING:
    from .config import JobConfig, OperatorSpec

__all__ = [
    "StemRecord",
    "Unit",
    "dead_letter_json",
    "dead_letter_uri",
    "feature_part_uri",
    "feature_rows",
    "part_uri",
    "read_feature_part",
    "read_part",
    "record_dict",
    "utc_now",
    "write_feature_part",
    "write_part",
]


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


@dataclass(frozen=True)
class Unit:
    """One (track, operator) of a job: the facts every metadata row of it repeats."""

    track_id: str
    source_uri: str
    operator: str
    label: str
    #: All operator parameters, JSON (``OperatorSpec.params_json``).
    operator_params: str
    #: ``JobConfig.unit_digest``: a re-run skips the unit only when its rows carry this digest.
    config_digest: str
    #: ``Track.id_collision``: the id this input shared with others before its suffix.
    track_id_collision: str | None = None

    @classmethod
    def of(cls, track: Track, spec: OperatorSpec, job: JobConfig) -> Unit:
        return cls(
            track.track_id, track.source_uri, spec.operator, spec.label, spec.params_json(), job.unit_digest(spec),
            track.id_collision,
        )

    def record(
        self, status: str, *, run_id: str, version: str, created_at: datetime, tags: TrackTags | None = None,
        **values: Any,
    ) -> StemRecord:
        """A metadata row of this unit; ``values`` fill the stem or error columns, ``tags`` the
        ``source_*`` ones."""
        return StemRecord(
            track_id=self.track_id,
            source_uri=self.source_uri,
            operator=self.operator,
            label=self.label,
            operator_params=self.operator_params,
            status=status,
            config_digest=self.config_digest,
            run_id=run_id,
            sepflow_version=version,
            created_at=created_at,
            track_id_collision=self.track_id_collision,
            **(tags or TrackTags()).as_dict("source_"),
            **values,
        )


def part_uri(output: str, label: str, track_id: str) -> str:
    return join_uri(output, PARTS_DIR, label, f"{track_id}.parquet")


def dead_letter_uri(output: str, label: str, track_id: str) -> str:
    return join_uri(output, DEAD_LETTER_DIR, label, f"{track_id}.json")


def feature_part_uri(output: str, label: str, track_id: str) -> str:
    """Where one unit's feature rows are kept (beside its metadata part)."""
    return join_uri(output, FEATURE_PARTS_DIR, label, f"{track_id}.parquet")


def record_dict(record: StemRecord) -> dict:
    """A row as a dict (``dataclasses.asdict`` deep-copies every value: 10x slower)."""
    return dict(record.__dict__)


def write_part(uri: str, records: list[StemRecord]) -> None:
    """Write one unit's metadata rows atomically (:func:`pipelines.tables.write_rows`)."""
    write_rows(uri, [record_dict(r) for r in records], STEM_METADATA_SCHEMA)


def read_part(uri: str) -> pa.Table | None:
    """The unit's rows, or ``None`` when there is no (readable) part."""
    return read_rows(uri, STEM_METADATA_SCHEMA)


def write_feature_part(uri: str, rows: list[dict]) -> None:
    """Write one unit's feature rows atomically (uncompressed, as the metadata parts)."""
    write_rows(uri, rows, STEM_FEATURES_SCHEMA)


def read_feature_part(uri: str) -> list[dict] | None:
    """One unit's feature rows, or ``None`` when there is no readable part."""
    table = read_rows(uri, STEM_FEATURES_SCHEMA)
    return None if table is None else table.to_pylist()


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
