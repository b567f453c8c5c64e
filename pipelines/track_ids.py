"""The track ids an output holds, so that they never move as its catalog grows.

A run records the id it gives each file no earlier run named, before separating anything:
``<output>/_sepflow/track_ids/<run_id>-<bundle>.parquet`` (columns ``source_uri``,
``track_id``; written atomically, one file per bundle of new tracks). The next run reads
every such file, and the published metadata table (outputs written before the id files
existed), so a file keeps its id and a newcomer whose name an earlier file holds gets the
suffix (:func:`pipelines.io.disambiguate`). The records are never removed: a file that
leaves the catalog and comes back gets its old id again.
"""
from __future__ import annotations

import uuid

import pyarrow as pa

from sepops.audio import write_bytes_atomic

from .io import KnownIds, Track, join_uri
from .tables import METADATA_DIR, parquet_dataset, table_bytes

__all__ = ["TRACK_IDS_DIR", "read_known_ids", "write_new_ids"]

TRACK_IDS_DIR = "_sepflow/track_ids"
_SCHEMA = pa.schema([("source_uri", pa.string()), ("track_id", pa.string())])


def read_known_ids(output: str) -> KnownIds:
    """Every (source URI, track id) the output's id records and metadata table hold."""
    pairs: dict[str, str] = {}
    for folder in (join_uri(output, METADATA_DIR), join_uri(output, TRACK_IDS_DIR)):
        for uri, track_id in _pairs(folder):
            pairs.setdefault(uri, track_id)  # the metadata first: the ids the files have now
    return KnownIds.of(pairs.items())


def _pairs(folder: str) -> list[tuple[str, str]]:
    dataset = parquet_dataset(folder)
    if dataset is None:
        return []
    table = dataset.to_table(columns=["source_uri", "track_id"])
    return list(zip(table.column("source_uri").to_pylist(), table.column("track_id").to_pylist()))


def write_new_ids(output: str, run_id: str, tracks: list[Track]) -> str | None:
    """Record the ids of ``tracks`` (files no earlier run named) in one new file; its URI."""
    if not tracks:
        return None
    table = pa.table({"source_uri": [t.source_uri for t in tracks], "track_id": [t.track_id for t in tracks]},
                     schema=_SCHEMA)
    uri = join_uri(output, TRACK_IDS_DIR, f"{run_id}-{uuid.uuid4().hex[:12]}.parquet")
    write_bytes_atomic(uri, table_bytes(table))
    return uri
