"""The ``unet`` operator: separation with a trained spectrogram U-Net (Jansson et al. 2017).

Shipped models live in ``sepops/models/unet_<name>/`` and are picked by name::

    op = get_operator("unet", model="loops_accompaniment_lead")       # accompaniment, lead
    op = get_operator("unet", model="chorales_satb")                   # soprano ... bass
    op = get_operator("unet", model="/path/to/model_dir", device="cuda", wiener_iterations=1)

The network is :mod:`sepops.unet.model`; its chunked, windowed inference (resampling, window
cross-fades, masks, chunks of ``chunk_seconds``) is :class:`sepops.unet.separator.UNetSeparator`.
Training and ONNX export: :mod:`sepops.unet.train`, :mod:`sepops.unet.export`.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

from ..base import Operator
from ..blocks import BlockContext
from ..registry import register
from ..spectral import Analysis, StftConfig

__all__ = ["UNetConfig", "UNetOperator"]


@dataclass(frozen=True)
class UNetConfig:
    """Parameters of the ``unet`` operator.

    model : shipped model name or path to a folder with model.safetensors + config.json.
    device : "auto" (CUDA when available), "cpu" or "cuda".
    segment_frames : STFT frames the network sees at once, a multiple of 64 (0: the model's
        own, 128 for the shipped models).
    overlap_frames : STFT frames over which neighbouring windows' masks are cross-faded, at
        most half of ``segment_frames`` (0: the model's own, 64 for the shipped models).
    batch_size : windows per forward pass.
    chunk_seconds : audio is processed in chunks this long (0: whole signal at once).
    power : exponent of the mask normalisation (``m_i^p / sum_j m_j^p``); default: the model's
        (1.0 for the shipped models, 2.0 is Spleeter's).
    wiener_iterations : EM iterations of the multichannel Wiener post-filter (0: off).
    threads : torch CPU threads (0: leave torch's setting).
    """

    model: str = "loops_accompaniment_lead"
    device: Literal["auto", "cpu", "cuda"] = "auto"
    segment_frames: int = 0
    overlap_frames: int = 0
    batch_size: int = 8
    chunk_seconds: float = 60.0
    power: float | None = None
    wiener_iterations: int = 0
    threads: int = 0

    def __post_init__(self):
        if self.segment_frames < 0 or self.segment_frames % 64:
            raise ValueError(f"segment_frames must be a multiple of 64 (or 0), got {self.segment_frames}")
        if self.overlap_frames < 0:
            raise ValueError(f"overlap_frames must be >= 0, got {self.overlap_frames}")
        if self.segment_frames and self.overlap_frames * 2 > self.segment_frames:
            raise ValueError("overlap_frames must be at most half of segment_frames")
        bad_power = self.power is not None and self.power <= 0
        if self.batch_size < 1 or bad_power or self.wiener_iterations < 0 or self.chunk_seconds < 0:
            raise ValueError("batch_size >= 1, power > 0, wiener_iterations >= 0 and chunk_seconds >= 0 needed")


@register
class UNetOperator(Operator):
    """Spectrogram U-Net (Jansson et al. 2017, as in Spleeter) with trained sigmoid masks.

    The model is loaded once per operator instance; stems are those the model was trained on.
    """

    name = "unet"
    Config = UNetConfig
    resource_params = (("model", "unet_model"),)  # checked by Operator.check_resources

    def __init__(self, config: UNetConfig | None = None, /, **params):
        super().__init__(config, **params)
        import torch

        from ..unet.separator import load_separator, model_path

        c = self.config
        if c.threads:
            torch.set_num_threads(c.threads)
        self.path = model_path(c.model)
        self.separator = load_separator(
            str(self.path), device=c.device, segment_frames=c.segment_frames, overlap_frames=c.overlap_frames,
            batch_size=c.batch_size, chunk_seconds=c.chunk_seconds, power=c.power,
            wiener_iterations=c.wiener_iterations,
        )
        self.device = self.separator.device

    @property
    def stem_names(self) -> list[str]:
        return list(self.separator.stems)

    def stft_config(self) -> StftConfig:
        return self.separator.stft_config

    def block_context(self, sr: int) -> BlockContext:
        # The window grid is global (windows every segment - overlap frames from frame 0), so
        # blocks must start on it, in input samples: at rates whose ratio to the model's is
        # p / q that is the grid's first multiple that p / q maps to a whole number. The
        # context covers a window and the STFT's reach on each side, plus the resampler's.
        import math

        sep = self.separator
        hop = sep.stft_config.hop_length
        grid = (sep.segment - sep.overlap) * hop  # model samples between windows
        g = math.gcd(int(sr), sep.sr)
        p, q = int(sr) // g, sep.sr // g
        align_model = grid * (q // math.gcd(grid, q))
        align = align_model * p // q
        reach = (sep.segment + 2 * -(-sep.stft_config.n_fft // hop)) * hop * p // q + 4096
        return BlockContext(-(-reach // align) * align, align)

    def separate(self, audio: np.ndarray, sr: int, *, analysis: Analysis | None = None) -> dict[str, np.ndarray]:
        # The STFT is taken per chunk at the model's settings, so a shared Analysis is not used.
        return self.separator.separate(audio, sr)
