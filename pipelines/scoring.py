"""The scoring of one reference track, without Beam: its units' stems and its oracles.

:func:`evaluate_reference_track` turns the runs' metadata rows paired with one reference
track into rows of ``EVALUATION_SCHEMA``: each (run, track, label) unit's stems matched to
reference stems (by name, else by :func:`sepops.metrics.best_assignment`) and scored with
:func:`sepops.metrics.score_stems`, then the oracles of each reference group the units
matched. Every failure is error rows naming the files and the cause, never an exception.
"""
from __future__ import annotations

import logging
import traceback
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime

import numpy as np

from sepops import metrics
from sepops.metrics import align, score_stems

from .errors import UsageError
from .references import ReferenceSet, ReferenceTrack
from .tables import EVALUATION_SCHEMA, STATUS_ERROR, STATUS_OK

__all__ = [
    "MATCH_BEST",
    "MATCH_NAME",
    "MATCH_ORACLE",
    "ORACLES",
    "AudioCache",
    "evaluate_reference_track",
    "parse_oracles",
]

_LOG = logging.getLogger("sepflow")

#: The oracle baselines ``--oracles`` may name: the ideal masks and the mixture itself.
ORACLES = ("ibm", "irm", "mix")
MATCH_NAME = "name"
MATCH_BEST = "best_assignment"
MATCH_ORACLE = "oracle"


def parse_oracles(spec: str | None) -> list[str]:
    """The oracles of ``--oracles`` (comma-separated, duplicates dropped); ``UsageError``
    naming the unknown ones."""
    names = [s.strip() for s in (spec or "").split(",") if s.strip()]
    unknown = [n for n in names if n not in ORACLES]
    if unknown:
        raise UsageError(f"--oracles: unknown {', '.join(unknown)} (choose from {', '.join(ORACLES)})")
    return list(dict.fromkeys(names))


def _row(**values) -> dict:
    row = {name: None for name in EVALUATION_SCHEMA.names}
    row.update(values)
    return row


class AudioCache:
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


def _match(track: ReferenceTrack, names: list[str], by_stem: dict[str, dict], cache: AudioCache):
    """(matching, estimate stem -> reference stem, reference group) of one unit's stems: by
    name when all are reference stems, else the best assignment over the candidate groups."""
    if len(set(names)) != len(names):
        raise ValueError(f"the run lists stems {names} twice for this track")
    if set(names) <= set(track.stems):
        return MATCH_NAME, {n: n for n in names}, track.group_of(names)
    if len(names) > len(track.stems):
        raise ValueError(
            f"{len(names)} estimated stems {names} but the reference track {track.name} has "
            f"{len(track.stems)}: {list(track.stems)}"
        )
    groups = track.candidate_groups(len(names))
    candidates = sorted({s for g in groups for s in g})
    refs, ests, _ = align({s: cache.load(track.stems[s]) for s in candidates},
                          {n: cache.load(by_stem[n]["stem_uri"]) for n in names})
    mapping = metrics.best_assignment(refs, ests, groups)
    return MATCH_BEST, mapping, track.group_of(mapping.values())


def _evaluate_unit(track: ReferenceTrack, rows: list[dict], cache: AudioCache, common: dict):
    """Score one (track, label) unit; return its rows and the reference group it was matched to."""
    names = [r["stem"] for r in rows]
    by_stem = {r["stem"]: r for r in rows}
    matching, mapping, group = _match(track, names, by_stem, cache)
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


def _oracle_scores(oracle: str, group: tuple[str, ...], ref_audio: dict, mix_audio: tuple) -> dict:
    """The scores of one oracle's estimates of the group's stems from the mixture."""
    from sepops import get_operator

    refs, mixed, sr = align(ref_audio, {"mixture": mix_audio})
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
    return score_stems(refs, estimates, sr)


def _evaluate_oracles(track, group, mixtures, oracles, cache, common) -> list[dict]:
    """The oracle rows of one reference group: ibm / irm on the mixture with the true stems,
    and ``mix`` (the mixture as every stem's estimate, the floor)."""
    ref_audio = {s: cache.load(track.stems[s]) for s in group}
    channels = next(iter(ref_audio.values()))[0].shape[0]
    track_id, mixture_uri = _choose_mixture(mixtures, channels)
    out = []
    for oracle in oracles:
        base = dict(common, track_id=track_id, label=oracle, operator=oracle, reference_track=track.name,
                    matching=MATCH_ORACLE, is_oracle=True, estimate_uri=mixture_uri)
        try:
            scores = _oracle_scores(oracle, group, ref_audio, cache.load(mixture_uri))
            out += [_row(**base, **scores[s], stem=s, reference_stem=s, reference_uri=track.stems[s],
                         status=STATUS_OK) for s in group]
        except Exception as exc:  # noqa: BLE001 - one failed oracle is rows, not a failed job
            out += [_row(**base, stem=s, reference_stem=s, reference_uri=track.stems[s], status=STATUS_ERROR,
                         error_message=f"oracle {oracle} on {mixture_uri}: {type(exc).__name__}: {exc}")
                    for s in group]
    return out


def _unpaired_rows(name: str, units: dict[tuple, list[dict]], references: ReferenceSet, common: dict) -> list[dict]:
    """Error rows of a track id no reference track matches, naming the prefixes tried."""
    tried = ", ".join("/".join(name.split("/")[:n]) for n in range(name.count("/") + 1, 0, -1))
    message = f"no reference track for track id {name!r} in {references.uri} (tried {tried})"
    return [row for unit in units.values() for row in _error_rows(unit, common, message)]


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
        return _unpaired_rows(name, units, references, common)
    track = references.tracks[name]
    common["reference_track"] = track.name
    cache = AudioCache()
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
