"""What ``sepflow report`` reads of a run: its run record, metadata, features and evaluation
tables, and the first seconds of the sampled tracks' audio. Parquet is read with pyarrow
through fsspec; Apache Beam is not imported."""
from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field

import fsspec
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from .errors import ReportError
from .io import join_uri
from .tables import (
    EVALUATION_DIR,
    FEATURES_DIR,
    METADATA_DIR,
    STATUS_OK,
    STEM_METADATA_SCHEMA,
    parquet_dataset,
)

#: The columns of the evaluation table (``tables.EVALUATION_SCHEMA``) the report needs.
EVALUATION_COLUMNS = ("track_id", "label", "stem", "is_oracle", "sdr", "sir", "sar", "si_sdr", "status")
#: The columns of the metadata table (``tables.STEM_METADATA_SCHEMA``) the report reads.
METADATA_COLUMNS = (
    "track_id", "source_uri", "operator", "label", "stem", "stem_uri", "status", "error_type", "error_message",
    "duration_s",
)
_PUBLISHED_NAME = re.compile(r"^stems-(?P<run_id>.+)-part-\d+\.parquet$")



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


def _published_run_id(dataset) -> str | None:
    """The run id in the names of the published metadata files (``dataset``, or None when
    there are none; the newest id, should there be several)."""
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
    if not fs.isdir(join_uri(path, METADATA_DIR)) and not fs.isdir(join_uri(path, "_sepflow", "runs")):
        raise ReportError(f"--run {output} is not a sepflow output: it has no metadata/ or _sepflow/runs/")
    dataset = parquet_dataset(join_uri(output, METADATA_DIR))
    record = _run_record(output, _published_run_id(dataset))
    if dataset is None:
        empty = STEM_METADATA_SCHEMA.empty_table().select(list(METADATA_COLUMNS))
        run = RunData(output, record, empty, notes=["no metadata table is published in this output"])
    else:
        run = RunData(output, record, dataset.to_table(columns=list(METADATA_COLUMNS)))
    features_uri = join_uri(output, FEATURES_DIR)
    if parquet_dataset(features_uri) is not None:
        run.features_uri = features_uri
    return run


def default_evaluation_uri(output: str) -> str | None:
    """``<output>/evaluation`` when that folder exists, else ``None``."""
    uri = join_uri(output.rstrip("/"), EVALUATION_DIR)
    fs, path = fsspec.core.url_to_fs(uri)
    return uri if fs.isdir(path) else None


def load_evaluation(uri: str) -> pa.Table:
    """The evaluation table a user names with ``--evaluation`` (a folder ``uri``), checked to be one
    (a run's own is ``tables.read_evaluation``).

    Raises
    ------
    ReportError
        When there is no Parquet table there, or it lacks the evaluation's columns.
    """
    dataset = parquet_dataset(uri)
    if dataset is None:
        raise ReportError(f"--evaluation {uri} holds no Parquet table (write one with sepflow evaluate)")
    table = dataset.to_table()
    missing = [c for c in EVALUATION_COLUMNS if c not in table.column_names]
    if missing:
        raise ReportError(f"--evaluation {uri} is not an evaluation table: it lacks {', '.join(missing)}")
    return table


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
    ok = table.filter(pc.and_(pc.equal(table["status"], STATUS_OK), pc.is_valid(table["stem_uri"])))
    ids = pc.unique(ok["track_id"]).to_pylist()
    return sorted(ids, key=lambda t: hashlib.sha1(t.encode("utf-8")).hexdigest())[:sample_size]


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
