"""Golden outputs of the reference RoFormer code, for tests/sepops/test_roformer.py.

Builds two small random-weight models with the reference implementation
(ZFTurbo/Music-Source-Separation-Training, ``models/bs_roformer``), writes each checkpoint
(``torch.save(model.state_dict())``, as the published ones are) and its YAML config (the
reference layout, ``!!python/tuple`` included), a fixed input, the reference model's output
on one chunk and the reference ``demix`` output on the longer input::

    git -C <mirror> archive HEAD | tar -x -C /tmp/msst
    pip install rotary-embedding-torch        # the reference needs it; sepflow does not
    python scripts/make_roformer_goldens.py --reference /tmp/msst --out tests/data/roformer

Nothing of the reference is copied into sepflow: it is imported from the checkout here.
"""
from __future__ import annotations

import argparse
import sys
import types
from pathlib import Path

import numpy as np
import torch
import yaml

SR = 44100
CHUNK = 8192
LONG = CHUNK * 5 // 2  # 2.5 chunks

BS_YAML = """\
audio:
  chunk_size: {chunk}
  dim_f: 256
  dim_t: 129
  hop_length: 128
  n_fft: 512
  num_channels: 2
  sample_rate: 44100
  min_mean_abs: 0.000

model:
  dim: 32
  depth: 2
  stereo: true
  num_stems: 1
  time_transformer_depth: 1
  freq_transformer_depth: 1
  linear_transformer_depth: 0
  freqs_per_bands: !!python/tuple
    - 2
    - 2
    - 4
    - 4
    - 8
    - 8
    - 16
    - 16
    - 32
    - 32
    - 133
  dim_head: 16
  heads: 2
  attn_dropout: 0.1
  ff_dropout: 0.1
  flash_attn: true
  dim_freqs_in: 257
  stft_n_fft: 512
  stft_hop_length: 128
  stft_win_length: 512
  stft_normalized: false
  mask_estimator_depth: 2
  multi_stft_resolution_loss_weight: 1.0
  multi_stft_resolutions_window_sizes: !!python/tuple
  - 4096
  - 2048
  - 1024
  - 512
  - 256
  multi_stft_hop_size: 147
  multi_stft_normalized: False
  mlp_expansion_factor: 1
  skip_connection: true

training:
  batch_size: 2
  instruments:
  - vocals
  - other
  lr: 1.0e-05
  target_instrument: vocals
  num_epochs: 1000
  optimizer: adam
  use_amp: true

inference:
  batch_size: 4
  dim_t: 129
  num_overlap: 2
"""

MEL_YAML = """\
audio:
  chunk_size: {chunk}
  dim_f: 128
  dim_t: 257
  hop_length: 64
  n_fft: 256
  num_channels: 2
  sample_rate: 44100
  min_mean_abs: 0.000

model:
  dim: 24
  depth: 1
  stereo: true
  num_stems: 3
  time_transformer_depth: 1
  freq_transformer_depth: 1
  linear_transformer_depth: 1
  num_bands: 8
  dim_head: 12
  heads: 2
  attn_dropout: 0
  ff_dropout: 0
  flash_attn: True
  dim_freqs_in: 129
  sample_rate: 44100  # needed for mel filter bank from librosa
  stft_n_fft: 256
  stft_hop_length: 64
  stft_win_length: 256
  stft_normalized: False
  mask_estimator_depth: 2
  multi_stft_resolution_loss_weight: 1.0
  multi_stft_resolutions_window_sizes: !!python/tuple
  - 4096
  - 2048
  - 1024
  - 512
  - 256
  multi_stft_hop_size: 147
  multi_stft_normalized: False
  mlp_expansion_factor: 1

training:
  batch_size: 4
  instruments:
  - vocals
  - drums
  - other
  target_instrument: null
  use_amp: true

inference:
  batch_size: 6
  dim_t: 257
  num_overlap: 4
"""


class AttrDict(dict):
    """Enough of ml_collections.ConfigDict for the reference's ``demix``."""

    def __getattr__(self, name):
        try:
            return self[name]
        except KeyError:
            raise AttributeError(name) from None

    @classmethod
    def deep(cls, value):
        if isinstance(value, dict):
            return cls({k: cls.deep(v) for k, v in value.items()})
        return value


def import_reference(root: Path):
    sys.path.insert(0, str(root))
    if "ml_collections" not in sys.modules:
        try:
            import ml_collections  # noqa: F401
        except ImportError:  # demix only reads attributes of its config
            sys.modules["ml_collections"] = types.SimpleNamespace(ConfigDict=AttrDict)
    from models.bs_roformer.bs_roformer import BSRoformer
    from models.bs_roformer.mel_band_roformer import MelBandRoformer
    from utils.model_utils import demix

    return BSRoformer, MelBandRoformer, demix


def fixed_input() -> np.ndarray:
    """(2, LONG) float32 exactly representable in float16: seeded noise plus tones."""
    rng = np.random.default_rng(20240611)
    t = np.arange(LONG) / SR
    tones = np.stack([0.3 * np.sin(2 * np.pi * 220 * t) + 0.2 * np.sin(2 * np.pi * 1375 * t),
                      0.25 * np.sin(2 * np.pi * 330 * t + 1.0) + 0.15 * np.sin(2 * np.pi * 4100 * t)])
    x = tones + 0.1 * rng.standard_normal((2, LONG))
    return x.astype(np.float16).astype(np.float32)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reference", required=True, type=Path, help="extracted Music-Source-Separation-Training checkout")
    ap.add_argument("--out", required=True, type=Path)
    args = ap.parse_args(argv)
    BSRoformer, MelBandRoformer, demix = import_reference(args.reference)
    args.out.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(1)
    x = fixed_input()
    np.save(args.out / "input.npy", x.astype(np.float16))
    for name, text, cls, model_type, seed in (
        ("bs_roformer_tiny", BS_YAML, BSRoformer, "bs_roformer", 1),
        ("mel_band_roformer_tiny", MEL_YAML, MelBandRoformer, "mel_band_roformer", 2),
    ):
        text = text.format(chunk=CHUNK)
        (args.out / f"{name}.yaml").write_text(text)
        config = AttrDict.deep(yaml.load(text, Loader=yaml.FullLoader))  # as the reference reads it
        torch.manual_seed(seed)
        model = cls(**dict(config.model)).eval()
        torch.save(model.state_dict(), args.out / f"{name}.ckpt")
        with torch.inference_mode():
            one = model(torch.from_numpy(x[None, :, :CHUNK]))
        one = one.reshape(-1, 2, one.shape[-1]).numpy()  # (stems, channels, samples)
        chunked = demix(config, model, x, torch.device("cpu"), model_type=model_type)
        chunked = np.stack([chunked[k] for k in chunked])  # instruments in the reference's order
        np.savez(args.out / f"{name}_expected.npz", one_chunk=one.astype(np.float32),
                 demix=chunked.astype(np.float16), stems=np.array(list(config.training.target_instrument
                                                                   and [config.training.target_instrument]
                                                                   or config.training.instruments)))
        print(f"{name}: one chunk peak {np.abs(one).max():.3f}, demix {chunked.shape} peak {np.abs(chunked).max():.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
