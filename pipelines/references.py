"""The reference tracks ``sepflow evaluate`` scores against: a folder of stems or a manifest.

:class:`ReferenceSet` indexes ``--references`` (without Beam: the driver validates it before
the job starts, and each worker indexes it once); :class:`ReferenceTrack` is one piece, its
stems and the groups of stems a separation may target.
"""
from __future__ import annotations

import itertools
import json
import posixpath
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

import fsspec

from .errors import InputError
from .io import join_uri

__all__ = ["AUDIO_EXTENSIONS", "ReferenceSet", "ReferenceTrack"]

#: Extensions of reference audio files in a folder of references.
AUDIO_EXTENSIONS = (".flac", ".wav", ".mp3", ".ogg", ".opus", ".m4a", ".aac", ".aif", ".aiff", ".wma", ".alac")


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
        """Index the references at ``uri``; ``InputError`` when there are none."""
        fs, path = fsspec.core.url_to_fs(uri)
        if path.endswith(".json"):
            return cls._from_manifest(uri, fs, path)
        try:
            is_dir = fs.isdir(path)
        except OSError as exc:
            raise InputError(f"--references {uri}: cannot be read ({exc})") from exc
        if not is_dir:
            raise InputError(f"--references {uri}: no such folder or manifest.json")
        return cls._from_folder(uri, fs, path)

    @classmethod
    def _from_manifest(cls, uri: str, fs, path: str) -> ReferenceSet:
        try:
            manifest = json.loads(fs.cat_file(path))
        except FileNotFoundError as exc:
            raise InputError(f"--references {uri}: no such manifest") from exc
        except (OSError, ValueError) as exc:
            raise InputError(f"--references {uri}: unreadable manifest ({exc})") from exc
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
            raise InputError(f"--references {uri}: the manifest lists no pieces with files.stems")
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
            raise InputError(
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
