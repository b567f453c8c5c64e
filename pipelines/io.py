"""Finding the tracks of a catalog and naming them.

Inputs are fsspec URIs of any scheme (plain paths, ``s3://``, ``gs://``, ``memory://``):

- a glob (``data/**/*.flac``; ``**`` recurses),
- a folder (every file below it whose extension is in ``job.extensions``),
- a single file,
- a manifest: ``.csv`` or ``.parquet`` with a ``uri`` column (``path`` and ``source_uri``
  are accepted too) and an optional ``track_id`` column; relative URIs are relative to the
  manifest's folder.

Each track gets a ``track_id``: its path relative to the *input root* (the deepest folder
shared by all inputs), without the extension, made safe for file systems and object keys.
"""
from __future__ import annotations

import csv
import hashlib
import io
import os
import posixpath
import re
import unicodedata
import zlib
from dataclasses import dataclass, field

import fsspec

from sepops.audio import is_local

from .errors import InputError

__all__ = [
    "InputError",
    "InputPattern",
    "KnownIds",
    "MatchedFile",
    "Track",
    "common_root",
    "disambiguate",
    "expand_input",
    "join_uri",
    "make_track_id",
    "match_inputs",
    "name_track",
    "plan_inputs",
    "read_manifest",
    "safe_path_component",
]

_GLOB_CHARS = re.compile(r"[*?\[]")
# Characters kept in track ids: letters and digits of any script, and a few punctuation
# marks that are safe in S3/GCS keys and on every file system. All else becomes "_".
_UNSAFE_CHAR = re.compile(r"[^\w\-.+=@,()]", re.UNICODE)
_MAX_COMPONENT_BYTES = 200
MANIFEST_EXTENSIONS = (".csv", ".parquet")
_URI_COLUMNS = ("uri", "path", "source_uri")



@dataclass(frozen=True)
class Track:
    """One input file: the small record that travels through the pipeline (never the audio)."""

    track_id: str
    source_uri: str
    #: The id this file's name gave when other inputs gave the same one (compared without
    #: case, as case-insensitive stores would); ``track_id`` then has a suffix from the URI.
    id_collision: str | None = None
    #: True when no earlier run into the output named this file: the job records its id.
    new_id: bool = False


def join_uri(base: str, *parts: str) -> str:
    """Join with "/" for every scheme (``os.path.join`` would use "\\" on Windows)."""
    out = base.rstrip("/")
    for p in parts:
        out = f"{out}/{p.strip('/')}"
    return out


def safe_path_component(name: str) -> str:
    """One path segment that is safe in object keys: no "..", no leading ".", no odd characters."""
    name = unicodedata.normalize("NFC", name.strip())
    if name in (".", ".."):
        name = ""
    name = _UNSAFE_CHAR.sub("_", name).rstrip(".")
    # Names starting with "." are hidden (and skipped by dataset readers such as pyarrow's).
    name = re.sub(r"^\.+", "_", name)
    if not name:
        name = "_"
    if len(name.encode("utf-8")) > _MAX_COMPONENT_BYTES:
        digest = hashlib.sha1(name.encode("utf-8")).hexdigest()[:8]
        name = name.encode("utf-8")[: _MAX_COMPONENT_BYTES - 9].decode("utf-8", "ignore") + "-" + digest
    return name


def make_track_id(relative_path: str, *, strip_extension: bool = True) -> str:
    """A track id from a path relative to the input root.

    >>> make_track_id("Artist/Album 1/01 Intro.flac")
    'Artist/Album_1/01_Intro'
    >>> make_track_id("../../etc/passwd")
    'etc/passwd'
    """
    parts = [p for p in re.split(r"[/\\]+", relative_path) if p not in ("", ".", "..")]
    if parts and strip_extension:
        stem, _ = posixpath.splitext(parts[-1])
        parts[-1] = stem if stem else parts[-1]
    safe = [safe_path_component(p) for p in parts]
    return "/".join(safe) or "track"


def _protocol(fs) -> str:
    return fs.protocol if isinstance(fs.protocol, str) else fs.protocol[0]


def _to_uri(fs, path: str) -> str:
    """fsspec's internal path back to a URI; local files stay plain absolute paths."""
    if is_local(fs):
        return path
    return fs.unstrip_protocol(path)


def _glob_root(pattern_path: str) -> str:
    """The folder part of a glob before its first wildcard."""
    m = _GLOB_CHARS.search(pattern_path)
    head = pattern_path[: m.start()] if m else pattern_path
    return head.rsplit("/", 1)[0] if "/" in head else ""


def _has_extension(path: str, extensions: tuple[str, ...]) -> bool:
    return posixpath.splitext(path)[1].lower().lstrip(".") in extensions


def input_folder(spec: str) -> str | None:
    """The folder an ``--input`` reads everything below: the folder itself, or a glob's part
    before its first wildcard; ``None`` for a single file or a manifest."""
    fs, path = fsspec.core.url_to_fs(spec)
    if _GLOB_CHARS.search(path):
        root = _glob_root(path)
    elif path.lower().endswith(MANIFEST_EXTENSIONS):
        return None
    else:
        try:
            if not fs.isdir(path):
                return None
        except Exception:  # noqa: BLE001 - an unreachable input fails later, with its own error
            return None
        root = path
    return _to_uri(fs, root.rstrip("/") or "/")


def read_manifest(uri: str) -> list[tuple[str, str | None]]:
    """Rows ``(source_uri, track_id or None)`` of a CSV or Parquet manifest."""
    fs, path = fsspec.core.url_to_fs(uri)
    try:
        data = fs.cat_file(path)
    except FileNotFoundError:
        raise InputError(f"manifest not found: {uri}") from None
    if path.lower().endswith(".parquet"):
        import pyarrow.parquet as pq

        records = pq.read_table(io.BytesIO(data)).to_pylist()
    else:
        records = list(csv.DictReader(io.StringIO(data.decode("utf-8-sig"))))
    if not records:
        raise InputError(f"manifest {uri} has no rows")
    column = next((c for c in _URI_COLUMNS if c in records[0]), None)
    if column is None:
        raise InputError(f"manifest {uri} needs a column named one of {', '.join(_URI_COLUMNS)}; has {sorted(records[0])}")
    base = uri.rsplit("/", 1)[0] if "/" in uri else "."
    rows = []
    for r in records:
        value = (r.get(column) or "").strip()
        if not value:
            continue
        if "://" not in value and not value.startswith("/"):
            value = join_uri(base, value) if "://" in base else os.path.normpath(os.path.join(base, value))
        track_id = (r.get("track_id") or "").strip() or None
        rows.append((value, track_id))
    return rows


def _common_root(roots: list[str]) -> str:
    split = [r.strip("/").split("/") if r.strip("/") else [] for r in roots]
    common = []
    for parts in zip(*split):
        if len(set(parts)) != 1:
            break
        common.append(parts[0])
    prefix = "/" if roots and roots[0].startswith("/") else ""
    return prefix + "/".join(common)


@dataclass(frozen=True)
class InputPattern:
    """One ``--input`` as the driver plans it, without listing anything: its kind and, for
    globs, folders and files, the folder its track ids are relative to."""

    spec: str
    #: "glob", "folder", "file" or "manifest".
    kind: str
    #: fsspec path of the id root; ``None`` for a manifest (its entries' common folder).
    root: str | None
    #: Position among the inputs: a file matched by two inputs keeps the first one's id.
    index: int


@dataclass(frozen=True)
class MatchedFile:
    """One file an input matched, before its id is fixed (that needs every input's root)."""

    path: str
    uri: str
    #: This file's candidate for the common id root (its input's root, or for a manifest
    #: entry its folder): the job's root is the deepest folder common to all of them.
    root: str
    explicit_id: str | None
    index: int


def plan_inputs(inputs: list[str]) -> list[InputPattern]:
    """The inputs' kinds and roots, from the patterns alone: at most one ``isdir`` or
    ``exists`` per input, never a listing (the listing is :func:`expand_input`'s, on the
    workers).

    Raises
    ------
    InputError
        No input, inputs of several storage schemes, or a named file that does not exist.
    """
    if not inputs:
        raise InputError("no --input given")
    protocols = {_protocol(fsspec.core.url_to_fs(spec)[0]) for spec in inputs}
    if len(protocols) > 1:
        raise InputError(
            f"inputs mix storage schemes ({', '.join(sorted(protocols))}); run one job per scheme, "
            "or list the files in a manifest"
        )
    patterns = []
    for index, spec in enumerate(inputs):
        fs, path = fsspec.core.url_to_fs(spec)
        if not _GLOB_CHARS.search(path) and path.lower().endswith(MANIFEST_EXTENSIONS):
            if not fs.exists(path):
                raise InputError(f"manifest not found: {spec}")
            patterns.append(InputPattern(spec, "manifest", None, index))
        elif _GLOB_CHARS.search(path):
            root = _glob_root(path)
            if root and "://" not in spec and not fs.exists(root):  # local: one stat says it now
                raise InputError(f"input {spec!r} matched no files: {root} does not exist")
            patterns.append(InputPattern(spec, "glob", root, index))
        elif fs.isdir(path):
            patterns.append(InputPattern(spec, "folder", path.rstrip("/"), index))
        elif fs.exists(path):
            patterns.append(InputPattern(spec, "file", path.rsplit("/", 1)[0] if "/" in path else "", index))
        else:
            raise InputError(f"input not found: {spec}")
    return patterns


def expand_input(
    pattern: InputPattern, extensions: tuple[str, ...], *, shard: int = 0, shards: int = 1
) -> list[MatchedFile]:
    """The files ``pattern`` matches (those of ``shard`` of ``shards``, by a hash of their
    path, so that several workers can share one listing's work).

    Raises
    ------
    InputError
        The input matched nothing, or a manifest is unreadable, lacks a URI column or lists
        files of another storage scheme.
    """
    extensions = tuple(e.lower().lstrip(".") for e in extensions)
    fs, path = fsspec.core.url_to_fs(pattern.spec)
    found: list[tuple[str, str, str | None]] = []  # (fs path, root candidate, explicit id)
    if pattern.kind == "manifest":
        protocol = _protocol(fs)
        for uri, track_id in read_manifest(pattern.spec):
            fs_r, p = fsspec.core.url_to_fs(uri)
            if _protocol(fs_r) != protocol:
                raise InputError(
                    f"manifest {pattern.spec} lists {uri}, of another storage scheme than the manifest's; "
                    "run one job per scheme"
                )
            found.append((p, p.rsplit("/", 1)[0], track_id))
    elif pattern.kind == "glob":
        matches = fs.glob(path, detail=True)
        # Directories matched by a wildcard are only containers, unless they are named like
        # audio files (then they become error rows: the user's pattern chose them).
        hits = [p for p, info in sorted(matches.items()) if info.get("type") != "directory" or _has_extension(p, extensions)]
        if not hits:
            raise InputError(f"input {pattern.spec!r} matched no files")
        found = [(p, pattern.root, None) for p in hits]
    elif pattern.kind == "folder":
        matches = fs.find(path, withdirs=True, detail=True)
        hits = [p for p, info in sorted(matches.items()) if p != path and _has_extension(p, extensions)]
        if not hits:
            raise InputError(f"folder {pattern.spec!r} holds no files with extensions {', '.join(extensions)}")
        found = [(p, pattern.root, None) for p in hits]
    else:
        found = [(path, pattern.root, None)]
    return [
        MatchedFile(p, _to_uri(fs, p), root, explicit_id, pattern.index)
        for p, root, explicit_id in found
        if shards <= 1 or zlib.crc32(p.encode("utf-8")) % shards == shard
    ]


def common_root(roots: list[str]) -> str:
    """The deepest folder shared by ``roots`` (fsspec paths): associative, so it can be
    combined over any grouping of the matched files."""
    return _common_root(roots)


def name_track(matched: MatchedFile, root: str) -> Track:
    """The track of a matched file, its id relative to the job's id ``root``."""
    if matched.explicit_id:
        return Track(make_track_id(matched.explicit_id, strip_extension=False), matched.uri)
    rel = matched.path[len(root):] if root and matched.path.startswith(root) else matched.path
    return Track(make_track_id(rel), matched.uri)


def match_inputs(
    inputs: list[str], extensions: tuple[str, ...] = ("flac", "wav"), known: KnownIds | None = None
) -> list[Track]:
    """Resolve globs, folders, files and manifests into tracks with unique, safe ids, all in
    this process (the catalog job does the same on its workers: :class:`pipelines.transforms.MatchCatalog`);
    ``known``: the ids an output already holds (:func:`disambiguate`).

    Raises
    ------
    InputError
        When an input matches nothing, a named file or manifest is missing, or inputs mix
        storage schemes (they need one common root for the track ids).
    """
    matched = [m for p in plan_inputs(list(inputs)) for m in expand_input(p, tuple(extensions))]
    root = common_root([m.root for m in matched])
    first: dict[str, MatchedFile] = {}
    for m in matched:
        if m.uri not in first or m.index < first[m.uri].index:  # the same file matched twice
            first[m.uri] = m
    return disambiguate([name_track(m, root) for m in first.values()], known)


def disambiguate(tracks: list[Track], known: KnownIds | None = None) -> list[Track]:
    """Give tracks whose ids collide (``a.flac`` and ``a.wav``, ``a b`` and ``a_b``, ``Song``
    and ``song``, NFC and NFD spellings of one name) a suffix naming their file: its extension
    and 8 hex digits of its URI's hash (``a-wav-1f3c9e2a``), so ids stay unique, also on
    case-insensitive stores, and stable from run to run. The shared id is kept in
    ``Track.id_collision``.

    With ``known`` (the ids earlier runs wrote into the output), a file keeps the id it was
    given before, and a new file whose id an earlier file holds is the one suffixed: ids never
    move as a catalog grows. Tracks whose id was not known have ``Track.new_id`` set.
    """
    known = known or KnownIds()
    out, fresh = [], []
    for t in tracks:
        kept = known.by_uri.get(t.source_uri)
        if kept is None:
            fresh.append(t)
        else:
            out.append(Track(kept, t.source_uri, id_collision=t.track_id if kept != t.track_id else None))
    by_id: dict[str, list[Track]] = {}
    for t in fresh:
        by_id.setdefault(t.track_id.casefold(), []).append(t)
    for folded, group in by_id.items():
        if len(group) == 1 and folded not in known.taken:
            out.append(Track(group[0].track_id, group[0].source_uri, new_id=True))
            continue
        for t in group:
            out.append(Track(f"{t.track_id}-{_collision_suffix(t.source_uri)}", t.source_uri, id_collision=t.track_id,
                             new_id=True))
    return sorted(out, key=lambda t: t.track_id)


def _collision_suffix(uri: str) -> str:
    ext = _EXTENSION.search(uri.rsplit("/", 1)[-1])
    digest = hashlib.sha1(uri.encode("utf-8")).hexdigest()[:8]
    return f"{ext.group(1).lower()}-{digest}" if ext else digest


_EXTENSION = re.compile(r".\.([A-Za-z0-9]{1,8})$")


@dataclass(frozen=True)
class KnownIds:
    """The ids an output already holds: ``by_uri`` (source URI -> track id) and ``taken``
    (those ids without case), read by :func:`pipelines.track_ids.read_known_ids`."""

    by_uri: dict[str, str] = field(default_factory=dict)
    taken: frozenset[str] = frozenset()

    @classmethod
    def of(cls, pairs) -> KnownIds:
        by_uri = dict(pairs)
        return cls(by_uri, frozenset(i.casefold() for i in by_uri.values()))
