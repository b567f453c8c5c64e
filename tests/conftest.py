"""Shared fixtures: the ground-truth validation set in ../shared/data and small synthetic audio."""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
DATA_DIR = Path(os.environ.get("SEPFLOW_DATA", ROOT.parent / "shared" / "data"))

# librosa/numba compile on first use; a writable cache keeps that to once per machine.
os.environ.setdefault("NUMBA_CACHE_DIR", str(ROOT / ".numba_cache"))


def _manifest():
    path = DATA_DIR / "manifest.json"
    if not path.exists():
        return None
    return json.loads(path.read_text())


def _in_ci() -> bool:
    return os.environ.get("CI", "").lower() not in ("", "0", "false", "no")


@pytest.fixture(scope="session")
def data_dir() -> Path:
    if _manifest() is None:
        message = f"validation set not found at {DATA_DIR} (set SEPFLOW_DATA)"
        if _in_ci():
            # In CI a missing data set is a broken checkout, not a reason to pass quietly.
            pytest.fail(f"{message}; CI=true, so the quality tests fail instead of skipping", pytrace=False)
        pytest.skip(message)
    return DATA_DIR


@pytest.fixture(scope="session")
def manifest(data_dir):
    return _manifest()


def pieces(manifest, subset: str) -> list[dict]:
    return [p for p in manifest["pieces"] if p["subset"] == subset]


def load_piece(data_dir: Path, piece: dict, stems_key: str = "stems", stereo: bool = False):
    """Return (mixture, sr, {stem: audio}) for one manifest piece; arrays are (channels, samples)."""
    from sepops import load_audio

    mix_key = "mixture_stereo" if stereo else "mixture"
    mix, sr = load_audio(str(data_dir / piece["files"][mix_key]))
    refs = {s: load_audio(str(data_dir / piece["files"]["stems"][s]))[0] for s in piece[stems_key]}
    if stereo:
        if stems_key != "stems":
            raise ValueError("stereo references exist only for the main stems (the mixing matrix's columns)")
        # The stereo mixture is M @ stems: each stem's stereo image is its column of M times it.
        m = np.asarray(piece["stereo_mixing_matrix"], dtype=np.float32)  # (2, n_stems)
        order = piece["stems"]
        refs = {s: m[:, [order.index(s)]] * refs[s] for s in refs}
    return mix, sr, refs


@pytest.fixture(scope="module")
def torch_one_thread():
    """torch on one thread for a module: small convolutions gain nothing from more, and lose a
    lot on a busy machine."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def rng():
    return np.random.default_rng(0)


@pytest.fixture(scope="session")
def dask_cluster():
    """A dask.distributed LocalCluster of 2 worker processes on 127.0.0.1, one thread each."""
    distributed = pytest.importorskip("distributed")
    with distributed.LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1", dashboard_address=None
    ) as cluster:
        yield cluster
