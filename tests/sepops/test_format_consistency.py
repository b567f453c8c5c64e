"""The same music gives the same stems whatever its container and sample rate: operators
count their STFT at ``stft_rate`` and scale it to each input's rate (``StftParams.stft_at``).

One piece at 44.1 kHz as FLAC, WAV at 48 kHz, Opus (48 kHz), AAC, MP3 and Vorbis: each
operator's energy share of every stem agrees with the FLAC copy's to within 0.02 (unsupervised
nmf factorises on one working grid whatever the rate, :mod:`sepops.nmf.grid`); the
stem-to-stem SDR between each copy and the FLAC copy is printed (``pytest -s``) and kept
above a floor well under what was measured (docs/pipeline.md has the table)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import sepops
from sepops import load_audio
from sepops.audio import resample
from tests.sepops.test_formats import CASES

ROOT = Path(__file__).resolve().parents[2]
SR = 44100
COPIES = {
    "flac 44.1k": lambda x: CASES["flac.flac"][0](x, SR),
    "wav 48k": lambda x: CASES["pcm24.wav"][0](resample(x, SR, 48000), 48000),
    "opus 48k": lambda x: CASES["opus.opus"][0](x, SR),
    "aac": lambda x: CASES["aac.m4a"][0](x, SR),
    "mp3": lambda x: CASES["lame.mp3"][0](x, SR),
    "vorbis": lambda x: CASES["vorbis.ogg"][0](x, SR),
}
SUFFIX = {"flac 44.1k": "flac", "wav 48k": "wav", "opus 48k": "opus", "aac": "m4a", "mp3": "mp3", "vorbis": "ogg"}


@pytest.fixture(scope="module")
def decoded_copies(tmp_path_factory):
    """{copy: (audio, sr)} of the example loop at 44.1 kHz, 6 s, decoded as the job decodes."""
    return _copies(tmp_path_factory.mktemp("copies"), seconds=6)


@pytest.fixture(scope="module")
def whole_loop_copies(tmp_path_factory):
    """The same copies of the whole 8 s example loop (1.8 loop periods)."""
    return _copies(tmp_path_factory.mktemp("whole"), seconds=None)


def _copies(folder: Path, seconds: float | None) -> dict:
    """{copy: (audio, sr)}: the example loop (its first ``seconds``, or all) encoded as each
    copy and decoded as the job decodes."""
    audio, sr = load_audio(str(ROOT / "examples" / "loop_stereo.flac"))
    piece = resample(audio[:, : int(seconds * sr)] if seconds else audio, sr, SR)
    out = {}
    for name, encode in COPIES.items():
        path = folder / f"piece.{SUFFIX[name]}"
        path.write_bytes(encode(piece))
        out[name] = load_audio(str(path))
    return out


def _sdr(ref: np.ndarray, est: np.ndarray) -> float:
    n = min(ref.shape[-1], est.shape[-1])
    ref, est = ref[..., :n].astype(np.float64), est[..., :n].astype(np.float64)
    return float(10 * np.log10((ref**2).sum() / max(((ref - est) ** 2).sum(), 1e-20)))


# Unsupervised nmf on the whole example: its repetition rule needs the loop to recur, and
# the first 6 s hold only 1.4 periods, too few to find the period alike in every copy.
# Measured on the whole example, seed 0: largest share difference 0.008; over 4 training
# loops x seeds 0-1 x 6 copies the largest is in docs/pipeline.md.
# Supervised nmf (a fixed dictionary, a convex fit) agrees on the 6 s excerpt as it is.
OPERATORS = {
    "hpss": {}, "repet": {}, "repet_sim": {}, "ica": {}, "nmf": {},
    "nmf supervised": {"dictionary": "loops_accompaniment_lead"},
}


@pytest.mark.parametrize("operator", list(OPERATORS))
def test_every_copy_gives_the_same_separation(operator, request):
    copies = request.getfixturevalue("whole_loop_copies" if operator == "nmf" else "decoded_copies")
    op = sepops.get_operator(operator.split()[0], **OPERATORS[operator])
    shares, stems_44k = {}, {}
    for name, (audio, sr) in copies.items():
        stems = op.separate(audio, sr)
        energy = {k: float(np.sum(v.astype(np.float64) ** 2)) for k, v in stems.items()}
        shares[name] = {k: e / sum(energy.values()) for k, e in energy.items()}
        stems_44k[name] = {k: resample(v, sr, SR) for k, v in stems.items()}
    ref = shares["flac 44.1k"]
    for name, share in shares.items():
        sdr = {k: _sdr(stems_44k["flac 44.1k"][k], stems_44k[name][k]) for k in share}
        print(f"{operator:14s} {name:10s} " + " ".join(
            f"{k} share {share[k]:.3f} ({share[k] - ref[k]:+.3f}) SDR {sdr[k]:5.1f} dB" for k in share))
        assert all(abs(share[k] - ref[k]) <= 0.02 for k in share), (operator, name, share, ref)
        assert min(sdr.values()) > 5.0, (operator, name, sdr)
