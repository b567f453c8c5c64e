"""``sepflow evaluate``: score a run's stems against reference stems, as a Beam job.

The job reads the estimates from the runs' published metadata (``<run>/metadata/*.parquet``,
rows with status ok or skipped), pairs every separated track with its reference track, and
writes one row per (track, operator, stem) with BSS Eval v3 SDR/SIR/SAR (whole signal, and
the median over 1 s frames) and SI-SDR::

    <output>/evaluation/evaluation-<evaluation_id>-part-<shard>.parquet   EVALUATION_SCHEMA
    <output>/evaluation_summary/summary-<evaluation_id>.json              the summary table

The graph is one linear chain with one leaf (the DaskRunner runs only a graph's last branch)::

    Create(metadata files) -> Reshuffle -> FlatMap(read rows) -> Map(key by reference track)
      -> GroupByKey -> ParDo(evaluate the reference track's units and oracles)
      -> Map(shard) -> GroupByKey -> ParDo(write a shard) -> CombineGlobally(counts) -> Map(write)

Keying by the *reference* track (not the estimate's track id) decodes each reference once
and computes each oracle once per reference group, however many runs or mixtures
(``mixture.flac`` and ``mixture_stereo.flac``) were separated from it. After the pipeline the
driver moves the staged shards into ``<output>/evaluation/`` and then removes the earlier
evaluation's files there (as :func:`pipelines.metadata.publish` does for metadata).
"""
from __future__ import annotations

import argparse
import itertools
import json
import logging
import os
import posixpath
import sys
import time
import traceback
import uuid
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

import fsspec
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from sepops import metrics
from sepops.audio import write_bytes_atomic
from sepops.metrics import align, score_stems

from .driver import (
    ProgressLine,
    job_dir,
    make_runner,
    pipeline_options,
    remove_job_dir,
    write_progress,
)
from .io import join_uri
from .tables import (
    EVALUATION_DIR,
    EVALUATION_SCHEMA,
    METADATA_DIR,
    STATUS_ERROR,
    STATUS_OK,
    publish_shards,
    read_table_folder,
    shard_of,
)
from .tables import EVALUATION_SUMMARY_DIR as SUMMARY_DIR

__all__ = [
    "EVALUATION_DIR",
    "EVALUATION_SCHEMA",
    "ORACLES",
    "ReferenceSet",
    "ReferenceTrack",
    "UsageError",
    "add_arguments",
    "best_assignment",
    "evaluate",
    "main",
    "read_evaluation",
    "summarize",
    "summary_markdown",
]

_LOG = logging.getLogger("sepflow")

#: The oracle baselines ``--oracles`` may name: the ideal masks and the mixture itself.
ORACLES = ("ibm", "irm", "mix")
#: Extensions of reference audio files in a folder of references.
AUDIO_EXTENSIONS = (".flac", ".wav", ".mp3", ".ogg", ".opus", ".m4a", ".aac", ".aif", ".aiff", ".wma", ".alac")
MATCH_NAME = "name"
MATCH_BEST = "best_assignment"
MATCH_ORACLE = "oracle"


_METRIC_COLUMNS = ("sdr", "sir", "sar", "sdr_frames_median", "sir_frames_median", "sar_frames_median", "si_sdr")
_ESTIMATE_COLUMNS = ["track_id", "label", "operator", "stem", "stem_uri", "source_uri", "status"]


class UsageError(ValueError):
    """A bad flag or input of ``sepflow evaluate``: reported in one line, exit status 2."""


# --- references ---------------------------------------------------------------------------
@dataclass
class ReferenceTrack:
    """One piece of the references: its stems, and the groups of stems that sum to its mixture.

    Attributes
    ----------
    name : str
        The piece's id (a manifest's ``id``, or its folder relative to the references root).
    stems : dict of str -> str
        Stem name -> URI, in the references' order.
    groups : list of tuple of str
        Sets of stems a separation may target (a manifest's ``stems`` and ``hpss_stems``);
        empty without a manifest, where every subset of ``stems`` is a candidate.
    """

    name: str
    stems: dict[str, str]
    groups: list[tuple[str, ...]] = field(default_factory=list)

    def candidate_groups(self, size: int) -> list[tuple[str, ...]]:
        """The reference groups an unsupervised unit of ``size`` stems may be assigned to:
        the manifest's first group of that size (its main split: a loop's accompaniment /
        lead, not its percussive / harmonic, which a unit matches only by name), else every
        subset of the track's stems of that size."""
        groups = [g for g in self.groups if len(g) == size]
        return groups[:1] or [tuple(c) for c in itertools.combinations(self.stems, size)]

    def group_of(self, stems: Iterable[str]) -> tuple[str, ...]:
        """The canonical order of a set of reference stems: a manifest group's when it is
        one, else the references' order (so one group is one oracle, however it was named)."""
        wanted = set(stems)
        for g in self.groups:
            if set(g) == wanted:
                return tuple(g)
        return tuple(s for s in self.stems if s in wanted)


class ReferenceSet:
    """The reference tracks of ``--references``: a folder or a ``manifest.json``.

    Layouts of a folder (any audio extension; files named ``mixture*`` are not stems):

    - ``<piece>/stems/<stem>.flac`` (the validation set's layout), and
    - ``<track>/<stem>.wav`` (musdb's).

    A ``manifest.json`` (the validation set's) lists ``pieces[].files.stems`` and the stem
    groups ``stems`` and ``hpss_stems`` of each piece.
    """

    def __init__(self, uri: str, tracks: Mapping[str, ReferenceTrack], from_manifest: bool):
        self.uri = uri
        self.tracks = dict(tracks)
        self.from_manifest = from_manifest

    @classmethod
    def load(cls, uri: str) -> ReferenceSet:
        """Index the references at ``uri``; ``UsageError`` when there are none."""
        fs, path = fsspec.core.url_to_fs(uri)
        if path.endswith(".json"):
            return cls._from_manifest(uri, fs, path)
        try:
            is_dir = fs.isdir(path)
        except OSError as exc:
            raise UsageError(f"--references {uri}: cannot be read ({exc})") from exc
        if not is_dir:
            raise UsageError(f"--references {uri}: no such folder or manifest.json")
        return cls._from_folder(uri, fs, path)

    @classmethod
    def _from_manifest(cls, uri: str, fs, path: str) -> ReferenceSet:
        try:
            manifest = json.loads(fs.cat_file(path))
        except FileNotFoundError as exc:
            raise UsageError(f"--references {uri}: no such manifest") from exc
        except (OSError, ValueError) as exc:
            raise UsageError(f"--references {uri}: unreadable manifest ({exc})") from exc
        root = uri.rsplit("/", 1)[0] if "/" in uri else "."
        subsets = manifest.get("subsets", {}) if isinstance(manifest, dict) else {}
        tracks = {}
        for piece in manifest.get("pieces", []) if isinstance(manifest, dict) else []:
            files = (piece.get("files") or {}).get("stems") or {}
            if not piece.get("id") or not files:
                continue
            subset = subsets.get(piece.get("subset"), {})
            groups = []
            for key in ("stems", "hpss_stems"):
                group = piece.get(key) or subset.get(key)
                if group and all(s in files for s in group):
                    groups.append(tuple(group))
            stems = {name: join_uri(root, rel) for name, rel in files.items()}
            tracks[piece["id"]] = ReferenceTrack(piece["id"], stems, groups)
        if not tracks:
            raise UsageError(f"--references {uri}: the manifest lists no pieces with files.stems")
        return cls(uri, tracks, from_manifest=True)

    @classmethod
    def _from_folder(cls, uri: str, fs, path: str) -> ReferenceSet:
        root = path.rstrip("/")
        stems: dict[str, dict[str, str]] = {}
        for file in sorted(fs.find(root)):
            rel = file[len(root):].lstrip("/")
            base, ext = posixpath.splitext(rel)
            if ext.lower() not in AUDIO_EXTENSIONS:
                continue
            parts = base.split("/")
            name = parts[-1]
            if name.startswith("mixture") or len(parts) < 2:
                continue
            folder = parts[:-2] if len(parts) >= 3 and parts[-2] == "stems" else parts[:-1]
            if not folder:
                continue
            stems.setdefault("/".join(folder), {})[name] = join_uri(uri.rstrip("/"), rel)
        if not stems:
            raise UsageError(
                f"--references {uri}: no reference stems found (expected <track>/stems/<stem>.flac "
                "or <track>/<stem>.wav)"
            )
        return cls(uri, {name: ReferenceTrack(name, s) for name, s in stems.items()}, from_manifest=False)

    def pair(self, track_id: str) -> ReferenceTrack | None:
        """The reference track of an estimate: the longest prefix folder of ``track_id``
        that is a reference track (``loop_1101/mixture`` -> ``loop_1101``), or ``None``."""
        parts = track_id.split("/")
        for n in range(len(parts), 0, -1):
            found = self.tracks.get("/".join(parts[:n]))
            if found is not None:
                return found
        return None


def best_assignment(
    track: ReferenceTrack, references: Mapping[str, np.ndarray], estimates: Mapping[str, np.ndarray]
) -> dict[str, str]:
    """Estimate stem -> reference stem over the track's candidate groups
    (:meth:`ReferenceTrack.candidate_groups`; :func:`sepops.metrics.best_assignment`)."""
    return metrics.best_assignment(references, estimates, track.candidate_groups(len(estimates)))


# --- the per-reference-track work -----------------------------------------------------------
def _row(**values) -> dict:
    row = {name: None for name in EVALUATION_SCHEMA.names}
    row.update(values)
    return row


class _AudioCache:
    """Decoded files of one reference track's evaluation (references are read once)."""

    def __init__(self):
        self._audio: dict[str, tuple[np.ndarray, int]] = {}

    def load(self, uri: str) -> tuple[np.ndarray, int]:
        from sepops.audio import load_audio

        if uri not in self._audio:
            self._audio[uri] = load_audio(uri)
        return self._audio[uri]


def _error_rows(rows: list[dict], common: dict, message: str) -> list[dict]:
    return [
        _row(**common, track_id=r["track_id"], label=r["label"], operator=r["operator"], stem=r["stem"],
             estimate_uri=r["stem_uri"], is_oracle=False, status=STATUS_ERROR, error_message=message)
        for r in rows
    ]


def _evaluate_unit(track: ReferenceTrack, rows: list[dict], cache: _AudioCache, common: dict):
    """Score one (track, label) unit; return its rows and the reference group it was matched to."""
    names = [r["stem"] for r in rows]
    if len(set(names)) != len(names):
        raise ValueError(f"the run lists stems {names} twice for this track")
    if set(names) <= set(track.stems):
        matching = MATCH_NAME
        mapping = {n: n for n in names}
        group = track.group_of(names)
    else:
        matching = MATCH_BEST
        if len(names) > len(track.stems):
            raise ValueError(
                f"{len(names)} estimated stems {names} but the reference track {track.name} has "
                f"{len(track.stems)}: {list(track.stems)}"
            )
        mapping = None
    by_stem = {r["stem"]: r for r in rows}
    if mapping is None:
        candidates = sorted({s for g in track.candidate_groups(len(names)) for s in g})
        refs, ests, sr = align({s: cache.load(track.stems[s]) for s in candidates},
                               {n: cache.load(by_stem[n]["stem_uri"]) for n in names})
        mapping = best_assignment(track, refs, ests)
        group = track.group_of(mapping.values())
    refs, ests, sr = align({s: cache.load(track.stems[s]) for s in group},
                           {n: cache.load(by_stem[n]["stem_uri"]) for n in names})
    # The group's references all take part (interference); unmatched ones get no estimate row.
    inverse = {ref: est for est, ref in mapping.items()}
    scored = [s for s in group if s in inverse]
    scores = score_stems({s: refs[s] for s in scored}, {s: ests[inverse[s]] for s in scored}, sr)
    out = []
    for name in names:
        ref = mapping[name]
        r = by_stem[name]
        out.append(_row(
            **common, **scores[ref], track_id=r["track_id"], label=r["label"], operator=r["operator"],
            stem=name, reference_stem=ref, matching=matching, is_oracle=False, estimate_uri=r["stem_uri"],
            reference_uri=track.stems[ref], status=STATUS_OK,
        ))
    return out, group


def _choose_mixture(mixtures: Iterable[tuple[str, str]], channels: int) -> tuple[str, str]:
    """The (track_id, mixture uri) an oracle separates: one with the references' channel
    count when there is one, then the first by URI (deterministic across runs)."""
    from sepops.audio import audio_info

    def rank(item):
        try:
            return (audio_info(item[1]).channels != channels, item[1])
        except Exception:  # noqa: BLE001 - an unreadable mixture is tried last, and reported
            return (True, item[1])

    return min(set(mixtures), key=rank)


def _evaluate_oracles(track, group, mixtures, oracles, cache, common) -> list[dict]:
    """The oracle rows of one reference group: ibm / irm on the mixture with the true stems,
    and ``mix`` (the mixture as every stem's estimate, the floor)."""
    from sepops import get_operator

    ref_audio = {s: cache.load(track.stems[s]) for s in group}
    channels = next(iter(ref_audio.values()))[0].shape[0]
    track_id, mixture_uri = _choose_mixture(mixtures, channels)
    out = []
    for oracle in oracles:
        base = dict(common, track_id=track_id, label=oracle, operator=oracle, reference_track=track.name,
                    matching=MATCH_ORACLE, is_oracle=True, estimate_uri=mixture_uri)
        try:
            mix, mix_sr = cache.load(mixture_uri)
            refs, mixed, sr = align(ref_audio, {"mixture": (mix, mix_sr)})
            mixture = mixed["mixture"]
            if oracle == "mix":
                estimates = {s: mixture for s in group}
            else:
                # The masks need the true stems shaped like the mixture (mono stems broadcast).
                operator = get_operator(oracle, stems=list(group))
                separated = operator.separate(mixture.astype(np.float32), sr,
                                              references={s: refs[s].astype(np.float32) for s in group})
                estimates = {s: np.asarray(separated[s], dtype=np.float64)[:, : mixture.shape[1]] for s in group}
            refs, estimates, sr = align({s: (refs[s], sr) for s in group}, {s: (estimates[s], sr) for s in group})
            scores = score_stems(refs, estimates, sr)
            out += [_row(**base, **scores[s], stem=s, reference_stem=s, reference_uri=track.stems[s],
                         status=STATUS_OK) for s in group]
        except Exception as exc:  # noqa: BLE001 - one failed oracle is rows, not a failed job
            out += [_row(**base, stem=s, reference_stem=s, reference_uri=track.stems[s], status=STATUS_ERROR,
                         error_message=f"oracle {oracle} on {mixture_uri}: {type(exc).__name__}: {exc}")
                    for s in group]
    return out


def evaluate_reference_track(
    key: str, estimate_rows: Iterable[dict], references: ReferenceSet, oracles: Sequence[str], evaluation_id: str
) -> list[dict]:
    """All evaluation rows of one reference track (or of one unpaired track id).

    Parameters
    ----------
    key : str
        ``ref:<reference track>``, or ``none:<track id>`` for a track with no reference.
    estimate_rows : iterable of dict
        The runs' metadata rows paired with it, each with ``run`` (the ``--estimates`` index).
    references : ReferenceSet
    oracles : sequence of str
        Names from :data:`ORACLES`, computed once per reference group the units matched.
    evaluation_id : str

    Returns
    -------
    list of dict
        Rows of ``EVALUATION_SCHEMA``; failures are error rows naming the file and cause.
    """
    common = {"evaluation_id": evaluation_id, "created_at": datetime.now(UTC)}
    units: dict[tuple, list[dict]] = {}
    for r in estimate_rows:
        units.setdefault((r["run"], r["track_id"], r["label"]), []).append(r)
    kind, _, name = key.partition(":")
    if kind != "ref":
        tried = ", ".join("/".join(name.split("/")[:n]) for n in range(name.count("/") + 1, 0, -1))
        message = f"no reference track for track id {name!r} in {references.uri} (tried {tried})"
        return [row for unit in units.values() for row in _error_rows(unit, common, message)]
    track = references.tracks[name]
    common["reference_track"] = track.name
    cache = _AudioCache()
    out: list[dict] = []
    mixtures_of_group: dict[tuple[str, ...], set[tuple[str, str]]] = {}
    for unit_key in sorted(units):
        rows = sorted(units[unit_key], key=lambda r: r["stem"])
        try:
            unit_rows, group = _evaluate_unit(track, rows, cache, common)
        except Exception as exc:  # noqa: BLE001 - a bad unit is error rows, never a crash
            _LOG.debug("evaluation of %s failed:\n%s", unit_key, traceback.format_exc())
            files = ", ".join(r["stem_uri"] for r in rows)
            out += _error_rows(rows, common, f"{type(exc).__name__}: {exc} (estimates {files}; references "
                                             f"{', '.join(track.stems.values())})")
            continue
        out += unit_rows
        mixtures_of_group.setdefault(group, set()).update((r["track_id"], r["source_uri"]) for r in rows)
    for group in sorted(mixtures_of_group):
        out += _evaluate_oracles(track, group, mixtures_of_group[group], oracles, cache, common)
    return out


# --- the Beam job -------------------------------------------------------------------------
def _staging_dir(output: str, evaluation_id: str) -> str:
    return join_uri(job_dir(output, evaluation_id), EVALUATION_DIR)


def _read_estimates(item: tuple[int, str]) -> Iterable[dict]:
    """The usable rows (ok or skipped, with a stem file) of one metadata file of run ``item[0]``."""
    run, uri = item
    fs, path = fsspec.core.url_to_fs(uri)
    with fs.open(path, "rb") as f:
        table = pq.read_table(f, columns=_ESTIMATE_COLUMNS)
    for row in table.to_pylist():
        if row["status"] in ("ok", "skipped") and row["stem_uri"] and row["stem"]:
            row["run"] = run
            yield row


def _make_dofns():
    """The DoFns, defined on first use: importing this module must not import Beam
    (``sepflow report`` reads ``EVALUATION_SCHEMA`` without it)."""
    import apache_beam as beam

    class KeyByReferenceFn(beam.DoFn):
        """(reference key, row): the references are indexed once per worker."""

        def __init__(self, references_uri: str):
            self.references_uri = references_uri

        def setup(self):
            self.references = ReferenceSet.load(self.references_uri)

        def process(self, row):
            track = self.references.pair(row["track_id"])
            yield (f"ref:{track.name}" if track else f"none:{row['track_id']}", row)

    class EvaluateFn(beam.DoFn):
        def __init__(self, references_uri, oracles, output, evaluation_id):
            self.references_uri, self.oracles = references_uri, list(oracles)
            self.output, self.evaluation_id = output, evaluation_id

        def setup(self):
            self.references = ReferenceSet.load(self.references_uri)
            self.writer = uuid.uuid4().hex
            self.counts = {"ok": 0, "error": 0, "skipped": 0}

        def process(self, keyed):
            key, rows = keyed
            out = evaluate_reference_track(key, list(rows), self.references, self.oracles, self.evaluation_id)
            units = {(r["track_id"], r["label"]): r["status"] for r in out if r["status"] == STATUS_ERROR}
            units.update({(r["track_id"], r["label"]): STATUS_OK for r in out
                          if r["status"] == STATUS_OK and (r["track_id"], r["label"]) not in units})
            for status in units.values():
                self.counts[status] += 1
            write_progress(self.output, self.evaluation_id, self.writer, self.counts)
            yield from out

    class WriteShardFn(beam.DoFn):
        def __init__(self, output, evaluation_id):
            self.output, self.evaluation_id = output, evaluation_id

        def process(self, keyed):
            shard, rows = keyed
            rows = list(rows)
            table = pa.Table.from_pylist(rows, schema=EVALUATION_SCHEMA).sort_by(
                [("reference_track", "ascending"), ("label", "ascending"), ("track_id", "ascending"),
                 ("stem", "ascending")]
            )
            sink = pa.BufferOutputStream()
            pq.write_table(table, sink, compression="zstd")
            uri = join_uri(_staging_dir(self.output, self.evaluation_id), f"part-{shard:05d}.parquet")
            write_bytes_atomic(uri, sink.getvalue().to_pybytes())
            yield {"rows": len(rows), "errors": sum(r["status"] == STATUS_ERROR for r in rows), "shards": 1}

    return KeyByReferenceFn, EvaluateFn, WriteShardFn


def _sum_counts(counts: Iterable[dict]) -> dict:
    total = {"rows": 0, "errors": 0, "shards": 0}
    for c in counts:
        for k in total:
            total[k] += c[k]
    return total


def build_pipeline(metadata_files, references_uri, oracles, output, evaluation_id, shards, options, runner=None):
    """The evaluation's graph: one linear chain (see the module's docstring). It holds the
    runs' metadata file names (a few per run), never the list of tracks."""
    import apache_beam as beam

    key_fn, evaluate_fn, write_fn = _make_dofns()
    done_uri = join_uri(job_dir(output, evaluation_id), "done.json")
    pipeline = beam.Pipeline(runner=runner, options=options)
    _ = (
        pipeline
        | "MetadataFiles" >> beam.Create(metadata_files)
        | "SpreadFiles" >> beam.Reshuffle()
        | "ReadEstimates" >> beam.FlatMap(_read_estimates)
        | "KeyByReference" >> beam.ParDo(key_fn(references_uri))
        | "GroupByReference" >> beam.GroupByKey()
        | "Evaluate" >> beam.ParDo(evaluate_fn(references_uri, oracles, output, evaluation_id))
        | "ByShard" >> beam.Map(lambda r: (shard_of(r["reference_track"] or r["track_id"], shards), r))
        | "GroupShards" >> beam.GroupByKey()
        | "WriteShards" >> beam.ParDo(write_fn(output, evaluation_id))
        | "Count" >> beam.CombineGlobally(_sum_counts)
        | "WriteDone" >> beam.Map(lambda c: write_bytes_atomic(done_uri, json.dumps(c).encode("utf-8")))
    )
    return pipeline


def _metadata_files(estimates: Sequence[str]) -> list[tuple[int, str]]:
    """(run index, metadata file) of every ``--estimates``: a listing of each run's shards."""
    files = []
    for index, run in enumerate(estimates):
        fs, path = fsspec.core.url_to_fs(join_uri(run, METADATA_DIR))
        try:
            found = sorted(p for p in fs.ls(path, detail=False) if p.endswith(".parquet"))
        except (FileNotFoundError, NotADirectoryError):
            found = []
        if not found:
            raise UsageError(f"--estimates {run}: no published metadata ({join_uri(run, METADATA_DIR)}/*.parquet); "
                             "is it the --output of a finished sepflow run?")
        files += [(index, fs.unstrip_protocol(p) if "://" in run else p) for p in found]
    return files


def _publish(output: str, evaluation_id: str) -> tuple[list[str], list[str]]:
    """Move the staged shards into ``<output>/evaluation/``; return them and the earlier
    evaluations' files there (tables and summaries), which go once the new summary is written."""
    return publish_shards(
        _staging_dir(output, evaluation_id), join_uri(output, EVALUATION_DIR), f"evaluation-{evaluation_id}",
        old_suffixes=(".parquet", ".json"),
    )


def _earlier_summaries(output: str, keep: str) -> list[str]:
    fs, path = fsspec.core.url_to_fs(join_uri(output, SUMMARY_DIR))
    _, keep_path = fsspec.core.url_to_fs(keep)
    try:
        return [p for p in fs.ls(path, detail=False) if p.endswith(".json") and p != keep_path]
    except FileNotFoundError:
        return []


def read_evaluation(output: str) -> pa.Table:
    """The published evaluation table of ``output`` (``<output>/evaluation/*.parquet``)."""
    return read_table_folder(join_uri(output, EVALUATION_DIR), EVALUATION_SCHEMA)


# --- the summary --------------------------------------------------------------------------
def summarize(table: pa.Table) -> list[dict]:
    """The summary of an evaluation table.

    Parameters
    ----------
    table : pyarrow.Table
        Rows of ``EVALUATION_SCHEMA`` (at least the columns used here).

    Returns
    -------
    list of dict
        Per (label, operator, stem) of the ok rows: ``tracks``, ``reference_stems`` (reference
        stem -> tracks matched to it), ``sdr_mean``, ``sdr_median``, ``sdr_frames_median`` (the
        median over tracks of each track's median over 1 s frames), ``sir_mean``, ``sar_mean``,
        ``si_sdr_mean`` (dB; non-finite values left out). Blind operators first, then oracles;
        each by label and stem.
    """
    columns = table.select(["label", "operator", "stem", "reference_stem", "is_oracle", "status", "sdr",
                            "sdr_frames_median", "sir", "sar", "si_sdr"]).to_pydict()
    groups: dict[tuple, dict[str, list]] = {}
    for i, status in enumerate(columns["status"]):
        if status != STATUS_OK:
            continue
        key = (bool(columns["is_oracle"][i]), columns["label"][i], columns["operator"][i], columns["stem"][i])
        values = groups.setdefault(
            key, {m: [] for m in ("reference_stem", "sdr", "sdr_frames_median", "sir", "sar", "si_sdr")}
        )
        for m in values:
            values[m].append(columns[m][i])

    def stat(values, fn):
        return metric_stat(values, fn)

    summary = []
    for (is_oracle, label, operator, stem), v in sorted(groups.items()):
        # Best-assignment stems (ICA's source_1) may match different references per track.
        matched = dict(sorted(Counter(v["reference_stem"]).items()))
        summary.append({
            "label": label, "operator": operator, "stem": stem, "is_oracle": is_oracle, "tracks": len(v["sdr"]),
            "reference_stems": matched,
            "sdr_mean": stat(v["sdr"], np.mean), "sdr_median": stat(v["sdr"], np.median),
            "sdr_frames_median": stat(v["sdr_frames_median"], np.median),
            "sir_mean": stat(v["sir"], np.mean), "sar_mean": stat(v["sar"], np.mean),
            "si_sdr_mean": stat(v["si_sdr"], np.mean),
        })
    return summary


def metric_stat(values: Iterable[float | None], fn=np.mean) -> float | None:
    """A statistic over tracks of one metric, as every table of sepflow shows it: missing
    values (None, NaN) are left out, infinite ones stay in, and a result that is not finite
    is None, shown as "-" (:func:`format_db`).

    The ``mix`` oracle's SAR is the case: the mixture as its own estimate has no artifacts,
    so its SAR is unbounded, +inf on tracks where the projection leaves nothing and 140-150 dB
    of rounding noise on others; one infinite track makes the mean "-" rather than the mean of
    the others. ``sepflow report``'s table follows the same rule (pandas' mean skips NaN and
    keeps inf).
    """
    kept = np.asarray([v for v in values if v is not None and not np.isnan(v)], dtype=np.float64)
    if not kept.size:
        return None
    result = float(fn(kept))
    return result if np.isfinite(result) else None


def format_db(value: float | None) -> str:
    """A dB figure of a table: two decimals, or "-" where there is none (or it is not finite)."""
    return "-" if value is None or not np.isfinite(value) else f"{value:.2f}"


_SUMMARY_HEADER = ["label", "operator", "stem", "reference stem", "tracks", "SDR mean", "SDR median",
                   "SDR 1 s frames (median)", "SIR mean", "SAR mean", "SI-SDR mean"]
_TEXT_COLUMNS = 4


def _summary_cells(row: dict) -> list[str]:
    db = format_db
    label = f"{row['label']} (oracle)" if row["is_oracle"] and row["label"] != "mix" else row["label"]
    if row["label"] == "mix":
        label = "mix (mixture as estimate)"
    matched = row["reference_stems"]
    reference = next(iter(matched)) if len(matched) == 1 else ", ".join(f"{k} ({n})" for k, n in matched.items())
    return [label, row["operator"], row["stem"], reference, str(row["tracks"]), db(row["sdr_mean"]), db(row["sdr_median"]),
            db(row["sdr_frames_median"]), db(row["sir_mean"]), db(row["sar_mean"]), db(row["si_sdr_mean"])]


def summary_markdown(summary: list[dict]) -> str:
    """The summary as a Markdown table (dB; SDR/SIR/SAR are BSS Eval v3)."""
    lines = ["| " + " | ".join(_SUMMARY_HEADER) + " |",
             "|" + "---|" * _TEXT_COLUMNS + "---:|" * (len(_SUMMARY_HEADER) - _TEXT_COLUMNS)]
    lines += ["| " + " | ".join(_summary_cells(r)) + " |" for r in summary]
    return "\n".join(lines)


def summary_text(summary: list[dict]) -> str:
    """The summary as an aligned plain-text table."""
    rows = [_SUMMARY_HEADER] + [_summary_cells(r) for r in summary]
    widths = [max(len(r[i]) for r in rows) for i in range(len(_SUMMARY_HEADER))]
    return "\n".join(
        "  ".join(c.ljust(w) if i < _TEXT_COLUMNS else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths))) for r in rows
    )


# --- the driver ---------------------------------------------------------------------------
@dataclass
class EvaluationResult:
    """What an evaluation wrote: its id, output, rows and error rows, and the summary."""

    evaluation_id: str
    output: str
    rows: int
    errors: int
    summary: list[dict]
    error_messages: list[str]
    wall_s: float
    files: list[str]


def _new_evaluation_id() -> str:
    return f"{datetime.now(UTC):%Y%m%dT%H%M%SZ}-{uuid.uuid4().hex[:6]}"


def _parse_oracles(spec: str | None) -> list[str]:
    names = [s.strip() for s in (spec or "").split(",") if s.strip()]
    unknown = [n for n in names if n not in ORACLES]
    if unknown:
        raise UsageError(f"--oracles: unknown {', '.join(unknown)} (choose from {', '.join(ORACLES)})")
    return list(dict.fromkeys(names))


def _absolute(uri: str) -> str:
    uri = uri.rstrip("/") or uri
    return uri if "://" in uri else os.path.abspath(uri)


def evaluate(
    estimates: Sequence[str],
    references: str,
    *,
    oracles: Sequence[str] = (),
    output: str | None = None,
    beam_args: Sequence[str] = (),
    shards: int = 1,
    progress: bool = True,
    stream=None,
) -> EvaluationResult:
    """Run the evaluation job and publish its table and summary.

    Parameters
    ----------
    estimates : sequence of str
        Outputs of ``sepflow run`` (their ``metadata/`` is read).
    references : str
        A folder of reference stems or a ``manifest.json`` (see :class:`ReferenceSet`).
    oracles : sequence of str
        Any of :data:`ORACLES`.
    output : str, optional
        Where ``evaluation/`` is written; default the first of ``estimates``.
    beam_args : sequence of str
        Beam pipeline options (the runner defaults to the in-process FnApiRunner, named).
    shards : int
        Parquet files the table is written as.

    Raises
    ------
    UsageError
        Bad references, runs without metadata, unknown oracles: nothing ran.
    """
    started = time.perf_counter()
    stream = stream or sys.stderr
    if not estimates:
        raise UsageError("missing --estimates (the --output of a sepflow run)")
    estimates = [_absolute(e) for e in estimates]
    references = _absolute(references)
    oracles = _parse_oracles(",".join(oracles))
    output = _absolute(output or estimates[0])
    reference_set = ReferenceSet.load(references)  # validates before any work
    files = _metadata_files(estimates)
    evaluation_id = _new_evaluation_id()
    options = pipeline_options(beam_args, len(files))
    runner = make_runner(options)
    _LOG.info("evaluation %s: %d runs against %d reference tracks (%s) with %s -> %s", evaluation_id,
              len(estimates), len(reference_set.tracks), references, type(runner).__name__, output)
    pipeline = build_pipeline(files, references, oracles, output, evaluation_id, max(1, shards), options, runner)
    watcher = ProgressLine(output, evaluation_id, stream, 1.0 if "://" not in output else 5.0) if progress else None
    result = None
    try:
        if watcher:
            watcher.__enter__()
        result = pipeline.run()
        result.wait_until_finish()
    finally:
        if watcher:
            watcher.__exit__(None, None, None)
        client = getattr(result, "client", None)
        if client is not None:  # the DaskRunner leaves its Client open
            client.close()
    published, earlier = _publish(output, evaluation_id)
    table = (
        pa.concat_tables([_read_one(p, output) for p in published]) if published
        else EVALUATION_SCHEMA.empty_table()
    )
    summary = summarize(table)
    errors = [m for m, s in zip(table.column("error_message").to_pylist(), table.column("status").to_pylist())
              if s == STATUS_ERROR]
    # Beside the table, not in it: evaluation/ holds only Parquet, so it reads as a dataset.
    summary_uri = join_uri(output, SUMMARY_DIR, f"summary-{evaluation_id}.json")
    earlier += _earlier_summaries(output, summary_uri)
    record = {
        "evaluation_id": evaluation_id, "created_at": datetime.now(UTC).isoformat(), "estimates": list(estimates),
        "references": references, "oracles": list(oracles), "beam_args": list(beam_args),
        "rows": table.num_rows, "errors": len(errors), "first_errors": sorted(set(errors))[:20],
        "summary": summary,
    }
    write_bytes_atomic(summary_uri, json.dumps(record, indent=1, ensure_ascii=False).encode("utf-8"))
    # The new table and summary are in place: only now do the earlier evaluation's files go.
    fs, _ = fsspec.core.url_to_fs(output)
    for path in earlier:
        fs.rm_file(path)
    remove_job_dir(output, evaluation_id)
    _remove_empty_dirs(fs, [join_uri(output, "_sepflow", "runs"), join_uri(output, "_sepflow")])
    return EvaluationResult(evaluation_id, output, table.num_rows, len(errors), summary, sorted(set(errors)),
                            time.perf_counter() - started, published + [summary_uri])


def _read_one(path: str, output: str) -> pa.Table:
    fs, _ = fsspec.core.url_to_fs(output)
    with fs.open(path, "rb") as f:
        return pq.read_table(f, columns=["label", "operator", "stem", "reference_stem", "is_oracle", "status", "sdr",
                                         "sdr_frames_median", "sir", "sar", "si_sdr", "error_message"])


def _remove_empty_dirs(fs, uris: Sequence[str]) -> None:
    """Remove the staging folders the evaluation made when nothing else is in them (an output
    that is not a run's must not keep an empty ``_sepflow/``)."""
    for uri in uris:
        try:
            path = fsspec.core.url_to_fs(uri)[1]
            if not fs.ls(path, detail=False):
                fs.rmdir(path)
        except (FileNotFoundError, OSError):
            pass


# --- the command --------------------------------------------------------------------------
DESCRIPTION = """\
Score the stems of one or more `sepflow run` outputs against reference stems, as a Beam job.

Every separated track is paired with a reference track by its track id: the longest prefix
folder of the id that is a reference track (loop_1101/mixture -> loop_1101), or the id itself.
Stems are matched by name when all of an operator's stem names are reference stems; otherwise
(ICA's source_*, REPET's background/foreground, unsupervised NMF's repeating/non_repeating)
by the best assignment: the permutation with the highest mean SDR over the manifest's first
group of that size (a loop's accompaniment/lead), or, without a manifest, over every subset
of the track's reference stems of that size.

Scores per (track, operator, stem): BSS Eval v3 SDR/SIR/SAR over the whole signal and their
medians over 1 s frames (silent frames excluded), and SI-SDR. Estimates and references that
differ in channel count are both downmixed to mono; rates are matched with soxr.

Oracles (--oracles ibm,irm,mix): per reference track and per reference group its operators were
matched to, the ideal binary and ratio masks (the true stems' magnitudes, 2048-point STFT) applied
to the mixture the runs separated (one with the references' channel count first), and `mix`, the
mixture itself as every stem's estimate (the floor). Their rows have is_oracle = true.

References (--references):
  <folder>/<track>/stems/<stem>.flac   the validation set's layout (mixture*.flac are not stems)
  <folder>/<track>/<stem>.wav          musdb's layout (any audio extension)
  <folder>/manifest.json               a manifest of pieces[].files.stems, with stem groups
                                       `stems` (assignment's candidates) and `hpss_stems`

Output (default: the first --estimates):
  <output>/evaluation/evaluation-<id>-part-*.parquet   one row per (track, operator, stem)
  <output>/evaluation_summary/summary-<id>.json        the summary table printed at the end
Re-running replaces the previous evaluation's files there.

Any other flag must be a Beam pipeline option (a misspelled one stops the command, exit 2); the
default runner is the in-process FnApiRunner (--runner=DirectRunner), as for `sepflow run`.

example (from the checkout, with the validation set in ../shared/data):
  sepflow run --config configs/hpss.yaml --input '../shared/data/loop_*/mixture.flac' --output out/hpss
  sepflow evaluate --estimates out/hpss --references ../shared/data/manifest.json --oracles ibm,irm,mix
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The flags of ``sepflow evaluate`` (unknown ones are Beam pipeline options)."""
    parser.description = DESCRIPTION
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.add_argument("--estimates", action="append", default=[], metavar="RUN",
                        help="the --output of a sepflow run (repeat for several runs; their labels should differ)")
    parser.add_argument("--references", metavar="FOLDER_OR_MANIFEST",
                        help="reference stems: a folder (<track>/stems/<stem>.flac or <track>/<stem>.wav) "
                             "or a manifest.json")
    parser.add_argument("--oracles", default="", metavar="NAMES",
                        help=f"comma-separated baselines to add: {', '.join(ORACLES)} (ideal binary / ratio "
                             "mask from the true stems; the mixture itself as every stem)")
    parser.add_argument("-o", "--output", metavar="URI",
                        help="where evaluation/ is written (default: the first --estimates)")
    parser.add_argument("--markdown", action="store_true", help="print the summary as a Markdown table")
    parser.add_argument("--shards", type=int, default=1, help="Parquet files of the table (default 1)")
    parser.add_argument("--no-progress", "--no_progress", dest="progress", action="store_false",
                        help="do not print the live progress line on stderr")
    parser.add_argument("--strict", action="store_true", help="exit with status 3 when any row is an error")
    parser.add_argument("-v", "--verbose", action="store_true", help="log Beam's and sepflow's progress messages")


def main(args: argparse.Namespace, beam_args: list[str]) -> int:
    """Run ``sepflow evaluate``; return the exit status (0 ok, 2 usage error, 3 errors with --strict)."""
    missing = [flag for flag, value in (("--estimates", args.estimates), ("--references", args.references))
               if not value]
    if missing:
        print(f"sepflow evaluate: missing {', '.join(missing)}; see sepflow evaluate --help", file=sys.stderr)
        return 2
    try:
        result = evaluate(
            args.estimates, args.references, oracles=_parse_oracles(args.oracles), output=args.output,
            beam_args=beam_args, shards=args.shards, progress=args.progress,
        )
    except UsageError as exc:
        print(f"sepflow evaluate: {exc}", file=sys.stderr)
        return 2
    _print_result(result, args.markdown)
    if args.strict and result.errors:
        return 3
    return 0


def _print_result(result: EvaluationResult, markdown: bool) -> None:
    """The summary table on stdout, or, when no row was scored, the errors in its place (a
    table of headers only says nothing); the counts and the first errors on stderr."""
    shown = 10
    if result.summary:
        print(summary_markdown(result.summary) if markdown else summary_text(result.summary))
    else:
        print(f"no scores: all {result.rows} rows are errors:" if result.rows
              else "no scores: the runs have no separated stems to evaluate")
        for message in result.error_messages[:shown]:
            print(f"  {message}")
    print(f"[sepflow] evaluation {result.evaluation_id}: {result.rows} rows, {result.errors} errors, "
          f"{result.wall_s:.1f} s -> {join_uri(result.output, EVALUATION_DIR)}", file=sys.stderr)
    if result.summary:
        for message in result.error_messages[:shown]:
            print(f"[sepflow] error: {message}", file=sys.stderr)
    if len(result.error_messages) > shown:
        print(f"[sepflow] ... {len(result.error_messages) - shown} more distinct errors in the table's "
              "error_message column", file=sys.stderr)
