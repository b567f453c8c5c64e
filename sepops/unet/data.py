"""Training data for the U-Net: stem folders loaded into memory, random augmented patches.

Two folder layouts are read:

- sepflow / ``../shared/data`` layout: ``manifest.json`` listing pieces, each with
  ``files.stems.<name>`` (e.g. ``piece/stems/lead.flac``) and a ``stems`` list;
- musdb-style: ``<track>/<stem>.wav`` (``mixture.wav`` beside them is ignored: the
  mixture is always the sum of the stems, so that augmented stems still add up).

Augmentation (:class:`PatchSampler`): a random gain per stem, random re-mixing of stems
across pieces of the same set, and a random channel of multichannel stems (the network
separates channels one by one, so this is its channel swap).

``python -m sepops.unet.data --data DIR --stems a,b`` lists what would be loaded.
"""
from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..audio import load_audio

__all__ = ["PatchSampler", "Track", "find_tracks", "load_tracks"]

AUDIO_EXTENSIONS = (".wav", ".flac", ".ogg", ".mp3", ".aiff")


@dataclass
class Track:
    """One piece: its name and, once loaded, the stems as float16 ``(stems, channels, samples)``."""

    name: str
    files: dict[str, str]
    audio: np.ndarray | None = None


def find_tracks(directory: str | Path, stems: Sequence[str]) -> list[Track]:
    """Pieces of ``directory`` that have every one of ``stems``, sorted by name.

    Raises
    ------
    FileNotFoundError
        When the folder holds no piece with all the stems.
    """
    root = Path(directory)
    tracks = []
    manifest = root / "manifest.json"
    if manifest.exists():
        for piece in json.loads(manifest.read_text())["pieces"]:
            files = piece.get("files", {}).get("stems", {})
            if all(s in files for s in stems):
                tracks.append(Track(piece["id"], {s: str(root / files[s]) for s in stems}))
    else:
        for d in sorted(p for p in root.iterdir() if p.is_dir()):
            found = {}
            for s in stems:
                hits = [d / f"{s}{ext}" for ext in AUDIO_EXTENSIONS if (d / f"{s}{ext}").exists()]
                hits += [d / "stems" / f"{s}{ext}" for ext in AUDIO_EXTENSIONS if (d / "stems" / f"{s}{ext}").exists()]
                if hits:
                    found[s] = str(hits[0])
            if len(found) == len(stems):
                tracks.append(Track(d.name, found))
    if not tracks:
        raise FileNotFoundError(f"no piece in {root} has all of the stems {list(stems)}")
    return sorted(tracks, key=lambda t: t.name)


def load_tracks(tracks: list[Track], sr: int) -> list[Track]:
    """Decode every track's stems at ``sr`` into memory (float16 to halve the footprint)."""
    for t in tracks:
        stems = [load_audio(t.files[s], sr=sr)[0] for s in t.files]
        n = min(x.shape[1] for x in stems)
        c = max(x.shape[0] for x in stems)
        t.audio = np.stack([np.broadcast_to(x[:, :n], (c, n)) for x in stems]).astype(np.float16)
    return tracks


class PatchSampler:
    """Random training patches with on-the-fly augmentation.

    Parameters
    ----------
    tracks : list of Track, loaded
    patch_samples : int
        Patch length in samples.
    seed : int
    augment : bool
        Gains, re-mixing and channel choice; off gives plain excerpts of single pieces.
    remix_prob : float
        Probability that a patch's stems each come from a different random piece.
    gain_db : float
        Each stem's gain is drawn uniformly in ``[-gain_db, +gain_db]`` dB.
    """

    def __init__(self, tracks: list[Track], patch_samples: int, *, seed: int = 0, augment: bool = True,
                 remix_prob: float = 0.5, gain_db: float = 6.0):
        self.tracks = [t for t in tracks if t.audio.shape[-1] >= patch_samples]
        if not self.tracks:
            raise ValueError(f"no track is at least {patch_samples} samples long")
        self.patch = patch_samples
        self.rng = np.random.default_rng(seed)
        self.augment, self.remix_prob, self.gain_db = augment, remix_prob, gain_db

    def _excerpt(self, track: Track, stem: int, channel: int, offset: int | None) -> np.ndarray:
        x = track.audio[stem]
        if offset is None:
            offset = int(self.rng.integers(0, x.shape[-1] - self.patch + 1))
        return x[channel % x.shape[0], offset : offset + self.patch].astype(np.float32)

    def sample(self, batch_size: int) -> np.ndarray:
        """A batch of stems, shape (batch, stems, samples), float32; the mixture is their sum."""
        n_stems = self.tracks[0].audio.shape[0]
        out = np.empty((batch_size, n_stems, self.patch), np.float32)
        for b in range(batch_size):
            t = self.tracks[int(self.rng.integers(len(self.tracks)))]
            channels = t.audio.shape[1]
            channel = int(self.rng.integers(channels)) if self.augment else 0
            remix = self.augment and self.rng.random() < self.remix_prob
            offset = None if remix else int(self.rng.integers(0, t.audio.shape[-1] - self.patch + 1))
            for s in range(n_stems):
                src = self.tracks[int(self.rng.integers(len(self.tracks)))] if remix else t
                out[b, s] = self._excerpt(src, s, channel, offset)
            if self.augment:
                out[b] *= (10 ** (self.rng.uniform(-self.gain_db, self.gain_db, n_stems) / 20))[:, None]
        return out


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data", action="append", required=True, help="data folder (repeatable)")
    parser.add_argument("--stems", required=True, help="comma-separated stem names")


def main(argv: Sequence[str] | None = None) -> None:
    """List the pieces a training run would use."""
    parser = argparse.ArgumentParser(prog="python -m sepops.unet.data", description=main.__doc__)
    add_arguments(parser)
    args = parser.parse_args(argv)
    stems = args.stems.split(",")
    for d in args.data:
        tracks = find_tracks(d, stems)
        print(f"{d}: {len(tracks)} pieces with stems {stems} (first: {tracks[0].name})")


if __name__ == "__main__":
    main()
