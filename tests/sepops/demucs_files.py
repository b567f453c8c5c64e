"""Random-weight demucs models written by the tests in every layout users hold.

Small HTDemucs configurations (a few thousand parameters, 1 s segments) keep CI fast; the
files are in the real layouts: ``<sig>-<sha256[:8]>.th`` packages and bag ``.yaml`` files
as the demucs CLI's ``--repo`` reads them, and demucs 4.1's ``<sig>.safetensors`` with the
class and arguments as JSON metadata.
"""
from __future__ import annotations

import json
from fractions import Fraction
from pathlib import Path

import numpy as np
import torch

from sepops.demucs_files import save_bag, save_model

SOURCES = ["drums", "bass", "other", "vocals"]


def small_htdemucs(seed: int = 0, sources: list[str] | None = None, segment: Fraction = Fraction(1, 1)):
    """A tiny HTDemucs with random weights (eval mode)."""
    from demucs.htdemucs import HTDemucs

    torch.manual_seed(seed)
    model = HTDemucs(
        sources=list(sources or SOURCES), channels=4, depth=2, nfft=512, t_layers=1, t_heads=2,
        segment=segment, dconv_comp=2,
    )
    # Random, not near-zero, outputs: the default init leaves the decoder's last layers small.
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return model.eval()


def write_th(model, folder: Path, sig: str, *, checksum: bool = True) -> Path:
    """``<sig>-<sha256 prefix>.th`` (or ``<sig>.th``), as demucs.states.save_with_checksum."""
    return save_model(model, folder, sig, checksum=checksum)


def _json(value):
    if isinstance(value, Fraction):
        return {"_type": "fraction", "numerator": value.numerator, "denominator": value.denominator}
    if isinstance(value, dict):
        return {k: _json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json(v) for v in value]
    return value


def write_safetensors(model, path: Path, klass: str | None = None) -> Path:
    """demucs 4.1's layout: tensors plus klass / args / kwargs as JSON metadata."""
    from safetensors.torch import save_file

    args, kwargs = model._init_args_kwargs
    meta = {
        "klass": klass or f"{type(model).__module__}.{type(model).__name__}",
        "args": json.dumps(_json(list(args))), "kwargs": json.dumps(_json(dict(kwargs))),
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous().clone() for k, v in model.state_dict().items()}, str(path), metadata=meta)
    return path


def write_bag(folder: Path, name: str, sigs: list[str], weights=None, segment=None) -> Path:
    return save_bag(folder, name, sigs, weights, segment)


def mixture_signal(seconds: float = 3.0, sr: int = 44100, channels: int = 2, seed: int = 1) -> np.ndarray:
    """Tones and noise bursts, (channels, n) float32."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * sr)) / sr
    tone = 0.3 * np.sin(2 * np.pi * 220 * t) + 0.2 * np.sin(2 * np.pi * 330 * t * (1 + 0.1 * t))
    bursts = (rng.standard_normal(t.size) * (np.sin(2 * np.pi * 2 * t) > 0.7)) * 0.2
    return np.stack([tone + bursts * (1 - 0.3 * c) for c in range(channels)]).astype(np.float32)
