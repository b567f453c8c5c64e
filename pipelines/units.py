"""A unit's life in storage: is it complete, where its stems go, how it fails, how it commits.

A unit (:class:`pipelines.records.Unit`, one track through one operator) is *complete* when
an earlier run left its stems and an ok metadata part with the same config digest
(:func:`complete_rows`): a re-run skips it. Otherwise its stems are written
(:mod:`pipelines.sink`), then :func:`commit` writes its features part and its metadata part,
the completeness marker, and clears its dead letter; or :func:`fail_unit` writes one error
row and a dead-letter file. Every write of a track with a time limit goes through its
:class:`WriteGuard`. Nothing here imports Beam.
"""
from __future__ import annotations

import contextlib
import logging
import threading
import traceback

import fsspec

from sepops import Operator
from sepops.audio import write_bytes_atomic
from sepops.errors import without_object_reprs
from sepops.tags import TrackTags

from .config import JobConfig
from .io import join_uri, safe_path_component
from .records import (
    StemRecord,
    Unit,
    dead_letter_json,
    dead_letter_uri,
    feature_part_uri,
    part_uri,
    read_feature_part,
    read_part,
    utc_now,
    write_feature_part,
    write_part,
)
from .tables import STATUS_ERROR, STATUS_OK, STATUS_SKIPPED

__all__ = [
    "PartNotWritten",
    "UnitCancelled",
    "UnitFailed",
    "WriteGuard",
    "clear_dead_letter",
    "commit",
    "complete_rows",
    "fail_unit",
    "guarded",
    "is_complete",
    "remove_uris",
    "stem_prefix",
    "stem_uri",
    "unit_stem_uri",
]

_LOG = logging.getLogger(__name__)


class UnitFailed(Exception):
    """The unit failed; ``error_type`` and ``message`` become its error row.

    Parameters
    ----------
    error_type, message : str
        The row's ``error_type`` and ``error_message``.
    traceback_text : str, optional
        The dead letter's traceback; by default this exception's own (with its cause).
    """

    def __init__(self, error_type: str, message: str, traceback_text: str | None = None,
                 tags: TrackTags | None = None):
        message = without_object_reprs(message)  # no memory addresses in a row
        super().__init__(message)
        self.error_type = error_type
        self.message = message
        self._traceback_text = traceback_text
        #: The source's tags, when its bytes could be read (error rows carry them too).
        self.tags = tags

    def traceback_text(self) -> str:
        if self._traceback_text is not None:
            return self._traceback_text
        return "".join(traceback.format_exception(self))


class PartNotWritten(Exception):
    """The unit's stems were written but its metadata part was not.

    No error row exists then: the job records the unit as ``missing_result``.
    """


class UnitCancelled(Exception):
    """The track's time limit passed: its units must write nothing more."""


class WriteGuard:
    """Serialises one track's writes with its time limit (``job.track_timeout_s``).

    The track's work runs in a thread of its own; every stem and part it writes goes through
    :meth:`write`. When the limit passes, :meth:`cancel` waits for a write in progress, and
    after it no write starts (:class:`UnitCancelled`), so the watchdog's error rows and
    clean-up cannot race with a late result.
    """

    def __init__(self):
        self._lock = threading.Lock()
        self._cancelled = False
        self._written: list[str] = []

    @contextlib.contextmanager
    def write(self, uri: str):
        with self._lock:
            if self._cancelled:
                raise UnitCancelled(uri)
            yield
            self._written.append(uri)

    def check(self) -> None:
        """Raise :class:`UnitCancelled` once the limit has passed (between blocks of work)."""
        if self._cancelled:
            raise UnitCancelled("the track's time limit passed")

    def cancel(self) -> list[str]:
        """Stop all further writes; returns the URIs written so far."""
        with self._lock:
            self._cancelled = True
            return list(self._written)


def guarded(guard: WriteGuard | None, uri: str):
    """``guard.write(uri)``, or nothing to guard (a track without a time limit)."""
    return guard.write(uri) if guard is not None else contextlib.nullcontext()


def stem_uri(output: str, track_id: str, label: str, stem: str, extension: str, *, by_label: bool) -> str:
    """Where a stem goes: ``<output>/stems/<track_id>/<stem>.<ext>`` for a single-operator
    job, ``<output>/stems/<track_id>/<label>/<stem>.<ext>`` for a multi-operator one
    (``by_label``; ``JobConfig.stems_by_label`` decides)."""
    folder = [track_id, label] if by_label else [track_id]
    return join_uri(output, "stems", *folder, f"{safe_path_component(stem)}.{extension}")


def stem_prefix(output: str, unit: Unit, job: JobConfig) -> str:
    """The folder of a unit's stems, with its trailing "/"."""
    return unit_stem_uri(unit, job, output, "x").rsplit("/", 1)[0] + "/"


def unit_stem_uri(unit: Unit, job: JobConfig, output: str, stem: str) -> str:
    """Where this unit's stem ``stem`` goes (:func:`stem_uri`)."""
    return stem_uri(output, unit.track_id, unit.label, stem, job.audio.extension, by_label=job.stems_by_label)


def complete_rows(
    unit: Unit, job: JobConfig, output: str, operator: Operator, feature_rows_out: list | None = None
) -> list[dict] | None:
    """The rows of this unit's part when an earlier run left its stems and an ok part with
    the same digest (the unit is then skipped), else ``None``. When the job asks for
    features, the unit is complete only with a features part of the same settings, whose
    rows are then appended to ``feature_rows_out``."""
    part = read_part(part_uri(output, unit.label, unit.track_id))
    if part is None or part.num_rows == 0:
        return None
    rows = part.to_pylist()
    if any(r["status"] not in (STATUS_OK, STATUS_SKIPPED) or r["config_digest"] != unit.config_digest for r in rows):
        return None
    expected_stems = set(operator.stem_names)
    if expected_stems and {r["stem"] for r in rows} != expected_stems:
        return None
    # Stems recorded elsewhere (the other layout: the config went from one operator to
    # several or back) are redone where this job puts them.
    if any(r["stem_uri"] != unit_stem_uri(unit, job, output, r["stem"]) for r in rows):
        return None
    features = None
    if job.features.enabled:
        features = read_feature_part(feature_part_uri(output, unit.label, unit.track_id))
        digest = job.features.digest()
        if features is None or {f["stem"] for f in features} != {r["stem"] for r in rows} or any(
            f["features_digest"] != digest for f in features
        ):
            return None
    fs, _ = fsspec.core.url_to_fs(rows[0]["stem_uri"])
    if not all(fs.exists(fsspec.core.url_to_fs(r["stem_uri"])[1]) for r in rows):
        return None
    if features is not None and feature_rows_out is not None:
        feature_rows_out.extend(features)
    return rows


def is_complete(unit: Unit, job: JobConfig, output: str, operator: Operator) -> bool:
    """True when an earlier run left this unit's stems and an ok part with the same digest."""
    return complete_rows(unit, job, output, operator) is not None


def fail_unit(
    unit: Unit, output: str, failure: UnitFailed, *, run_id: str, version: str, guard: WriteGuard | None = None
) -> list[StemRecord]:
    """Record the unit as failed: one error row plus a dead-letter file; returns the row.

    Storage errors are logged, not raised: the job goes on, and records a unit
    whose part is missing.
    """
    record = unit.record(
        STATUS_ERROR, run_id=run_id, version=version, created_at=utc_now(), tags=failure.tags,
        error_type=failure.error_type, error_message=failure.message,
    )
    try:
        uri = part_uri(output, unit.label, unit.track_id)
        with guarded(guard, uri):
            write_part(uri, [record])
            write_bytes_atomic(dead_letter_uri(output, unit.label, unit.track_id), dead_letter_json(record, failure.traceback_text()))
    except UnitCancelled:
        raise
    except Exception:  # noqa: BLE001
        _LOG.exception("could not record the failure of %s / %s", unit.track_id, unit.label)
    return [record]


def commit(
    unit: Unit, output: str, records: list[StemRecord], guard: WriteGuard | None,
    features: list[dict] | None = None, feature_rows_out: list | None = None,
) -> None:
    """Write the unit's features part (when the job computes features), then its metadata
    part, the completeness marker, after its stems; clear its dead letter.

    Raises
    ------
    PartNotWritten
        When storage refused the part (the stems stay; the job records the unit as ``missing_result``).
    """
    try:
        if features is not None:
            uri = feature_part_uri(output, unit.label, unit.track_id)
            with guarded(guard, uri):
                write_feature_part(uri, features)
        part = part_uri(output, unit.label, unit.track_id)
        with guarded(guard, part):
            write_part(part, records)
    except UnitCancelled:
        raise
    except Exception as exc:
        _LOG.exception("could not write the metadata part of %s / %s", unit.track_id, unit.label)
        raise PartNotWritten(f"{unit.track_id} / {unit.label}") from exc
    clear_dead_letter(unit, output)
    if features is not None and feature_rows_out is not None:
        feature_rows_out.extend(features)


def clear_dead_letter(unit: Unit, output: str) -> None:
    fs, path = fsspec.core.url_to_fs(dead_letter_uri(output, unit.label, unit.track_id))
    try:
        fs.rm_file(path)
    except (FileNotFoundError, OSError):
        pass


def remove_uris(uris: list[str]) -> None:
    """Remove files (stems a timed-out unit wrote); those already gone are fine."""
    for uri in uris:
        fs, path = fsspec.core.url_to_fs(uri)
        try:
            fs.rm_file(path)
        except (FileNotFoundError, OSError):
            pass
