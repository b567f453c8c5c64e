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
from dataclasses import dataclass

import fsspec

from sepops.audio import is_local

__all__ = [
    "InputError",
    "Track",
    "join_uri",
    "make_track_id",
    "match_inputs",
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


class InputError(ValueError):
    """The inputs cannot be resolved into tracks (nothing matched, missing file, bad manifest)."""


@dataclass(frozen=True)
class Track:
    """One input file: the small record that travels through the pipeline (never the audio)."""

    track_id: str
    source_uri: str
    #: The id this file's name gave when other inputs gave the same one (compared without
    #: case, as case-insensitive stores would); ``track_id`` then has a suffix from the URI.
    id_collision: str | None = None


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
        stem, ext = posixpath.splitext(parts[-1])
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


def match_inputs(inputs: list[str], extensions: tuple[str, ...] = ("flac", "wav")) -> list[Track]:
    """Resolve globs, folders, files and manifests into tracks with unique, safe ids.

    Raises
    ------
    InputError
        When an input matches nothing, a named file or manifest is missing, or inputs mix
        storage schemes (they need one common root for the track ids).
    """
    if not inputs:
        raise InputError("no --input given")
    extensions = tuple(e.lower().lstrip(".") for e in extensions)
    protocols = {_protocol(fsspec.core.url_to_fs(spec)[0]) for spec in inputs}
    if len(protocols) > 1:
        raise InputError(
            f"inputs mix storage schemes ({', '.join(sorted(protocols))}); run one job per scheme, "
            "or list the files in a manifest"
        )
    found: list[tuple[str, str, str | None]] = []  # (fs path, root, explicit track id)
    roots = []
    fs = None
    for spec in inputs:
        fs_i, path = fsspec.core.url_to_fs(spec)
        fs = fs_i
        if not _GLOB_CHARS.search(path) and path.lower().endswith(MANIFEST_EXTENSIONS):
            rows = read_manifest(spec)
            entries = []
            for uri, track_id in rows:
                fs_r, p = fsspec.core.url_to_fs(uri)
                protocols.add(_protocol(fs_r))
                entries.append((p, track_id))
            root = _common_root([p.rsplit("/", 1)[0] for p, _ in entries])
            found.extend((p, root, tid) for p, tid in entries)
            roots.append(root)
        elif _GLOB_CHARS.search(path):
            matches = fs_i.glob(path, detail=True)
            root = _glob_root(path)
            # Directories matched by a wildcard are only containers, unless they are named
            # like audio files (then they become error rows: the user's pattern chose them).
            hits = [
                p for p, info in sorted(matches.items())
                if info.get("type") != "directory" or _has_extension(p, extensions)
            ]
            if not hits:
                raise InputError(f"input {spec!r} matched no files")
            found.extend((p, root, None) for p in hits)
            roots.append(root)
        elif fs_i.isdir(path):
            matches = fs_i.find(path, withdirs=True, detail=True)
            hits = [p for p, info in sorted(matches.items()) if p != path and _has_extension(p, extensions)]
            if not hits:
                raise InputError(f"folder {spec!r} holds no files with extensions {', '.join(extensions)}")
            found.extend((p, path.rstrip("/"), None) for p in hits)
            roots.append(path.rstrip("/"))
        elif fs_i.exists(path):
            root = path.rsplit("/", 1)[0] if "/" in path else ""
            found.append((path, root, None))
            roots.append(root)
        else:
            raise InputError(f"input not found: {spec}")
    if len(protocols) > 1:
        raise InputError(
            f"inputs mix storage schemes ({', '.join(sorted(protocols))}); run one job per scheme, "
            "or list the files in a manifest"
        )
    root = _common_root(roots)
    tracks: dict[str, Track] = {}
    for path, _, explicit_id in found:
        uri = _to_uri(fs, path)
        if uri in tracks:
            continue  # the same file matched by two patterns
        if explicit_id:
            track_id = make_track_id(explicit_id, strip_extension=False)
        else:
            rel = path[len(root):] if root and path.startswith(root) else path
            track_id = make_track_id(rel)
        tracks[uri] = Track(track_id, uri)
    return _disambiguate(list(tracks.values()))


def _disambiguate(tracks: list[Track]) -> list[Track]:
    """Give tracks whose ids collide (``a.flac`` and ``a.wav``, ``a b`` and ``a_b``, ``Song``
    and ``song``, NFC and NFD spellings of one name) a suffix derived from their URI, so ids
    stay unique, also on case-insensitive stores, and stable from run to run. The shared id
    is kept in ``Track.id_collision``."""
    by_id: dict[str, list[Track]] = {}
    for t in tracks:
        by_id.setdefault(t.track_id.casefold(), []).append(t)
    out = []
    for group in by_id.values():
        if len(group) == 1:
            out.append(group[0])
            continue
        for t in group:
            suffix = hashlib.sha1(t.source_uri.encode("utf-8")).hexdigest()[:8]
            out.append(Track(f"{t.track_id}-{suffix}", t.source_uri, id_collision=t.track_id))
    return sorted(out, key=lambda t: t.track_id)
