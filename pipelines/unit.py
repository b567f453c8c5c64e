"""One (track, operator) of the catalog job: skip check, decode, separate, write, record.

Nothing here imports Beam: ``SeparateTrackFn`` (:mod:`pipelines.transforms`) calls these
functions (and decides per track whether to stream and how long to wait), so the unit can be
run and tested without a pipeline::

    unit = Unit.of(track, spec, job)
    if not is_complete(unit, job, output, operator):
        audio, sr, tags = decode_track(track.source_uri, job)
        records = separate_unit(unit, job, output, operator, Analysis(audio, sr), run_id=..., version=..., tags=tags)

Per unit, storage holds its stems, then its metadata part (the completeness marker, written
last), and a dead-letter file only while its latest attempt failed.
"""
from __future__ import annotations

import contextlib
import logging
import math
import threading
import time
import traceback
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import fsspec
import numpy as np

from sepops import Analysis, AudioError, Operator, save_audio
from sepops.audio import decode_audio, output_rate, read_bytes, write_bytes_atomic
from sepops.errors import without_object_reprs
from sepops.tags import TrackTags, read_tags

from .config import JobConfig, OperatorSpec
from .features import (
    feature_part_uri,
    feature_rows,
    read_feature_part,
    write_feature_part,
)
from .io import Track, join_uri, safe_path_component
from .metadata import (
    STATUS_ERROR,
    STATUS_OK,
    STATUS_SKIPPED,
    StemRecord,
    dead_letter_json,
    dead_letter_uri,
    part_uri,
    read_part,
    utc_now,
    write_part,
)

__all__ = [
    "LongTrack",
    "PartNotWritten",
    "Unit",
    "UnitCancelled",
    "UnitFailed",
    "WriteGuard",
    "can_stream",
    "decode_track",
    "fail_unit",
    "is_complete",
    "read_source_tags",
    "separate_unit",
    "source_size",
    "stem_prefix",
    "stem_uri",
    "stream_unit",
    "streams",
]

_LOG = logging.getLogger(__name__)
_DB_FLOOR = -120.0


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


def _guarded(guard: WriteGuard | None, uri: str):
    return guard.write(uri) if guard is not None else contextlib.nullcontext()


def stem_uri(output: str, track_id: str, label: str, stem: str, extension: str, *, by_label: bool) -> str:
    """Where a stem goes: ``<output>/stems/<track_id>/<stem>.<ext>`` for a single-operator
    job, ``<output>/stems/<track_id>/<label>/<stem>.<ext>`` for a multi-operator one
    (``by_label``; ``JobConfig.stems_by_label`` decides)."""
    folder = [track_id, label] if by_label else [track_id]
    return join_uri(output, "stems", *folder, f"{safe_path_component(stem)}.{extension}")


def stem_prefix(output: str, unit: Unit, job: JobConfig) -> str:
    """The folder of a unit's stems, with its trailing "/"."""
    return _unit_stem_uri(unit, job, output, "x").rsplit("/", 1)[0] + "/"


def _unit_stem_uri(unit: Unit, job: JobConfig, output: str, stem: str) -> str:
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
    if any(r["stem_uri"] != _unit_stem_uri(unit, job, output, r["stem"]) for r in rows):
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


class LongTrack(Exception):
    """Raised by :func:`decode_track` for a track too long to decode whole: stream it."""

    def __init__(self, tags: TrackTags):
        super().__init__(f"{tags.duration_s} s")
        self.tags = tags


def decode_track(
    source_uri: str, job: JobConfig, size: int | None = None, *, stream_above_s: float | None = None
) -> tuple[np.ndarray, int, TrackTags]:
    """The track's audio as the job's ``audio`` settings ask, shape (channels, samples), and
    the source's tags, from one read of the file. ``size`` (bytes, from
    :func:`source_size`) is looked up when not given.

    Raises
    ------
    LongTrack
        Before decoding, when the header says the track is longer than ``stream_above_s``
        (a long track in a small file: a podcast at a low bit rate): stream it instead.
    UnitFailed
        With the ``AudioError``'s kind (``empty``, ``too_long``, ``too_short``, ...), or
        ``decode_error`` for anything else (e.g. a ``MemoryError`` on a huge file); its
        ``tags`` are the file's when its bytes could be read.
    """
    settings, limits = job.audio, job.job
    tags = None
    try:
        _check_size(source_uri, source_size(source_uri) if size is None else size, limits.max_file_mb)
        data = read_bytes(source_uri)
        tags = read_tags(data)
        if stream_above_s is not None and (tags.duration_s or 0) > stream_above_s:
            raise LongTrack(tags)
        audio, sr = decode_audio(
            data, uri=source_uri, sr=settings.sample_rate, mono=settings.mono, max_duration_s=limits.max_duration_s
        )
        _check_channels(source_uri, audio.shape[0], limits.max_channels)
        duration = audio.shape[1] / sr
        if duration < limits.min_duration_s:
            raise AudioError(
                source_uri, "too_short", f"{duration:.3f} s is shorter than the minimum of {limits.min_duration_s:g} s"
            )
    except AudioError as exc:
        # The cause says it all; a traceback of the decoder would only be noise.
        raise UnitFailed(exc.kind, exc.message, traceback_text="", tags=tags) from None
    except LongTrack:
        raise
    except Exception as exc:  # noqa: BLE001
        raise UnitFailed(
            "decode_error", f"{type(exc).__name__}: {exc}", traceback_text=traceback.format_exc(), tags=tags
        ) from None
    return audio, sr, tags


def source_size(source_uri: str) -> int | None:
    """The source file's size in bytes (a stat, or one HEAD on a store); ``None`` when the
    store cannot say (reading it will report what is wrong)."""
    try:
        fs, path = fsspec.core.url_to_fs(source_uri)
        return fs.size(path)
    except Exception:  # noqa: BLE001
        return None


def _check_size(source_uri: str, size: int | None, max_file_mb: float | None) -> None:
    """Refuse a file over the limit from its size alone, before a byte is read."""
    if max_file_mb is not None and size is not None and size > max_file_mb * 1e6:
        raise AudioError(
            source_uri, "too_large", f"{size / 1e6:.0f} MB is larger than the limit of {max_file_mb:g} MB (job.max_file_mb)"
        )


def _check_channels(source_uri: str, channels: int, max_channels: int) -> None:
    if channels > max_channels:
        raise AudioError(
            source_uri, "too_many_channels",
            f"{channels} channels is more than the limit of {max_channels} (job.max_channels)",
        )


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
        with _guarded(guard, uri):
            write_part(uri, [record])
            write_bytes_atomic(dead_letter_uri(output, unit.label, unit.track_id), dead_letter_json(record, failure.traceback_text()))
    except UnitCancelled:
        raise
    except Exception:  # noqa: BLE001
        _LOG.exception("could not record the failure of %s / %s", unit.track_id, unit.label)
    return [record]


def separate_unit(
    unit: Unit, job: JobConfig, output: str, operator: Operator, analysis: Analysis, *, run_id: str, version: str,
    tags: TrackTags | None = None, guard: WriteGuard | None = None, feature_rows_out: list | None = None,
) -> list[StemRecord]:
    """Separate the track of ``analysis``, compute its stems' features (``job.features``)
    from the arrays in memory, write the stems, the features part and then the metadata
    part (every row carrying the source's ``tags``). The unit's feature rows (dicts of
    ``STEM_FEATURES_SCHEMA``) are appended to ``feature_rows_out`` when it is given.

    Returns
    -------
    list of StemRecord
        One ok row per stem, or the one error row of :func:`fail_unit` (``operator_error``,
        ``invalid_output``, ``write_error``).

    Raises
    ------
    PartNotWritten
        When the stems were written but the metadata part could not be.
    """
    started = time.perf_counter()
    audio, sr = analysis.audio, analysis.sr
    try:
        try:
            stems = operator.separate(audio, sr, analysis=analysis)
        except Exception as exc:
            raise UnitFailed("operator_error", f"{type(exc).__name__}: {exc}", tags=tags) from exc
        stems = _checked(stems, audio.shape, tags)
        uris = {name: _unit_stem_uri(unit, job, output, name) for name in stems}
        extractor = _feature_extractor(job, list(stems), sr, audio.shape[0])
        if extractor is not None:
            extractor.add(stems)
        for name, stem in stems.items():
            try:
                with _guarded(guard, uris[name]):
                    save_audio(uris[name], stem, sr, format=job.audio.format, subtype=job.audio.encoder_subtype)
            except UnitCancelled:
                raise
            except Exception as exc:
                raise UnitFailed("write_error", f"{uris[name]}: {type(exc).__name__}: {exc}", tags=tags) from exc
    except UnitFailed as failure:
        return fail_unit(unit, output, failure, run_id=run_id, version=version, guard=guard)

    energy = {name: sum_of_squares(s) for name, s in stems.items()}
    peak = {name: peak_of(s) for name, s in stems.items()}
    records = _ok_records(
        unit, job, uris, energy, peak, frames=audio.shape[1], channels=audio.shape[0], sr=sr,
        elapsed=time.perf_counter() - started, tags=tags, run_id=run_id, version=version,
    )
    _commit(unit, output, records, guard, _unit_feature_rows(unit, job, extractor, uris, sr, run_id), feature_rows_out)
    return records


def _feature_extractor(job: JobConfig, stem_names: list[str], sr: int, channels: int):
    """The unit's :class:`sepops.features.FeatureExtractor`, or ``None`` when the job asks for no feature."""
    if not job.features.enabled:
        return None
    from sepops.features import FeatureExtractor

    return FeatureExtractor(stem_names, sr, channels, job.features)


def _unit_feature_rows(unit: Unit, job: JobConfig, extractor, uris: dict[str, str], sr: int, run_id: str) -> list[dict] | None:
    if extractor is None:
        return None
    try:
        features = extractor.finish()
    except Exception as exc:  # noqa: BLE001 - the stems are written and fine: say so in the rows
        _LOG.exception("features of %s / %s", unit.track_id, unit.label)
        features = {name: {"feature_errors": f"features: {type(exc).__name__}: {exc}"} for name in uris}
    return feature_rows(
        features, track_id=unit.track_id, label=unit.label, operator=unit.operator,
        source_uri=unit.source_uri, stem_uris=uris, sample_rate=sr, digest=job.features.digest(),
        run_id=run_id, created_at=utc_now(),
    )


def _ok_records(
    unit: Unit, job: JobConfig, uris: dict[str, str], energy: dict[str, float], peak: dict[str, float], *,
    frames: int, channels: int, sr: int, elapsed: float, tags: TrackTags | None, run_id: str, version: str,
) -> list[StemRecord]:
    """One ok row per stem from its level sums (sum of squares, peak), whole or streamed."""
    total, now = sum(energy.values()), utc_now()
    levels = {name: _level_db(math.sqrt(energy[name] / max(frames * channels, 1))) for name in uris}
    return [
        unit.record(
            STATUS_OK, run_id=run_id, version=version, created_at=now, tags=tags,
            stem=name,
            stem_uri=uri,
            sample_rate=output_rate(job.audio.format, sr),
            channels=int(channels),
            duration_s=frames / sr,
            stem_rms_db=levels[name],
            stem_peak_db=_level_db(peak[name]),
            energy_share=energy[name] / total if total > 0 else None,
            warning=_silence_warning(name, levels),
            processing_s=elapsed,
        )
        for name, uri in uris.items()
    ]


#: A stem quieter than this (RMS, dBFS) beside one louder than ``_AUDIBLE_DB`` is flagged:
#: the operator put nothing in it (e.g. a grouping that gave it no component).
_SILENT_DB = -90.0
_AUDIBLE_DB = -60.0


def sum_of_squares(a: np.ndarray, chunk: int = 1 << 20) -> float:
    """Sum of squares in float64, a chunk at a time: no float64 copy of a whole stem (twice
    its size, 127 MB for 3 minutes of stereo)."""
    # np.sum's pairwise summation, not a BLAS dot: the same sums in every process (a dot's
    # last bits depend on the buffer's alignment), so every runner writes the same rows.
    flat = a.reshape(-1)
    return float(sum(np.sum(np.square(flat[i:i + chunk], dtype=np.float64)) for i in range(0, flat.size, chunk)))


def peak_of(a: np.ndarray) -> float:
    """Largest absolute sample, without an ``abs`` copy of the stem."""
    return float(max(a.max(), -a.min())) if a.size else 0.0


def _silence_warning(name: str, levels: dict[str, float]) -> str | None:
    """The row's warning when this stem is silent and another stem of the unit is not, or,
    on every row of the unit, when all are (a silent input: its stems are written, silent)."""
    if max(levels.values()) <= _SILENT_DB:
        if name == min(levels):  # logged once per unit
            _LOG.warning("silent input: every stem is at or below %.0f dBFS RMS", _SILENT_DB)
        return f"silent input: every stem is at or below {_SILENT_DB:.0f} dBFS RMS (the track holds no audible signal)"
    others = [level for other, level in levels.items() if other != name]
    if levels[name] <= _SILENT_DB and others and max(others) > _AUDIBLE_DB:
        _LOG.warning("stem %r is silent (%.0f dBFS) while the others are not", name, levels[name])
        return f"silent stem: {levels[name]:.0f} dBFS RMS while the loudest other stem is at {max(others):.0f} dBFS"
    return None


def _commit(
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
            with _guarded(guard, uri):
                write_feature_part(uri, features)
        part = part_uri(output, unit.label, unit.track_id)
        with _guarded(guard, part):
            write_part(part, records)
    except UnitCancelled:
        raise
    except Exception as exc:
        _LOG.exception("could not write the metadata part of %s / %s", unit.track_id, unit.label)
        raise PartNotWritten(f"{unit.track_id} / {unit.label}") from exc
    _clear_dead_letter(unit, output)
    if features is not None and feature_rows_out is not None:
        feature_rows_out.extend(features)


#: Output formats a stem can be written in blocks to (Opus resamples: whole tracks only).
_STREAMED_FORMATS = ("flac", "wav", "mp3")


def can_stream(job: JobConfig, operators: list[Operator]) -> bool:
    """Whether long tracks of this job can be separated as streams of blocks: every operator
    works in blocks (all but the oracles), and the job neither resamples nor writes Opus."""
    if job.audio.sample_rate is not None or job.audio.format not in _STREAMED_FORMATS:
        return False
    return all(op.works_in_blocks for op in operators)


def streams(job: JobConfig, operators: list[Operator], size: int | None) -> bool:
    """Whether this track is streamed because of its size: it is larger than
    ``job.stream_above_mb`` (``size``, from :func:`source_size`) and :func:`can_stream`.
    (Tracks longer than ``job.stream_above_s`` are streamed too: :func:`decode_track` says
    so from their header.) Streamed tracks use memory bounded by the block length
    (``job.block_s``) whatever their length; see :mod:`sepops.blocks` for how each operator
    works in blocks."""
    limit = job.job.stream_above_mb
    return limit is not None and (size or 0) > limit * 1e6 and can_stream(job, operators)


def read_source_tags(source_uri: str) -> TrackTags:
    """The source's tags, read through a file object (never the whole file); empty when it
    cannot be opened (its decoding says why)."""
    try:
        fs, path = fsspec.core.url_to_fs(source_uri)
        with fs.open(path, "rb") as handle:
            return read_tags(handle)
    except Exception:  # noqa: BLE001
        return TrackTags()


def stream_unit(
    unit: Unit, job: JobConfig, output: str, operator: Operator, *, run_id: str, version: str,
    tags: TrackTags | None = None, size: int | None = None, guard: WriteGuard | None = None,
    feature_rows_out: list | None = None,
) -> tuple[list[StemRecord], float]:
    """:func:`separate_unit` for a track read, separated and written block by block
    (``tags`` from :func:`read_source_tags`, ``size`` from :func:`source_size`); the
    features are computed block by block too (:class:`sepops.features.FeatureExtractor`).

    Returns
    -------
    records, duration_s
        One ok row per stem or the unit's error row, and the track's length in seconds.
    """
    from sepops.blocks import separate_blocks
    from sepops.stream import open_stream, open_writer

    started = time.perf_counter()
    limits, settings = job.job, job.audio

    @contextlib.contextmanager
    def passes():
        # The track from its start, as the job reads it (each operator's fitting passes too).
        with open_stream(unit.source_uri, max_duration_s=limits.max_duration_s) as stream:
            _check_channels(unit.source_uri, stream.channels, limits.max_channels)
            yield _MonoStream(stream) if settings.mono and stream.channels > 1 else stream

    try:
        try:
            _check_size(unit.source_uri, size, limits.max_file_mb)
            operator = operator.fit_stream(passes)  # a global model (ICA) from whole-track passes
            if guard is not None:
                guard.check()
            with passes() as stream:
                channels = stream.channels
                sr = stream.sr
                uris = {name: _unit_stem_uri(unit, job, output, name) for name in operator.stem_names}
                energy = dict.fromkeys(uris, 0.0)
                peak = dict.fromkeys(uris, 0.0)
                frames = 0
                extractor = _feature_extractor(job, list(uris), sr, channels)
                with contextlib.ExitStack() as writers:
                    out = {
                        name: writers.enter_context(open_writer(
                            uri, sr, channels, format=settings.format, subtype=settings.encoder_subtype,
                            commit_context=lambda uri=uri: _guarded(guard, uri),
                        ))
                        for name, uri in uris.items()
                    }
                    for _, stems in separate_blocks(operator, stream, block_s=limits.block_s):
                        if guard is not None:
                            guard.check()
                        n = next(iter(stems.values())).shape[1]
                        stems = _checked(stems, (channels, n), tags)
                        if set(stems) != set(uris):
                            raise UnitFailed("invalid_output", f"stems {sorted(stems)}, expected {sorted(uris)}", tags=tags)
                        if extractor is not None:
                            extractor.add(stems)
                        for name, block in stems.items():
                            out[name].write(block)
                            energy[name] += sum_of_squares(block)
                            peak[name] = max(peak[name], peak_of(block))
                        frames += n
        except AudioError as exc:
            raise UnitFailed(exc.kind, exc.message, traceback_text="", tags=tags) from None
        except (UnitFailed, UnitCancelled):
            raise
        except Exception as exc:
            raise UnitFailed("operator_error", f"{type(exc).__name__}: {exc}", tags=tags) from exc
    except UnitFailed as failure:
        return fail_unit(unit, output, failure, run_id=run_id, version=version, guard=guard), 0.0
    if frames == 0:
        failure = UnitFailed("empty", "file holds no decodable samples", traceback_text="", tags=tags)
        return fail_unit(unit, output, failure, run_id=run_id, version=version, guard=guard), 0.0
    records = _ok_records(
        unit, job, uris, energy, peak, frames=frames, channels=channels, sr=sr,
        elapsed=time.perf_counter() - started, tags=tags, run_id=run_id, version=version,
    )
    _commit(unit, output, records, guard, _unit_feature_rows(unit, job, extractor, uris, sr, run_id), feature_rows_out)
    return records, frames / sr


class _MonoStream:
    """A stream's blocks averaged over their channels (``audio.mono``)."""

    def __init__(self, stream):
        self.sr, self.channels, self.frames = stream.sr, 1, stream.frames
        self._stream = stream

    def read(self, n: int) -> np.ndarray:
        return self._stream.read(n).mean(axis=0, keepdims=True)


def _checked(stems: Any, shape: tuple[int, ...], tags: TrackTags | None) -> dict[str, np.ndarray]:
    """The operator's stems as float32 arrays shaped like the mixture, all samples finite."""
    if not isinstance(stems, dict) or not stems:
        raise UnitFailed("invalid_output", f"operator returned {type(stems).__name__}, not a dict of stems", tags=tags)
    out = {}
    for name, stem in stems.items():
        stem = np.atleast_2d(np.asarray(stem, dtype=np.float32))
        if stem.shape != tuple(shape):
            raise UnitFailed(
                "invalid_output", f"stem {name!r} has shape {stem.shape}, mixture {tuple(shape)}", tags=tags
            )
        if not np.isfinite(stem).all():
            raise UnitFailed("invalid_output", f"stem {name!r} holds NaN or infinite samples", tags=tags)
        out[name] = stem
    return out


def _level_db(value: float) -> float:
    return max(_DB_FLOOR, 20.0 * math.log10(value)) if value > 0 else _DB_FLOOR


def _clear_dead_letter(unit: Unit, output: str) -> None:
    fs, path = fsspec.core.url_to_fs(dead_letter_uri(output, unit.label, unit.track_id))
    try:
        fs.rm_file(path)
    except (FileNotFoundError, OSError):
        pass
